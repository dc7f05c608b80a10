"""Process liveness (issue 15): one anchor TTL check per process and type, an alias check per agent.

Against the session's real Consul: what a steady fleet of sessions sends, detection when the process dies
(SIGKILL) and when one agent fails alone, and that an anchor is never an agent to any reader.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import pytest
from liveness_support import all_beat, fails_alone, sigkill_detection, statuses, two_sessions
from support import eventually, registration

from consul_agents import AgentRegistry
from consul_agents import _liveness as liveness
from consul_agents import _wire as wire
from consul_agents.dev import ConsulDevServer

TTL = 2.0


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
        await eventually(lambda: all_beat(sessions, 4), timeout=20, what="four heartbeats of every session")
        assert sent["agent"] <= len(regs), sent  # at most the first heartbeat of each
        assert 1 <= sent["other"] <= 8, sent  # the anchor's
        assert set((await statuses(registry, unique)).values()) == {"passing"}


async def test_one_agent_fails_alone_within_the_bound(consul_addr: str, unique: str) -> None:
    """A session set critical is critical within TTL + 1 s while its sibling in the process stays passing,
    and passing again once it recovers."""
    async with AgentRegistry(consul_addr, cache=False) as registry:
        async with two_sessions(registry, unique, TTL, "process") as failing:
            elapsed = await fails_alone(registry, failing, unique, TTL)
        assert elapsed <= TTL + 1


async def test_sigkilled_process_agents_turn_critical_within_ttl_plus_one_second(
    consul_server: ConsulDevServer, unique: str
) -> None:
    """Every agent of a SIGKILLed process is critical within TTL + 1 s of the kill, and Consul DNS
    drops them all."""
    elapsed = await sigkill_detection(consul_server, unique, 20, TTL)
    assert elapsed <= TTL + 1, f"{elapsed:.2f}s"


async def test_hung_process_agents_turn_critical_within_ttl_plus_one_second(
    consul_server: ConsulDevServer, unique: str
) -> None:
    """Every agent of a process that hangs (SIGSTOP: alive but heartbeating nothing) is critical within
    TTL + 1 s: its anchor's TTL expires."""
    elapsed = await sigkill_detection(consul_server, unique, 20, TTL, hang=True)
    assert elapsed <= TTL + 1, f"{elapsed:.2f}s"


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
            assert (await statuses(registry, unique)) == {f"{unique}-a": "passing"}
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


async def test_warns_once_past_the_quadratic_threshold(
    consul_addr: str, unique: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client whose anchored agents pass the threshold where the alias checks' quadratic cost delays
    detection logs one warning naming it and the linear alternative, not one per agent."""
    monkeypatch.setattr(liveness, "QUADRATIC_WARNING", 2)
    async with AgentRegistry(consul_addr, cache=False) as registry:
        with caplog.at_level(logging.WARNING, logger="consul_agents.liveness"):
            for i in range(5):
                agent_id = f"{unique}-{i}"
                await registry.register_agent(registration(unique, agent_id=agent_id), liveness="process")
        warnings = [r.getMessage() for r in caplog.records if "more than 2 agents" in r.getMessage()]
        assert len(warnings) == 1 and 'liveness="http"' in warnings[0]
        for i in range(5):
            await registry.deregister_agent(f"{unique}-{i}")
