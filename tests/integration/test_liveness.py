"""Process liveness (issue 15): one anchor TTL check per process and type, an alias check per agent.

Against the session's real Consul: what a steady fleet of sessions sends, detection when the process dies
(SIGKILL) and when one agent fails alone, and that an anchor is never an agent to any reader.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import pytest
from support import eventually, registration
from test_dns import srv

from consul_agents import AgentRegistry, AgentStatus
from consul_agents import _wire as wire
from consul_agents.dev import ConsulDevServer
from consul_agents.dns import service_dns_name

TTL = 2.0
CHILD = [sys.executable, "tests/liveness_child.py"]


async def _statuses(registry: AgentRegistry, agent_type: str) -> dict[str, str]:
    response = await registry.gateway.get("read", f"/v1/health/service/agent-{agent_type}")
    return {
        entry["Service"]["ID"]: wire.aggregate_status(entry["Checks"]).value for entry in response.body or []
    }


async def test_steady_sessions_send_one_ttl_update_per_interval_in_all(consul_addr: str, unique: str) -> None:
    """30 sessions of one type heartbeating for three intervals send the anchor's TTL updates and no
    agent's: one PUT per interval for the process instead of one per agent."""
    async with AgentRegistry(consul_addr, cache=False) as registry, AsyncExitStack() as stack:
        sent: Counter[str] = Counter()
        put = registry.gateway.put

        async def counting(operation: str, path: str, body: Any = None, **kwargs: Any) -> Any:
            if path.startswith("/v1/agent/check/update/"):
                sent[
                    "agent" if path.endswith(tuple(f"/service:{r.agent_id}" for r in regs)) else "other"
                ] += 1
            return await put(operation, path, body, **kwargs)

        registry.gateway.put = counting  # type: ignore[method-assign]
        regs = [registration(unique, agent_id=f"{unique}-{i}", ttl=TTL) for i in range(30)]
        sessions = [await stack.enter_async_context(registry.session(r, liveness="process")) for r in regs]
        await eventually(lambda: _all_beat(sessions, 4), timeout=20, what="four heartbeats of every session")
        assert sent["agent"] <= len(regs), sent  # at most the first heartbeat of each
        assert 1 <= sent["other"] <= 8, sent  # the anchor's
        assert set((await _statuses(registry, unique)).values()) == {"passing"}


async def _all_beat(sessions: list[Any], beats: int) -> bool:
    return all(s.heartbeats >= beats for s in sessions)


async def test_one_agent_fails_alone_within_the_bound(consul_addr: str, unique: str) -> None:
    """A session set critical is critical within TTL + 1 s while its sibling in the process stays passing,
    and passing again once it recovers."""
    async with AgentRegistry(consul_addr, cache=False) as registry:
        first = registration(unique, agent_id=f"{unique}-a", ttl=TTL)
        second = registration(unique, agent_id=f"{unique}-b", ttl=TTL)
        async with (
            registry.session(first, liveness="process") as failing,
            registry.session(second, liveness="process"),
        ):
            failing.status = AgentStatus.CRITICAL
            started = time.monotonic()

            async def first_critical() -> bool:
                return (await _statuses(registry, unique)).get(f"{unique}-a") == "critical"

            await eventually(first_critical, timeout=TTL + 1, what="the failing agent critical")
            elapsed = time.monotonic() - started
            # Two more TTLs: the sibling is kept alive by the anchor alone.
            deadline = time.monotonic() + 2 * TTL
            while time.monotonic() < deadline:
                assert (await _statuses(registry, unique))[f"{unique}-b"] == "passing"
                await asyncio.sleep(0.2)
            failing.status = AgentStatus.PASSING

            async def recovered() -> bool:
                return (await _statuses(registry, unique)).get(f"{unique}-a") == "passing"

            await eventually(recovered, timeout=TTL + 1, what="the agent passing again")
        assert elapsed <= TTL + 1


async def test_sigkilled_process_agents_turn_critical_within_ttl_plus_one_second(
    consul_server: ConsulDevServer, unique: str
) -> None:
    """Every agent of a SIGKILLed process is critical within TTL + 1 s of the kill, and Consul DNS
    drops them all."""
    count = 20
    child = await asyncio.create_subprocess_exec(
        *CHILD, consul_server.http_addr, unique, str(count), str(TTL), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"READY"
        async with AgentRegistry(consul_server.http_addr, cache=False) as registry:
            name = service_dns_name(unique)
            await eventually(
                lambda: _dns_lists(consul_server.dns_port, name), timeout=10, what="DNS lists them"
            )
            child.kill()
            killed = time.monotonic()

            async def all_critical() -> bool:
                statuses = await _statuses(registry, unique)
                return len(statuses) == count and set(statuses.values()) == {"critical"}

            await eventually(all_critical, timeout=TTL + 5, what="every agent critical")
            elapsed = time.monotonic() - killed
            await eventually(
                lambda: _dns_drops(consul_server.dns_port, name), timeout=5, what="DNS drops them"
            )
        assert elapsed <= TTL + 1, f"{elapsed:.2f}s"
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def _dns_lists(port: int, name: str) -> bool:
    return bool(await srv(port, name))  # Consul answers a few records over UDP, not all 20


async def _dns_drops(port: int, name: str) -> bool:
    return not await srv(port, name)


async def test_anchor_is_no_agent_and_goes_after_its_last_agent(consul_addr: str, unique: str) -> None:
    """An anchor is never listed as an agent type or an agent, and is deregistered once its last session
    ends (never before: an alias of a missing service reads passing)."""
    async with AgentRegistry(consul_addr) as registry:
        first = registration(unique, agent_id=f"{unique}-a", ttl=TTL)
        second = registration(unique, agent_id=f"{unique}-b", ttl=TTL)
        anchor_name = wire.anchor_service_name(unique)
        async with registry.session(first, liveness="process"):
            async with registry.session(second, liveness="process"):
                services = (await registry.gateway.get("read", "/v1/agent/services")).body
                assert [s["Service"] for s in services.values()].count(anchor_name) == 1
                assert anchor_name not in {f"agent-{t}" for t in await registry.agent_types()}
                assert not any(t.startswith(wire.ANCHOR_PREFIX[:-1]) for t in await registry.agent_types())
                found = await registry.discover_agents(cached=False)
                assert {a.agent_id for a in found if a.agent_type == unique} == {f"{unique}-a", f"{unique}-b"}
                census = await registry.census()
                assert all(not a.agent_id.startswith(wire.ANCHOR_PREFIX) for a in census)
            services = (await registry.gateway.get("read", "/v1/agent/services")).body
            assert anchor_name in [s["Service"] for s in services.values()]  # the first still aliases it
            assert (await _statuses(registry, unique)) == {f"{unique}-a": "passing"}
        services = (await registry.gateway.get("read", "/v1/agent/services")).body
        assert anchor_name not in [s["Service"] for s in services.values()]


@pytest.mark.parametrize("count", [300])
async def test_mass_exit_deregisters_every_agent(consul_addr: str, unique: str, count: int) -> None:
    """``count`` sessions exiting at once deregister every agent and their anchor, with no failure."""
    async with AgentRegistry(consul_addr, cache=False) as registry:
        stack = AsyncExitStack()
        for start in range(0, count, 50):
            batch = [registration(unique, agent_id=f"{unique}-{i}", ttl=15) for i in range(start, start + 50)]
            await asyncio.gather(
                *(stack.enter_async_context(registry.session(r, liveness="process")) for r in batch)
            )
        started = time.monotonic()
        await stack.aclose()
        elapsed = time.monotonic() - started
        services = (await registry.gateway.get("read", "/v1/agent/services")).body
        left = [s["ID"] for s in services.values() if unique in s["Service"]]
        assert left == []
        assert elapsed < 30
