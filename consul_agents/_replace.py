"""Graceful replacement of one agent by another: the new one serves before the old one stops taking work.

``replace_agent(registry, old_id, new)`` runs four steps, each bounded:

1. **register** the new agent (``new`` is an AgentRegistration), starting ``critical`` by default: its own
   process proves it healthy by heartbeating it passing (REST heartbeat, sidecar, session). ``new`` may
   also be the id of an agent already registered (by a sidecar, a session): it is then only waited for
   (AgentNotFoundError, nothing done, when no agent has that id).
2. **wait_passing**: poll Consul's catalog until the new agent is passing, within ``timeout`` seconds.
3. **drain** the old agent: ``set_draining`` (no client selects it any more, DNS leaves it out), then wait
   up to ``drain_timeout`` seconds for the leases *this client* holds on it to end. Leases of other
   processes are not visible here: they show only as the load the old agent reports, which the result
   gives (``old_load``); draining stops every client from starting new ones, so ``drain_timeout`` should
   cover the longest lease.
4. **deregister** the old agent (and its KV metadata). Its own process must stop heartbeating it: a
   process that registered it re-registers it from memory when its heartbeat finds it gone.

On a failure, :class:`ReplacementError` names the step, the error that stopped it (``__cause__``) and
the state the fleet was left in (``state``), one of:

* register or wait_passing failed, or the call was cancelled there: the old agent is untouched and
  serving; a new agent registered by this call is deregistered again (``rolled back``), or, if even that
  failed, left registered and said so.
* drain failed: both agents are registered, the new one passing; the old one still takes work.
* deregister failed, or the call was cancelled after the drain: the new agent serves; the old one is
  draining (never selected) but still registered: call ``deregister_agent`` on it again.

The leases still in flight when ``drain_timeout`` passed are not an error: the old agent is deregistered
and ``leases_left`` says how many of this client's leases were still running on it.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from consul_agents._errors import ConsulAgentsError, InvalidAgentError
from consul_agents._models import AGENT_ID_PATTERN, AgentRegistration, AgentStatus, normalise_agent_id

if TYPE_CHECKING:
    from consul_agents._registry import AgentRegistry

__all__ = ["Replacement", "ReplacementError", "replace_agent"]

Step = Literal["register", "wait_passing", "drain", "deregister"]

#: Seconds between two reads of the new agent's status, or of the old agent's leases.
POLL_INTERVAL = 0.1
#: Longest ``timeout`` and ``drain_timeout`` accepted (one hour each).
MAX_WAIT = 3600.0


@dataclass(frozen=True, slots=True)
class Replacement:
    """A replacement that completed: the old agent is deregistered, the new one passing."""

    old_id: str
    new_id: str
    #: Seconds from the start until the new agent was seen passing.
    passing_after: float
    #: Seconds spent waiting for this client's leases on the old agent to end.
    drained_for: float
    #: This client's leases still running on the old agent when it was deregistered (drain_timeout passed).
    leases_left: int
    #: The load the old agent last reported before it was deregistered (other processes' work), if read.
    old_load: float | None


class ReplacementError(ConsulAgentsError):
    """A replacement stopped at ``step``; ``state`` says what the fleet holds now (see the module)."""

    def __init__(self, step: Step, old_id: str, new_id: str | None, state: str, cause: BaseException) -> None:
        super().__init__(f"replacing agent {old_id!r} failed at step {step}: {cause}; {state}")
        self.step = step
        self.old_id = old_id
        self.new_id = new_id
        self.state = state


def _check_id(agent_id: str, field: str) -> str:
    if not isinstance(agent_id, str) or not AGENT_ID_PATTERN.fullmatch(agent_id):
        raise InvalidAgentError(f"invalid {field}: {str(agent_id)[:140]!r} is not an agent id", field=field)
    return normalise_agent_id(agent_id)


def _check_wait(value: float, field: str) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or not 0 < value <= MAX_WAIT:
        raise InvalidAgentError(
            f"{field} {value!r} must be a number of seconds in (0, {MAX_WAIT:g}]", field=field
        )
    return float(value)


async def _wait_passing(registry: AgentRegistry, agent_id: str, deadline: float) -> None:
    """Poll the catalog until the agent is passing; TimeoutError (with the last status or error) at the
    deadline."""
    last = "not read yet"
    while True:
        try:
            info = await registry.get_agent(agent_id)
        except ConsulAgentsError as exc:  # not in the catalog yet (anti-entropy), or Consul busy
            last = f"last read: {exc}"
        else:
            if info.status is AgentStatus.PASSING:
                return
            last = f"its status is {info.status.value}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"agent {agent_id!r} was not passing within the timeout ({last})")
        await asyncio.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0.0)))


async def _wait_leases(registry: AgentRegistry, agent_id: str, deadline: float) -> int:
    """Poll this client's in-flight count on the agent until it is 0 or the deadline; the count left."""
    while True:
        left = registry.leases_in_flight(agent_id)
        if left == 0 or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0.0)))


async def _roll_back(registry: AgentRegistry, old_id: str, new_id: str) -> str:
    """Deregister the new agent again (shielded: also on cancellation); the state that leaves."""
    try:
        await asyncio.shield(registry.deregister_agent(new_id))
    except ConsulAgentsError as exc:
        return (
            f"old agent {old_id!r} untouched and serving; new agent {new_id!r} left registered (its rollback "
            f"failed: {exc}): deregister it"
        )
    return f"old agent {old_id!r} untouched and serving; new agent {new_id!r} rolled back (deregistered)"


async def replace_agent(
    registry: AgentRegistry,
    old_id: str,
    new: AgentRegistration | str,
    *,
    timeout: float = 60.0,
    drain_timeout: float = 30.0,
    new_status: AgentStatus = AgentStatus.CRITICAL,
) -> Replacement:
    """Replace ``old_id`` by ``new`` (see the module for the steps and the states a failure leaves)."""
    old_id = _check_id(old_id, "old_id")
    timeout = _check_wait(timeout, "timeout")
    drain_timeout = _check_wait(drain_timeout, "drain_timeout")
    if isinstance(new, str):
        new_id: str | None = _check_id(new, "new")
    elif isinstance(new, AgentRegistration):
        new_id = new.agent_id
    else:
        raise InvalidAgentError(f"new must be an AgentRegistration or an agent id, not {type(new).__name__}")
    if new_id == old_id:
        raise InvalidAgentError(f"the new agent must have another id than {old_id!r}", field="agent_id")
    started = time.monotonic()
    await registry.get_agent(old_id)  # AgentNotFoundError before anything is written
    if isinstance(new, str):
        await registry.get_agent(new)  # the same: an id given must be registered already
    registered_here = False
    try:
        if isinstance(new, AgentRegistration):
            new_id = await registry.register_agent(new, status=new_status)
            registered_here = True
        assert new_id is not None
        await _wait_passing(registry, new_id, started + timeout)
    except (ConsulAgentsError, TimeoutError, asyncio.CancelledError) as exc:
        step: Step = "wait_passing" if registered_here or isinstance(new, str) else "register"
        state = f"old agent {old_id!r} untouched and serving"
        if registered_here and new_id is not None:
            state = await _roll_back(registry, old_id, new_id)
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise ReplacementError(step, old_id, new_id, state, exc) from exc
    passing_after = time.monotonic() - started

    try:
        await registry.set_draining(old_id, True)
    except ConsulAgentsError as exc:
        state = f"new agent {new_id!r} passing; old agent {old_id!r} still registered and taking work"
        raise ReplacementError("drain", old_id, new_id, state, exc) from exc
    drain_started = time.monotonic()
    left = await _wait_leases(registry, old_id, drain_started + drain_timeout)
    drained_for = time.monotonic() - drain_started
    old_load: float | None = None
    with suppress(ConsulAgentsError):  # only informative
        old_load = (await registry.get_agent(old_id)).current_load
    try:
        await registry.deregister_agent(old_id)  # False: already gone (reaped, removed by another client)
    except ConsulAgentsError as exc:
        state = (
            f"new agent {new_id!r} passing; old agent {old_id!r} draining (never selected) but still "
            "registered: deregister it"
        )
        raise ReplacementError("deregister", old_id, new_id, state, exc) from exc
    return Replacement(old_id, new_id, passing_after, drained_for, left, old_load)
