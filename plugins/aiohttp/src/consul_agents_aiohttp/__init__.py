"""consul-agents for aiohttp: one call makes an aiohttp application a registered agent.

::

    from aiohttp import web
    from consul_agents import AgentRegistration
    from consul_agents_aiohttp import setup_agent

    app = web.Application()
    setup_agent(app, AgentRegistration(agent_type="planner", capabilities=["plan"],
                                       endpoint="http://10.0.0.5:8080"), capacity=8)
    web.run_app(app, port=8080)

On startup (a ``cleanup_ctx`` entry) the app registers with the local Consul agent and heartbeats in the
background. On shutdown it leaves discovery first (an ``on_shutdown`` handler deregisters it), and only then
does aiohttp wait for the requests in flight: discoverers stop sending new work while the old work drains.
A middleware counts requests in flight; the load reported to the registry is ``in_flight / capacity``
(capped at 1). ``GET /health`` (configurable) answers
``{"status": ..., "load": ..., "in_flight": ..., "capacity": ..., "agent_id": ...}``, the same shape the
sidecar's ``load_field: load`` reads.

The registration happens before the server accepts connections (aiohttp runs ``cleanup_ctx`` first); the
first discoverer may find the agent a few milliseconds before its port listens, and retries. aiohttp closes
the listening socket just before ``on_shutdown`` runs, so a discoverer may still find the agent for the few
milliseconds its deregistration takes. When Consul cannot be reached at shutdown, the app still stops
cleanly and logs one warning that the deregistration could not be confirmed (Consul then removes the agent
after its TTL and ``deregister_after``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from consul_agents import (
    AgentRegistration,
    AgentRegistry,
    AgentSession,
    AgentStatus,
    ConsulAgentsError,
    InvalidAgentError,
)

__all__ = ["AGENT", "AgentState", "setup_agent"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("consul_agents_aiohttp")


@dataclass
class AgentState:
    """What the plugin keeps in ``app[AGENT]``: set ``status`` to report warning (or critical) yourself."""

    registration: AgentRegistration
    capacity: int
    health_path: str
    interval: float | None
    registry_args: dict[str, Any] = field(default_factory=dict, repr=False)
    #: A load change at least this large is published at once instead of with the next heartbeat.
    publish_change: float = 0.5
    in_flight: int = 0
    status: AgentStatus = AgentStatus.PASSING
    session: AgentSession | None = None
    _registered: AsyncExitStack | None = field(default=None, repr=False)
    _pushed_load: float = field(default=0.0, repr=False)
    _pushed_at: float = field(default=-1.0, repr=False)
    _push: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def load(self) -> float:
        return min(1.0, self.in_flight / self.capacity)

    @property
    def agent_id(self) -> str | None:
        return self.session.agent_id if self.session is not None else None

    def _publish(self) -> None:
        if self.session is None:
            return
        self.session.load = self.load
        self.session.status = self.status
        # A burst shorter than the heartbeat interval would never reach Consul: publish a large change at
        # once, one such heartbeat at a time and at most one per _PUSH_SPACING seconds (bounded writes).
        now = time.monotonic()
        if (
            abs(self.load - self._pushed_load) >= self.publish_change
            and (self._push is None or self._push.done())
            and now - self._pushed_at >= _PUSH_SPACING
        ):
            self._pushed_load, self._pushed_at = self.load, now
            self._push = asyncio.get_running_loop().create_task(self._beat_now(self.session))

    async def _beat_now(self, session: AgentSession) -> None:
        try:
            await session.beat()
        except ConsulAgentsError as exc:
            log.debug(
                "early load report of agent %s failed (the next heartbeat retries): %s", self.agent_id, exc
            )


AGENT: web.AppKey[AgentState] = web.AppKey("consul_agents", AgentState)
#: At most one early load report per this many seconds.
_PUSH_SPACING = 0.5


def setup_agent(
    app: web.Application,
    registration: AgentRegistration,
    *,
    capacity: int = 10,
    health_path: str = "/health",
    heartbeat_interval: float | None = None,
    consul_url: str | None = None,
    token: str | None = None,
    datacenter: str | None = None,
    publish_change: float = 0.5,
) -> AgentState:
    """Register ``app`` as an agent while it runs. Connection arguments default to CONSUL_* variables.

    ``capacity`` is how many concurrent requests make the agent fully loaded (load 1.0).
    ``heartbeat_interval`` defaults to a third of the registration's TTL; the load is published with each
    heartbeat, and a change of at least ``publish_change`` at once (at most twice a second).
    """
    if capacity < 1:
        raise InvalidAgentError(f"invalid capacity: {capacity!r} must be at least 1", field="capacity")
    if not 0 < publish_change <= 1:
        raise InvalidAgentError(
            f"invalid publish_change: {publish_change!r} must be above 0 and at most 1",
            field="publish_change",
        )
    if not health_path.startswith("/"):
        raise InvalidAgentError(
            f"invalid health_path: {health_path!r} must start with '/'", field="health_path"
        )
    state = AgentState(
        registration=registration,
        capacity=capacity,
        health_path=health_path,
        interval=heartbeat_interval,
        publish_change=publish_change,
        _pushed_load=registration.load,
        registry_args={"consul_url": consul_url, "token": token, "datacenter": datacenter},
    )
    app[AGENT] = state
    app.middlewares.append(_count_in_flight)
    app.router.add_get(health_path, _health)
    app.cleanup_ctx.append(_registered)
    app.on_shutdown.append(_leave_on_shutdown)
    return state


@web.middleware
async def _count_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[AGENT]
    if request.path == state.health_path:
        return await handler(request)
    state.in_flight += 1
    state._publish()
    try:
        return await handler(request)
    finally:
        state.in_flight -= 1
        state._publish()


async def _health(request: web.Request) -> web.Response:
    state = request.app[AGENT]
    body = {
        "status": state.status.value,
        "load": state.load,
        "in_flight": state.in_flight,
        "capacity": state.capacity,
        "agent_id": state.agent_id,
    }
    return web.json_response(body, status=503 if state.status is AgentStatus.CRITICAL else 200)


async def _registered(app: web.Application) -> AsyncIterator[None]:
    state = app[AGENT]
    async with AgentRegistry(**state.registry_args) as registry:
        stack = AsyncExitStack()
        state.session = await stack.enter_async_context(
            registry.session(state.registration, interval=state.interval)
        )
        state._registered = stack
        state._publish()
        try:
            yield
        finally:
            await _leave(state)


async def _leave_on_shutdown(app: web.Application) -> None:
    await _leave(app[AGENT])


async def _leave(state: AgentState) -> None:
    """Stop heartbeating and deregister, once (on shutdown, before aiohttp drains; else on cleanup)."""
    stack, state._registered = state._registered, None
    if stack is None:
        return
    agent_id, state.session = state.agent_id, None
    push, state._push = state._push, None
    if push is not None and not push.done():
        push.cancel()  # an early load report must not reach Consul after the deregistration
        await asyncio.gather(push, return_exceptions=True)
    try:
        await stack.aclose()
    except ConsulAgentsError as exc:
        log.warning(
            "agent %s stopped, but its deregistration could not be confirmed (%s); Consul removes it once "
            "its TTL has run out and deregister_after has passed",
            agent_id,
            exc,
        )
