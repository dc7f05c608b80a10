"""What the liveness tests of every design share (tests/integration/test_liveness*.py): statuses as Consul
aggregates them, one agent failing alone beside a sibling, and every agent of a SIGKILLed process going
critical and leaving DNS."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from support import eventually, registration, stop_process
from test_dns import srv

from consul_agents import AgentRegistry, AgentSession, AgentStatus
from consul_agents import _wire as wire
from consul_agents.dev import ConsulDevServer
from consul_agents.dns import service_dns_name

CHILD = [sys.executable, "tests/liveness_child.py"]


async def statuses(registry: AgentRegistry, agent_type: str) -> dict[str, str]:
    """Each agent of ``agent_type`` with the status Consul's checks give it."""
    response = await registry.gateway.get("read", f"/v1/health/service/agent-{agent_type}")
    return {
        entry["Service"]["ID"]: wire.aggregate_status(entry["Checks"]).value for entry in response.body or []
    }


async def all_beat(sessions: list[Any], beats: int) -> bool:
    return all(s.heartbeats >= beats for s in sessions)


@asynccontextmanager
async def two_sessions(
    registry: AgentRegistry, agent_type: str, ttl: float, liveness: Literal["process", "http"]
) -> AsyncIterator[AgentSession]:
    """Sessions ``<agent_type>-a`` (yielded, the one :func:`fails_alone` fails) and ``<agent_type>-b`` of
    one process, both with ``liveness``."""
    first = registration(agent_type, agent_id=f"{agent_type}-a", ttl=ttl)
    second = registration(agent_type, agent_id=f"{agent_type}-b", ttl=ttl)
    async with (
        registry.session(first, liveness=liveness) as failing,
        registry.session(second, liveness=liveness),
    ):
        yield failing


async def fails_alone(registry: AgentRegistry, failing: Any, agent_type: str, ttl: float) -> float:
    """Set ``failing`` (the session of ``<agent_type>-a``) critical, check that its sibling
    ``<agent_type>-b`` stays passing for two more TTLs, recover it; the seconds it took to turn critical."""
    failing.status = AgentStatus.CRITICAL
    started = time.monotonic()

    async def first_critical() -> bool:
        return (await statuses(registry, agent_type)).get(f"{agent_type}-a") == "critical"

    await eventually(first_critical, timeout=ttl + 1, what="the failing agent critical")
    elapsed = time.monotonic() - started
    # Two more TTLs: the sibling is kept alive by its own liveness alone.
    deadline = time.monotonic() + 2 * ttl
    while time.monotonic() < deadline:
        assert (await statuses(registry, agent_type))[f"{agent_type}-b"] == "passing"
        await asyncio.sleep(0.2)
    failing.status = AgentStatus.PASSING

    async def recovered() -> bool:
        return (await statuses(registry, agent_type)).get(f"{agent_type}-a") == "passing"

    await eventually(recovered, timeout=ttl + 1, what="the agent passing again")
    return elapsed


async def sigkill_detection(
    server: ConsulDevServer,
    agent_type: str,
    count: int,
    ttl: float,
    child_args: tuple[str, ...] = (),
    before_kill: Callable[[AgentRegistry], Awaitable[None]] | None = None,
    *,
    hang: bool = False,
) -> float:
    """Start a child process holding ``count`` agents, SIGKILL it (SIGSTOP with ``hang``: alive, holding its
    ports, doing nothing) once DNS lists them, wait until every agent is critical and DNS drops them; the
    seconds from the signal to every agent critical."""
    child = await asyncio.create_subprocess_exec(
        *CHILD,
        server.http_addr,
        agent_type,
        str(count),
        str(ttl),
        *child_args,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"READY"
        async with AgentRegistry(server.http_addr, cache=False) as registry:
            if before_kill is not None:
                await before_kill(registry)
            name = service_dns_name(agent_type)
            await eventually(lambda: _dns_lists(server.dns_port, name), timeout=10, what="DNS lists them")
            if hang:
                stop_process(child.pid)
            else:
                child.kill()
            killed = time.monotonic()

            async def all_critical() -> bool:
                found = await statuses(registry, agent_type)
                return len(found) == count and set(found.values()) == {"critical"}

            await eventually(all_critical, timeout=ttl + 5, what="every agent critical")
            elapsed = time.monotonic() - killed
            await eventually(lambda: _dns_drops(server.dns_port, name), timeout=5, what="DNS drops them")
        return elapsed
    finally:
        if child.returncode is None:
            child.kill()  # SIGKILL ends a stopped process too
        await child.wait()


async def _dns_lists(port: int, name: str) -> bool:
    return bool(await srv(port, name))  # Consul answers a few records over UDP, not all of them


async def _dns_drops(port: int, name: str) -> bool:
    return not await srv(port, name)
