"""consul-agents base agent: a class whose instances are registered agents while they run.

As an async context manager::

    class Planner(RegisteredAgent):
        def __init__(self, port: int) -> None:
            self.registration = AgentRegistration(agent_type="planner", capabilities=["plan"],
                                                  endpoint=f"http://127.0.0.1:{port}")

    async with Planner(8080) as planner:      # registered, heartbeating
        planner.agent_load = 0.3                # reported with the next heartbeat
    # deregistered

Or as a mixin next to another base class, calling ``await agent.start()`` and ``await agent.cleanup()``
from that framework's own lifecycle hooks. The mixin defines no ``__init__``, so it composes with any
base. The original design asked for registration on initialisation; ``__init__`` cannot await network I/O,
so registration happens in :meth:`start` (``await Planner.create(8080)`` constructs and starts in one step).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

from consul_agents import AgentRegistration, AgentRegistry, AgentSession, AgentStatus, ConsulAgentsError

__all__ = ["RegisteredAgent"]

log = logging.getLogger("consul_agents_agent")


class RegisteredAgent:
    """Registers on :meth:`start`, heartbeats in the background, deregisters on :meth:`cleanup`.

    Set ``registration`` (an attribute, or override :meth:`agent_registration`). Connection settings are
    class attributes that default to Consul's environment variables; override :meth:`make_registry` to
    share one registry between agents.
    """

    registration: AgentRegistration
    consul_url: str | None = None
    #: The ACL token (like ``setup_agent(token=...)``); None reads CONSUL_HTTP_TOKEN(_FILE), "" is anonymous.
    consul_token: str | None = None
    consul_datacenter: str | None = None
    #: Seconds between heartbeats; None means a third of the registration's TTL. The load is published with
    #: the next heartbeat, so Consul sees a load change up to one interval late (a burst shorter than the
    #: interval may never show); lower the interval where load matters more than Consul's write rate.
    heartbeat_interval: float | None = None

    _agent_session: AgentSession | None = None
    _agent_stack: AsyncExitStack | None = None

    def agent_registration(self) -> AgentRegistration:
        return self.registration

    def make_registry(self) -> AgentRegistry:
        return AgentRegistry(self.consul_url, self.consul_token, self.consul_datacenter)

    @classmethod
    async def create(cls, *args: Any, **kwargs: Any) -> Self:
        """Construct and start: the agent is registered when this returns."""
        agent = cls(*args, **kwargs)
        await agent.start()
        return agent

    @property
    def agent_id(self) -> str | None:
        return self._agent_session.agent_id if self._agent_session is not None else None

    @property
    def registered(self) -> bool:
        return self._agent_session is not None

    @property
    def agent_load(self) -> float:
        return self._agent_session.load if self._agent_session is not None else 0.0

    @agent_load.setter
    def agent_load(self, value: float) -> None:
        if self._agent_session is None:
            raise RuntimeError("the agent is not started")
        self._agent_session.load = value

    @property
    def agent_status(self) -> AgentStatus:
        return self._agent_session.status if self._agent_session is not None else AgentStatus.CRITICAL

    @agent_status.setter
    def agent_status(self, value: AgentStatus) -> None:
        if self._agent_session is None:
            raise RuntimeError("the agent is not started")
        self._agent_session.status = value

    async def start(self) -> str:
        """Register and start heartbeating; returns the agent id. Starting twice is an error."""
        if self._agent_stack is not None:
            raise RuntimeError(f"agent {self.agent_id} is already started")
        stack = AsyncExitStack()
        try:
            registry = await stack.enter_async_context(self.make_registry())
            session = await stack.enter_async_context(
                registry.session(self.agent_registration(), interval=self.heartbeat_interval)
            )
        except BaseException:
            await stack.aclose()
            raise
        self._agent_stack, self._agent_session = stack, session
        return session.agent_id

    async def cleanup(self) -> None:
        """Deregister and stop heartbeating. Does nothing when not started."""
        stack, self._agent_stack, self._agent_session = self._agent_stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.cleanup()
            return
        # Leaving on an exception (a cancellation included): that exception goes on, whatever Consul says.
        agent_id = self.agent_id
        try:
            await self.cleanup()
        except ConsulAgentsError as error:
            log.warning(
                "agent %s stopped (%s), but its deregistration could not be confirmed (%s); Consul removes "
                "it once its TTL has run out and deregister_after has passed",
                agent_id,
                type(exc).__name__,
                error,
            )
