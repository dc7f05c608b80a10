"""``registry.lease(...)``: one lease as ``async with``, or a lease that moves to another agent on failure.

Without retries, ``async with registry.lease(criteria) as agent`` selects one agent and counts it in flight,
as it always did. With ``retries=n`` the body may run up to n + 1 times, each time on another agent, and is
written as an ``async for`` over attempts (as tenacity does, since a ``with`` block cannot run twice)::

    async for attempt in registry.lease(criteria, retries=2, retry_on=(ConnectionError,), timeout=30):
        async with attempt as agent:
            answer = await call(agent)

* An exception of a class in ``retry_on`` (default: any Exception) escaping the body counts as the agent's
  failure (it feeds outlier ejection), is swallowed, and the next attempt selects another agent, excluding
  every agent that failed in this lease. The last attempt's exception propagates.
* An exception of another class counts as a failure and propagates at once: it is not the agent's fault
  that a retry would cure.
* When no other agent is left to try, NoAgentAvailableError says so, its cause the last failure.
* ``timeout`` bounds the whole lease, every selection and every run of the body: when it passes, the body
  is cancelled and TimeoutError propagates (no retry after the deadline). None: each selection is bounded by
  the client's own timeout and the body is not bounded.
* Cancellation stays cancellation: it counts as nothing and propagates.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Self

from consul_agents._errors import InvalidAgentError, NoAgentAvailableError
from consul_agents._gateway import call_deadline
from consul_agents._models import AgentInfo, SelectionCriteria

if TYPE_CHECKING:
    from consul_agents._registry import AgentRegistry

__all__ = ["ANY_EXCEPTION", "MAX_LEASE_RETRIES", "Lease", "LeaseAttempt"]

#: Most retries one lease may ask for.
MAX_LEASE_RETRIES = 10

ExceptionClasses = tuple[type[BaseException], ...]

#: The default ``retry_on``: any Exception.
ANY_EXCEPTION: ExceptionClasses = (Exception,)


class LeaseAttempt:
    """One run of a retrying lease's body on one agent: ``async with attempt as agent``."""

    def __init__(self, lease: Lease, criteria: SelectionCriteria, last: bool) -> None:
        self._lease = lease
        self._criteria = criteria
        self._last = last
        self._inner: AbstractAsyncContextManager[AgentInfo] | None = None
        self._timeout: asyncio.Timeout | None = None
        self._deadline: call_deadline | None = None
        self.agent: AgentInfo | None = None
        #: None until the body ended; then True (success) or False (failure, retried or not).
        self.succeeded: bool | None = None

    async def __aenter__(self) -> AgentInfo:
        lease = self._lease
        if lease.deadline is not None:
            left = lease.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the lease's timeout passed before another agent could be tried")
            self._timeout = asyncio.timeout(left)
            await self._timeout.__aenter__()
            self._deadline = call_deadline(left)
            self._deadline.__enter__()
        try:
            self._inner = lease.registry._lease_one(self._criteria, cached=lease.cached)
            try:
                self.agent = await self._inner.__aenter__()
            except NoAgentAvailableError:
                if lease.failures:
                    raise NoAgentAvailableError(
                        f"no other agent to retry on after {len(lease.failures)} failed attempt(s) on "
                        f"{', '.join(lease.failed_agents)}: last failure {lease.failures[-1]!r}"
                    ) from lease.failures[-1]
                raise
        except BaseException as exc:
            await self._leave(type(exc), exc, exc.__traceback__)
            raise
        return self.agent

    async def _leave(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Leave the deadline and the timeout; True when the timeout turned a cancellation into its own."""
        if self._deadline is not None:
            self._deadline.__exit__()
        if self._timeout is not None:
            try:
                await self._timeout.__aexit__(exc_type, exc, tb)
            except TimeoutError:
                return True
        return False

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._inner is not None and self.agent is not None
        try:
            # records the outcome (failure, success, nothing for a cancellation), ends the in-flight count
            await self._inner.__aexit__(exc_type, exc, tb)
        except BaseException as raised:
            if raised is not exc:
                await self._leave(type(raised), raised, raised.__traceback__)
                raise
        timed_out = await self._leave(exc_type, exc, tb)
        if timed_out:
            raise TimeoutError(
                f"the lease's timeout passed while agent {self.agent.agent_id!r} held it"
            ) from exc
        self.succeeded = exc is None
        if exc is None or not isinstance(exc, Exception):
            return False
        self._lease.failures.append(exc)
        self._lease.failed_agents.append(self.agent.agent_id)
        return not self._last and isinstance(exc, self._lease.retry_on)


class Lease:
    """What ``registry.lease(...)`` returns: an async context manager (no retries) or an async iterator of
    :class:`LeaseAttempt` (see the module)."""

    def __init__(
        self,
        registry: AgentRegistry,
        criteria: SelectionCriteria | None,
        *,
        cached: bool | None,
        retries: int,
        retry_on: ExceptionClasses,
        timeout: float | None,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_LEASE_RETRIES:
            raise InvalidAgentError(
                f"retries {retries!r} must be a whole number from 0 to {MAX_LEASE_RETRIES}", field="retries"
            )
        if retry_on is not ANY_EXCEPTION and (
            not retry_on or not all(isinstance(c, type) and issubclass(c, Exception) for c in retry_on)
        ):
            raise InvalidAgentError("retry_on must name one or more Exception classes", field="retry_on")
        if timeout is not None and (
            not isinstance(timeout, int | float) or math.isnan(timeout) or timeout <= 0
        ):
            raise InvalidAgentError(
                f"timeout {timeout!r} must be a number of seconds above 0", field="timeout"
            )
        self.registry = registry
        self.criteria = criteria or SelectionCriteria()
        self.cached = cached
        self.retries = retries
        self.retry_on = retry_on
        self.deadline = None if timeout is None else time.monotonic() + timeout
        #: The exceptions of the failed attempts, and the agents they failed on, in order.
        self.failures: list[Exception] = []
        self.failed_agents: list[str] = []
        self._attempts: list[LeaseAttempt] = []
        self._single: AbstractAsyncContextManager[AgentInfo] | None = None

    # -- one lease: async with ------------------------------------------------------------------------

    async def __aenter__(self) -> AgentInfo:
        if self.retries:
            raise InvalidAgentError(
                "a lease with retries runs its body once per attempt: write `async for attempt in "
                "registry.lease(..., retries=n): async with attempt as agent: ...`",
                field="retries",
            )
        # Without a deadline, the one-agent lease itself (the common path costs no extra object).
        self._single = (
            self.registry._lease_one(self.criteria, cached=self.cached)
            if self.deadline is None
            else LeaseAttempt(self, self.criteria, last=True)
        )
        return await self._single.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._single is not None
        return bool(await self._single.__aexit__(exc_type, exc, tb))

    # -- retrying: async for ---------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LeaseAttempt:
        if self._attempts:
            previous = self._attempts[-1]
            if previous.succeeded is not False or len(self._attempts) > self.retries:
                raise StopAsyncIteration
        excluded = [
            *self.criteria.exclude,
            *(a for a in self.failed_agents if a not in self.criteria.exclude),
        ]
        criteria = self.criteria.model_copy(update={"exclude": excluded})
        attempt = LeaseAttempt(self, criteria, last=len(self._attempts) == self.retries)
        self._attempts.append(attempt)
        return attempt
