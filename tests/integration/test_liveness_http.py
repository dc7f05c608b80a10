"""HTTP liveness (issue 15, c): Consul runs an HTTP check per agent against its process's health server.

Against the session's real Consul: the checks Consul holds, that a steady fleet sends no TTL update and moves
no index, detection when the process dies (SIGKILL) and when one agent fails alone, and the status rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from liveness_support import all_beat, fails_alone, sigkill_detection, statuses, two_sessions
from support import eventually, registration

from consul_agents import AgentRegistry, AgentStatus, DiscoveryRequest, InvalidAgentError
from consul_agents import _wire as wire
from consul_agents.dev import ConsulDevServer

TTL = 3.0  # Consul checks every TTL - 1 s = 2 s


async def _checks(registry: AgentRegistry, agent_id: str) -> dict[str, dict[str, Any]]:
    response = await registry.gateway.get("read", "/v1/agent/checks")
    return {cid: c for cid, c in (response.body or {}).items() if c.get("ServiceID") == agent_id}


async def test_agent_carries_an_http_check_of_a_loopback_health_server(consul_addr: str, unique: str) -> None:
    """An agent registered with liveness="http" has its own check and a Consul HTTP check of a loopback URL
    that answers 200 with a constant body while it is registered and 404 once it is gone."""
    agent_id = f"{unique}-a"
    async with AgentRegistry(consul_addr, cache=False) as registry:
        await registry.register_agent(registration(unique, agent_id=agent_id, ttl=TTL), liveness="http")
        checks = await _checks(registry, agent_id)
        assert set(checks) == {wire.check_id(agent_id), wire.alias_check_id(agent_id)}
        alive = checks[wire.alias_check_id(agent_id)]
        assert alive["Type"] == "http"
        spec = registry._liveness.anchor_of(agent_id)
        assert isinstance(spec, wire.HttpAlive)
        assert spec.url.startswith("http://127.0.0.1:") and spec.url.endswith(f"/{agent_id}")
        async with aiohttp.ClientSession() as http:
            async with http.get(spec.url) as answer:
                assert (answer.status, await answer.text()) == (200, "alive")

            async def run_by_consul() -> bool:
                check = (await _checks(registry, agent_id))[wire.alias_check_id(agent_id)]
                return check["Status"] == "passing" and "200 OK" in check["Output"]

            await eventually(run_by_consul, timeout=TTL + 2, what="Consul ran the HTTP check")
            assert await registry.get_agent_status(agent_id) is AgentStatus.PASSING
            await registry.deregister_agent(agent_id)
            async with http.get(spec.url) as answer:
                assert answer.status == 404


async def test_steady_agents_send_nothing_and_move_no_index(consul_addr: str, unique: str) -> None:
    """20 sessions heartbeating for several check intervals send no TTL update at all after their first
    heartbeat, and the health index of their service does not move: Consul runs the checks itself and
    never syncs an unchanged one."""
    async with AgentRegistry(consul_addr, cache=False) as registry, AsyncExitStack() as stack:
        sent: Counter[str] = Counter()
        put = registry.gateway.put

        async def counting(operation: str, path: str, body: Any = None, **kwargs: Any) -> Any:
            if path.startswith("/v1/agent/check/update/"):
                sent["update"] += 1
            return await put(operation, path, body, **kwargs)

        registry.gateway.put = counting  # type: ignore[method-assign]
        regs = [registration(unique, agent_id=f"{unique}-{i}", ttl=TTL) for i in range(20)]
        sessions = [await stack.enter_async_context(registry.session(r, liveness="http")) for r in regs]

        async def ran_twice() -> bool:
            checks = (await registry.gateway.get("read", "/v1/agent/checks")).body or {}
            outputs = [checks.get(wire.alias_check_id(r.agent_id or ""), {}).get("Output", "") for r in regs]
            return all("200 OK" in output for output in outputs)

        await eventually(ran_twice, timeout=TTL + 2, what="every HTTP check run")
        await eventually(lambda: all_beat(sessions, 1), timeout=2 * TTL, what="a first heartbeat of each")
        path = f"/v1/health/service/agent-{unique}"
        before = (await registry.gateway.get("read", path)).meta.index
        sent.clear()
        await eventually(lambda: all_beat(sessions, 4), timeout=4 * TTL, what="three more heartbeats")
        assert sent["update"] == 0, sent
        assert (await registry.gateway.get("read", path)).meta.index == before
        assert set((await statuses(registry, unique)).values()) == {"passing"}


async def test_one_agent_fails_alone_and_recovers(consul_addr: str, unique: str) -> None:
    """A session set critical is critical within TTL + 1 s while its sibling stays passing (by its HTTP
    check alone), and passing again once it recovers."""
    async with AgentRegistry(consul_addr, cache=False) as registry:
        async with two_sessions(registry, unique, TTL, "http") as failing:
            assert (await _checks(registry, f"{unique}-b"))[wire.alias_check_id(f"{unique}-b")][
                "Type"
            ] == "http"
            elapsed = await fails_alone(registry, failing, unique, TTL)
        assert elapsed <= TTL + 1


async def test_sigkilled_process_agents_turn_critical_within_ttl_plus_one_second(
    consul_server: ConsulDevServer, unique: str
) -> None:
    """Every agent of a SIGKILLed process with HTTP liveness is critical within TTL + 1 s of the kill (its
    health server's port is closed), and Consul DNS drops them all."""
    count = 20

    async def both_kinds_of_check(registry: AgentRegistry) -> None:
        kinds = {c["Type"] for i in range(count) for c in (await _checks(registry, f"{unique}-{i}")).values()}
        assert kinds == {"ttl", "http"}

    elapsed = await sigkill_detection(consul_server, unique, count, TTL, ("http",), both_kinds_of_check)
    assert elapsed <= TTL + 1, f"{elapsed:.2f}s"


async def test_hung_process_agents_turn_critical_within_ttl_plus_one_second(
    consul_server: ConsulDevServer, unique: str
) -> None:
    """Every agent of a process that hangs (SIGSTOP: alive, its port open, answering nothing) is critical
    within TTL + 1 s: its check runs at most TTL - 1 s apart and times out after 1 s."""
    elapsed = await sigkill_detection(consul_server, unique, 20, TTL, ("http",), hang=True)
    assert elapsed <= TTL + 1, f"{elapsed:.2f}s"


async def test_check_interval_is_ttl_less_its_timeout(consul_addr: str, unique: str) -> None:
    """Consul runs an agent's HTTP check every TTL minus its one-second timeout (a third as often as a
    heartbeat every TTL/3), never more often than once a second."""
    async with AgentRegistry(consul_addr, cache=False) as registry:
        for ttl, interval in ((15.0, 14.0), (1.5, 1.0)):
            agent_id = f"{unique}-{int(ttl * 10)}"
            await registry.register_agent(registration(unique, agent_id=agent_id, ttl=ttl), liveness="http")
            spec = registry._liveness.anchor_of(agent_id)
            assert isinstance(spec, wire.HttpAlive)
            assert spec.interval.total_seconds() == interval
            await registry.deregister_agent(agent_id)


async def test_foreign_check_only_lowers_an_http_agent(consul_addr: str, unique: str) -> None:
    """An HTTP-liveness agent is read as having the library's check (discovered, passing), and a check
    someone else adds to it can lower its status but never raise it."""
    agent_id = f"{unique}-a"
    async with AgentRegistry(consul_addr, cache=False) as registry:
        await registry.register_agent(registration(unique, agent_id=agent_id, ttl=TTL), liveness="http")
        assert (await _checks(registry, agent_id))[wire.alias_check_id(agent_id)]["Type"] == "http"
        found = await registry.discover_agents(DiscoveryRequest(agent_type=unique))
        assert [a.agent_id for a in found] == [agent_id]
        foreign = {"ID": f"{unique}-foreign", "Name": "x", "ServiceID": agent_id, "TTL": "60s"}
        await registry.gateway.put("add", "/v1/agent/check/register", {**foreign, "Status": "critical"})
        assert await registry.get_agent_status(agent_id) is AgentStatus.CRITICAL
        await registry.gateway.put("pass", f"/v1/agent/check/pass/{unique}-foreign")
        await registry.heartbeat(agent_id, status=AgentStatus.CRITICAL)
        assert await registry.get_agent_status(agent_id) is AgentStatus.CRITICAL
        await registry.deregister_agent(agent_id)


async def test_agent_lost_by_consul_is_registered_again(consul_addr: str, unique: str) -> None:
    """An HTTP-liveness session whose service the local Consul agent lost (removed behind its back, as a
    restart without its data dir does) is registered again by its own heartbeats, passing, once Consul
    has not checked it for three intervals."""
    agent_id = f"{unique}-a"
    registry = AgentRegistry(consul_addr, cache=False)
    async with (
        registry,
        registry.session(registration(unique, agent_id=agent_id, ttl=TTL), liveness="http") as session,
    ):
        await eventually(lambda: all_beat([session], 2), timeout=4 * TTL, what="two heartbeats")
        await registry.gateway.put("lose it", f"/v1/agent/service/deregister/{agent_id}")
        assert await _checks(registry, agent_id) == {}

        async def back() -> bool:
            alive = (await _checks(registry, agent_id)).get(wire.alias_check_id(agent_id), {})
            return alive.get("Type") == "http"

        await eventually(back, timeout=6 * TTL, what="the agent registered again")
        await eventually(lambda: _passing(registry, unique, agent_id), timeout=2 * TTL, what="passing again")


async def _passing(registry: AgentRegistry, agent_type: str, agent_id: str) -> bool:
    return (await statuses(registry, agent_type)).get(agent_id) == "passing"


async def test_drain_maintenance_and_census_hold_for_http_agents(consul_addr: str, unique: str) -> None:
    """An HTTP-liveness agent can be drained and put in maintenance like any other, and the census counts
    it with its status."""
    agent_id = f"{unique}-a"
    async with AgentRegistry(consul_addr, cache=False) as registry:
        await registry.register_agent(registration(unique, agent_id=agent_id, ttl=TTL), liveness="http")
        await registry.set_draining(agent_id)
        (info,) = await registry.discover_agents(DiscoveryRequest(agent_type=unique, include_draining=True))
        assert info.draining
        await registry.set_draining(agent_id, False)
        await registry.set_maintenance(agent_id, True, "upgrade")
        assert await registry.get_agent_status(agent_id) is AgentStatus.MAINTENANCE
        await registry.set_maintenance(agent_id, False)
        census = {a.agent_id: a.status for a in await registry.census()}
        assert census[agent_id] is AgentStatus.PASSING
        await registry.deregister_agent(agent_id)


async def test_unknown_liveness_is_refused(consul_addr: str, unique: str) -> None:
    """A liveness mode that does not exist is refused with an error naming it, and nothing is registered."""
    async with AgentRegistry(consul_addr, cache=False) as registry:
        with pytest.raises(InvalidAgentError, match="liveness"):
            await registry.register_agent(registration(unique, agent_id=f"{unique}-a"), liveness="htp")  # type: ignore[arg-type]
        assert await _checks(registry, f"{unique}-a") == {}


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /consul-agents/health/"
        + b"x" * 10_000
        + b" HTTP/1.1\r\nHost: a\r\n\r\n",  # request line > 8 KiB
        b"GET /consul-agents/health/a HTTP/1.1\r\nHost: a\r\nX: "
        + b"y" * 10_000
        + b"\r\n\r\n",  # header > 8 KiB
        b"GET /consul-agents/health/a HTTP/1.1\r\nno colon here\r\n\r\n",  # a header without a name
        b"GET /consul-agents/health/a HTTP/9.9\r\n\r\n",  # a version that does not exist
    ],
    ids=["long-line", "long-header", "broken-header", "bad-version"],
)
async def test_malformed_request_is_a_400_and_no_traceback(
    consul_addr: str, unique: str, caplog: pytest.LogCaptureFixture, request_head: bytes
) -> None:
    """Any local process can send the health server a malformed request: it gets a 400, the log gets at
    most one debug line naming the problem (no ERROR, no traceback), and the server goes on answering."""
    agent_id = f"{unique}-a"
    async with AgentRegistry(consul_addr, cache=False) as registry:
        await registry.register_agent(registration(unique, agent_id=agent_id, ttl=TTL), liveness="http")
        spec = registry._liveness.anchor_of(agent_id)
        assert isinstance(spec, wire.HttpAlive)
        host, port = spec.url.split("//")[1].split("/")[0].rsplit(":", 1)
        with caplog.at_level(logging.DEBUG):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request_head)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        assert answer.split(b" ", 2)[1] == b"400", answer[:80]
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
        assert loud == [], [(r.name, r.levelname, r.getMessage()[:80]) for r in loud]
        assert any(
            "malformed request answered 400" in r.getMessage() and r.name == "consul_agents.liveness.server"
            for r in caplog.records
        )
        async with aiohttp.ClientSession() as http, http.get(spec.url) as still:
            assert still.status == 200
        await registry.deregister_agent(agent_id)
