"""Process liveness: one TTL check per process and agent type, an alias check per agent.

Why: a server-mode Consul rewrites a TTL check's state file (``checks/state/<check>``) on every update,
1.0 to 1.4 ms of its CPU here, whoever sends it and whether or not the status changed. One TTL check per
agent, at a third of the TTL, made 1,000 agents cost that Consul a fifth of a core. Here the agents a
process registers with ``liveness="process"`` cost one TTL update per interval in all
(see reports/bench-liveness.json):

* the process registers, per agent type and (ttl, deregister_after), one *anchor*: the service
  ``consul-agents-liveness-<type>`` (ID ``consul-agents-liveness-<type>-<random>``, no address, no port),
  whose TTL check it heartbeats every third of the TTL;
* each agent carries an alias check ``alive:<id>`` of its anchor (``AliasService``): the local Consul agent
  copies the anchor's status to every alias itself, with no request, no state file and no Raft write while
  it stays passing. When the process dies the anchor expires after its TTL and every agent of the process
  turns critical at once (within TTL + the catalog sync);
* each agent keeps its own check ``service:<id>``, with a TTL of a year, that the client updates only when
  the agent's status (or output) changes: one agent fails alone, at once, while its siblings stay passing.

Order matters, measured on Consul 1.8.7: an alias of a service that is gone reads *passing* ("No checks
found"). So an anchor is deregistered only after every agent of it was, a process that could not
deregister some agent lets its anchor expire instead, and Consul reaps an anchor two minutes after its
agents (its DeregisterCriticalServiceAfter is theirs plus two minutes). A new anchor gets a new ID, so an
expired one is never revived with its critical status.

Cost, measured on Consul 1.8.7 (why it is opt-in; ``python -m benchmarks.liveness``): each alias check
copies all of its Consul agent's checks once a minute, and again whenever its anchor's status changes, so
the Consul agent's CPU grows with the square of the aliased agents: a fifth of one TTL per agent at 100 and
300 agents, half of it at 1,000. The same copies delay detection: every alias of an expired anchor is
critical 0.1 s after it at 100 agents, 0.35 s at 300 and 3.3 s at 1,000, past the TTL + 1 s bound (hence
the warning past :data:`QUADRATIC_WARNING` agents; ``liveness="http"`` costs Consul linearly).

ACLs: the registrar of a type may write ``consul-agents-liveness-<type>`` (see _acl_rules); a registrar of
another type can neither register, overwrite, heartbeat nor deregister it, and the alias checks that count
for an agent are on the agent's own service, which only its type's registrar may write.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta

from consul_agents import _wire as wire
from consul_agents._errors import ConsulAgentsError, ConsulRequestError
from consul_agents._gateway import ConsulGateway, detach_deadline
from consul_agents._liveness_http import HttpLiveness
from consul_agents._models import AgentRegistration
from consul_agents._settings import ConsulSettings

__all__ = ["ANCHOR_MARGIN", "QUADRATIC_WARNING", "ProcessLiveness"]

log = logging.getLogger("consul_agents.liveness")

#: An anchor is reaped this long after its agents would be (see the module docstring).
ANCHOR_MARGIN = timedelta(minutes=2)
#: Past this many anchored agents in one client, the alias checks' quadratic cost on Consul 1.8.7 delays
#: detection beyond TTL + 1 s (measured: 0.4 s after the anchor's TTL at 300 agents, 2.8 s at 1,000).
QUADRATIC_WARNING = 300
_PASSING = {"Status": "passing", "Output": "passing: process heartbeat"}


def _is_unknown_check(exc: ConsulRequestError) -> bool:
    return exc.status in (404, 500) and ("associated TTL" in str(exc) or "nknown check" in str(exc))


@dataclass(frozen=True, slots=True)
class _Key:
    agent_type: str
    ttl: timedelta
    deregister_after: timedelta


@dataclass
class _Anchor:
    key: _Key
    anchor_id: str
    agents: set[str] = field(default_factory=set)
    #: Agents of this anchor whose deregistration failed: the anchor then expires instead of going.
    abandoned: bool = False
    task: asyncio.Task[None] | None = None


class ProcessLiveness:
    """The anchors of one client (one token): registered on first use, heartbeated in the background,
    deregistered after their last agent. ``on_lost`` is told the agents of an anchor the local Consul agent
    had lost (a restart): the client re-registers each on its next heartbeat."""

    def __init__(
        self, gateway: ConsulGateway, on_lost: Callable[[set[str]], None], settings: ConsulSettings
    ) -> None:
        self._gateway = gateway
        self._on_lost = on_lost
        #: Agents kept alive by Consul HTTP checks of this client's health server (``liveness="http"``).
        self.http = HttpLiveness(settings)
        self._anchors: dict[_Key, _Anchor] = {}
        self._by_agent: dict[str, _Anchor] = {}
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ProcessLiveness(anchors={len(self._anchors)}, agents={len(self._by_agent)})"

    def anchor_of(self, agent_id: str) -> str | wire.HttpAlive | None:
        anchor = self._by_agent.get(agent_id)
        if anchor is None and self.http.holds(agent_id):
            return self.http.spec(agent_id)
        return None if anchor is None else anchor.anchor_id

    async def attach(
        self, registration: AgentRegistration, agent_id: str, *, http: bool = False
    ) -> str | wire.HttpAlive:
        """The ID of the anchor ``agent_id`` is to alias, registering (and starting to heartbeat) it first
        when this client has none for the registration's type and timings; with ``http``, the HTTP check
        of this client's health server instead (see _liveness_http)."""
        key = _Key(registration.agent_type, registration.ttl, registration.deregister_after)
        if http:
            await self.detach(agent_id, clean=True)
            return await self.http.attach(registration, agent_id)
        self.http.detach(agent_id)
        async with self._lock:
            current = self._by_agent.get(agent_id)
            if current is not None and current.key != key:
                await self._release(current, agent_id, clean=True)
            anchor = self._anchors.get(key)
            if anchor is None:
                anchor = _Anchor(key, f"{wire.anchor_service_name(key.agent_type)}-{uuid.uuid4().hex[:12]}")
                await self._register(anchor)
                self._anchors[key] = anchor
                anchor.task = asyncio.create_task(self._beat(anchor), name=f"anchor:{anchor.anchor_id}")
            anchor.agents.add(agent_id)
            self._by_agent[agent_id] = anchor
            if len(self._by_agent) == QUADRATIC_WARNING + 1:
                log.warning(
                    'more than %d agents with liveness="process" on one Consul agent: each alias check '
                    "copies all of the Consul agent's checks, so detecting a dead process may take seconds "
                    'past TTL + 1 s (2.8 s at 1,000 agents); liveness="http" costs Consul linearly',
                    QUADRATIC_WARNING,
                )
            return anchor.anchor_id

    async def detach(self, agent_id: str, *, clean: bool) -> None:
        """``agent_id`` no longer needs its anchor: deregistered (``clean``), or given up on (its anchor
        then only stops being heartbeated after its last agent, and expires)."""
        self.http.detach(agent_id)
        async with self._lock:
            anchor = self._by_agent.get(agent_id)
            if anchor is not None:
                await self._release(anchor, agent_id, clean=clean)

    async def close(self) -> None:
        """Stop every heartbeat and the health server; anchors whose agents were all deregistered go, the
        others expire."""
        await self.http.close()
        async with self._lock:
            for anchor in list(self._anchors.values()):
                if anchor.agents:
                    anchor.abandoned = True
                    anchor.agents.clear()
                await self._retire(anchor)
            self._by_agent.clear()

    async def _release(self, anchor: _Anchor, agent_id: str, *, clean: bool) -> None:
        anchor.agents.discard(agent_id)
        self._by_agent.pop(agent_id, None)
        anchor.abandoned = anchor.abandoned or not clean
        if not anchor.agents:
            await self._retire(anchor)

    async def _retire(self, anchor: _Anchor) -> None:
        self._anchors.pop(anchor.key, None)
        if anchor.task is not None:
            anchor.task.cancel()
            await asyncio.wait([anchor.task])
        if anchor.abandoned:
            log.info("anchor %s left to expire: some of its agents may still be registered", anchor.anchor_id)
            return
        operation = f"deregister liveness anchor {anchor.anchor_id!r}"
        try:
            await self._gateway.put(operation, f"/v1/agent/service/deregister/{anchor.anchor_id}")
        except ConsulAgentsError as exc:
            log.warning("%s failed (Consul reaps it after its TTL): %s", operation, exc)

    async def _register(self, anchor: _Anchor) -> None:
        key = anchor.key
        body = wire.anchor_definition(
            key.agent_type,
            anchor.anchor_id,
            ttl=key.ttl,
            deregister_after=key.deregister_after + ANCHOR_MARGIN,
        )
        await self._gateway.put(
            f"register liveness anchor {anchor.anchor_id!r}", "/v1/agent/service/register", body
        )

    async def _beat(self, anchor: _Anchor) -> None:
        """Heartbeat the anchor every third of its TTL; when the local Consul agent lost it, register it
        again and have every agent of it re-registered."""
        detach_deadline()
        interval = anchor.key.ttl.total_seconds() / 3
        operation = f"heartbeat liveness anchor {anchor.anchor_id!r}"
        path = f"/v1/agent/check/update/{wire.anchor_check_id(anchor.anchor_id)}"
        while True:
            await asyncio.sleep(interval)
            try:
                await self._gateway.put(operation, path, _PASSING)
            except ConsulRequestError as exc:
                if not _is_unknown_check(exc):
                    log.warning("%s failed: %s", operation, exc)
                    continue
                log.warning(
                    "liveness anchor %s was missing from Consul; registering it again", anchor.anchor_id
                )
                with suppress(ConsulAgentsError):
                    await self._register(anchor)
                    self._on_lost(set(anchor.agents))
            except ConsulAgentsError as exc:
                log.warning("%s failed: %s", operation, exc)
