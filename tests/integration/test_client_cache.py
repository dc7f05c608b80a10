"""The watch-fed discovery cache against a real Consul: freshness, equality with direct queries, watch
lifecycle and fail-static."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from conftest import MakeConsul, skip_if_external
from support import consul_get_text, consul_put, eventually, raw_agent, registration

from consul_agents import (
    AgentRegistry,
    AgentStatus,
    DiscoveryRequest,
    RegistryUnavailableError,
)
from consul_agents import _wire as wire
from consul_agents.dev import ConsulDevServer


@pytest.fixture
async def cached(consul_addr: str) -> AsyncIterator[AgentRegistry]:
    async with AgentRegistry(consul_addr, cache=True) as reg:
        yield reg


@pytest.fixture
async def direct(consul_addr: str) -> AsyncIterator[AgentRegistry]:
    async with AgentRegistry(consul_addr, cache=False) as reg:
        yield reg


def watch_names(registry: AgentRegistry) -> list[str]:
    return sorted(w.name for w in registry.discovery.cache.watches() if w.running)


async def test_cached_reader_sees_changes_made_elsewhere(
    cached: AgentRegistry, direct: AgentRegistry, unique: str
) -> None:
    """Register, load report, check turning critical and deregister by another client all reach a cached
    reader through its watch."""
    request = DiscoveryRequest(agent_type=unique)
    assert await cached.discover_agents(request) == []
    agent_id = await direct.register_agent(registration(unique))

    async def ids(req: DiscoveryRequest = request) -> list[str]:
        return [a.agent_id for a in await cached.discover_agents(req)]

    await eventually(lambda: _eq(ids(), [agent_id]), 5, "registration seen")
    await direct.heartbeat(agent_id, load=0.75)

    async def load_seen() -> bool:
        found = await cached.discover_agents(request)
        return bool(found) and found[0].current_load == 0.75

    await eventually(load_seen, 5, "load report seen")
    await direct.heartbeat(agent_id, status=AgentStatus.CRITICAL)
    await eventually(lambda: _eq(ids(), []), 5, "critical agent hidden")
    critical = DiscoveryRequest(agent_type=unique, status=AgentStatus.CRITICAL)
    assert await ids(critical) == [agent_id]
    await direct.deregister_agent(agent_id)
    await eventually(lambda: _eq(ids(critical), []), 5, "deregistration seen")
    result = await cached.discover(critical)
    assert result.cached and result.datacenter == "dc1" and result.known_leader


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_own_writes_are_read_back_at_once(cached: AgentRegistry, unique: str) -> None:
    """After this client registers or deregisters, its next cached discover reflects it without waiting."""
    request = DiscoveryRequest(agent_type=unique)
    assert await cached.discover_agents(request) == []
    for _ in range(5):
        agent_id = await cached.register_agent(registration(unique))
        assert [a.agent_id for a in await cached.discover_agents(request)] == [agent_id]
        await cached.deregister_agent(agent_id)
        assert await cached.discover_agents(request) == []


async def test_steady_heartbeats_keep_answers_cached(cached: AgentRegistry, unique: str) -> None:
    """Heartbeats that write nothing to Consul leave the service cached; a real load change marks it."""
    request = DiscoveryRequest(agent_type=unique)
    agent_id = await cached.register_agent(registration(unique, load=0.3))
    await cached.heartbeat(agent_id, load=0.3)
    await cached.discover(request)

    def marked_for_reread() -> list[bool]:
        return [
            entry.dirty
            for (_, name), entry in cached.discovery.cache._services.items()
            if name.endswith(unique)
        ]

    assert marked_for_reread() == [False]
    for _ in range(5):
        await cached.heartbeat(agent_id, load=0.31)
    assert marked_for_reread() == [False]
    await cached.heartbeat(agent_id, load=0.9)
    assert marked_for_reread() == [True]
    assert [a.current_load for a in (await cached.discover(request)).agents] == [0.9]


@pytest.fixture(scope="module")
def server_mode_addr() -> Iterator[str]:
    """A Consul started as deployed (``server: true``, not ``-dev``): it writes its answers compact, while
    a ``-dev`` agent indents every answer. The cache reads both layouts."""
    skip_if_external()
    with ConsulDevServer(dev_mode=False) as server:
        yield server.http_addr


@pytest.fixture(params=["dev", "server"])
async def both_layouts(
    request: pytest.FixtureRequest, consul_addr: str
) -> AsyncIterator[tuple[AgentRegistry, AgentRegistry]]:
    """A cached and a direct registry on a ``-dev`` agent, then on a server-mode one."""
    addr = consul_addr if request.param == "dev" else request.getfixturevalue("server_mode_addr")
    async with AgentRegistry(addr, cache=True) as cached, AgentRegistry(addr, cache=False) as direct:
        yield cached, direct


async def test_cached_answers_equal_direct_queries(
    both_layouts: tuple[AgentRegistry, AgentRegistry], unique: str
) -> None:
    """Over a random fleet (types, capabilities, tags, loads, every status, and entries this library could
    not have written) and 80 random requests, the cached answer equals the direct Consul query, and holds
    no hostile entry."""
    cached, direct = both_layouts
    rng = random.Random(unique)
    types = [f"{unique}{k}" for k in "abc"]
    caps = [f"{unique}-{c}" for c in ("plan", "code", "search")]
    for i in range(30):
        agent_id = await direct.register_agent(
            registration(
                rng.choice(types),
                capabilities=rng.sample(caps, rng.randint(1, 3)),
                agent_id=f"{unique}-{i}",
                load=rng.choice([0.0, 0.2, 0.5, 0.9]),
                tags={"tier": rng.choice(["gold", "silver"])},
            )
        )
        roll = rng.random()
        if roll < 0.15:
            await direct.heartbeat(agent_id, status=AgentStatus.CRITICAL)
        elif roll < 0.3:
            await direct.heartbeat(agent_id, status=AgentStatus.WARNING)
        elif roll < 0.4:
            await direct.set_maintenance(agent_id, True, "test")
    # Entries this library could not have written, among them: both paths must skip them alike.
    hostile: list[dict[str, Any]] = [
        {"check": False},
        {"meta": {"agent-load": "junk"}},
        {"meta": {"agent-endpoint": "nowhere"}},
        {"meta": {"agent-heartbeat": "never"}},
        {"meta": {"agent-metadata": "[1]"}},
        {"tags": ["Not-A-Label"]},
    ]
    addr = direct.discovery.gateway.address
    for i, fields in enumerate(hostile * 2):
        tags = fields.get("tags", rng.sample(caps, rng.randint(1, 3)))
        raw_agent(
            addr,
            rng.choice(types),
            f"{unique}-h{i}",
            tags=tags,
            meta=fields.get("meta"),
            check=fields.get("check", True),
        )

    def random_request() -> DiscoveryRequest:
        return DiscoveryRequest(
            agent_type=rng.choice([None, *types]),
            capabilities=rng.sample(caps, rng.randint(0 if rng.random() < 0.5 else 1, 2)) or [caps[0]],
            status=rng.choice([None, None, *AgentStatus]),
            max_load=rng.choice([None, 0.2, 0.5]),
            tags=rng.choice([{}, {"tier": "gold"}]),
        )

    everything = [DiscoveryRequest(capabilities=[c], status=s) for c in caps for s in [None, *AgentStatus]]

    async def agree(request: DiscoveryRequest) -> bool:
        return await cached.discover_agents(request) == await direct.discover_agents(request)

    for request in everything:  # wait until the watches caught up with the last write
        await eventually(lambda r=request: agree(r), 5, f"cache converged for {request}")  # type: ignore[misc]
    for _ in range(80):
        request = random_request()
        answer = await cached.discover_agents(request)
        assert answer == await direct.discover_agents(request), request
        assert not [a.agent_id for a in answer if a.agent_id.startswith(f"{unique}-h")], request


async def test_unchanged_entries_are_not_converted_again(server_mode_addr: str, unique: str) -> None:
    """A watch re-reads every instance on each change; the agents that did not change keep the AgentInfo
    built from their earlier answer (the same object), and only the changed one is new."""
    request = DiscoveryRequest(agent_type=unique)
    async with (
        AgentRegistry(server_mode_addr) as cached,
        AgentRegistry(server_mode_addr, cache=False) as writer,
    ):
        ids = [await writer.register_agent(registration(unique, agent_id=f"{unique}-{i}")) for i in range(5)]

        async def converged() -> bool:
            return await cached.discover_agents(request) == await writer.discover_agents(request)

        await eventually(converged, 5, "cache caught up with the fleet")
        before = {a.agent_id: a for a in await cached.discover_agents(request)}
        assert sorted(before) == ids
        await writer.heartbeat(ids[2], load=0.9)
        await eventually(converged, 5, "cache caught up with the load report")
        after = {a.agent_id: a for a in await cached.discover_agents(request)}
        assert after[ids[2]].current_load == 0.9 and after[ids[2]] is not before[ids[2]]
        assert all(after[i] is before[i] for i in ids if i != ids[2])


async def test_an_entry_forging_a_boundary_does_not_fool_the_cache(
    server_mode_addr: str, unique: str
) -> None:
    """A Connect proxy registered under an agent type may carry arbitrary JSON in its Config, including an
    object shaped like an entry that Consul writes right after a comma, as it writes entries. Splitting
    the answer there must not invent that agent: the cache notices and decodes the answer whole."""
    service = f"agent-{unique}"
    # The bearer carries what an agent of this library carries (a check service:<id>, its Meta, a
    # capability), so it is an agent. The ghost cannot carry Checks: Go writes a map's keys sorted, so an
    # object starting with "Node" has no "Checks"; the untrusted-entry rules would skip it (no_check).
    meta = {
        "agent-endpoint": "http://10.0.0.1:1",
        "agent-load": "0",
        "agent-heartbeat": "2026-01-01T00:00:00+00:00",
    }
    ghost = {
        "Node": {"Node": "n", "Address": "10.0.0.1"},
        "Service": {"ID": f"{unique}-ghost", "Service": service, "Port": 1, "Tags": ["plan"], "Meta": meta},
    }
    request = DiscoveryRequest(agent_type=unique)
    async with (
        AgentRegistry(server_mode_addr) as cached,
        AgentRegistry(server_mode_addr, cache=False) as direct,
    ):
        await direct.register_agent(registration(unique, agent_id=f"{unique}-a"))
        assert [a.agent_id for a in await cached.discover_agents(request)] == [f"{unique}-a"]
        consul_put(
            server_mode_addr,
            "/v1/agent/service/register",
            {
                "ID": f"{unique}-bearer",
                "Name": service,
                "Kind": "connect-proxy",
                "Port": 9999,
                "Tags": ["plan"],
                "Meta": meta,
                "Proxy": {"DestinationServiceName": "x", "Config": {"list": [{"a": 1}, ghost]}},
                "Check": {"CheckID": f"service:{unique}-bearer", "TTL": "1h", "Status": "passing"},
            },
        )
        await direct.register_agent(registration(unique, agent_id=f"{unique}-z"))
        text, _ = consul_get_text(server_mode_addr, f"/v1/health/service/{service}")
        assert len(json.loads(text)) == 3
        pieces = wire.split_health_entries(text)
        assert pieces is not None and len(pieces) == 4, "the answer must hold the forged boundary"

        async def converged() -> bool:
            return await cached.discover_agents(request) == await direct.discover_agents(request)

        await eventually(converged, 5, "cache caught up")
        found = [a.agent_id for a in await cached.discover_agents(request)]
        assert found == [f"{unique}-a", f"{unique}-bearer", f"{unique}-z"]


async def test_one_watch_per_service(cached: AgentRegistry, unique: str) -> None:
    """Many concurrent readers of two types share one watch per service, plus one catalog watch for a
    question that names no type."""
    await cached.register_agent(registration(f"{unique}a", capabilities=[f"{unique}-x"]))
    await cached.register_agent(registration(f"{unique}b", capabilities=[f"{unique}-x"]))
    before = set(watch_names(cached))
    await asyncio.gather(
        *(cached.discover_agents(DiscoveryRequest(agent_type=f"{unique}{k}")) for k in "ab" * 20)
    )
    await asyncio.gather(
        *(cached.discover_agents(DiscoveryRequest(capabilities=[f"{unique}-x"])) for _ in range(10))
    )
    added = sorted(set(watch_names(cached)) - before)
    assert added == sorted(
        {f"local/agent-{unique}a", f"local/agent-{unique}b"} | ({"local/catalog"} - before)
    )
    assert len(cached.discovery.cache.watches()) == len(set(watch_names(cached)))


async def test_idle_watches_stop_and_close_stops_all(consul_addr: str, unique: str) -> None:
    """Watches unused for cache_idle stop and start again on use; closing the registry stops every one."""
    async with AgentRegistry(consul_addr, cache_idle=0.3) as reg:
        await reg.register_agent(registration(unique))
        assert len(await reg.discover_agents(DiscoveryRequest(agent_type=unique))) == 1
        assert f"local/agent-{unique}" in watch_names(reg)

        async def stopped() -> bool:
            return f"local/agent-{unique}" not in watch_names(reg)

        await eventually(stopped, 5, "idle watch stopped")
        assert len(await reg.discover_agents(DiscoveryRequest(agent_type=unique))) == 1
        assert f"local/agent-{unique}" in watch_names(reg)
        watches = reg.discovery.cache.watches()
    assert watches and not any(w.running for w in watches)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("watch:")]


async def test_large_metadata_is_read_into_the_cache(cached: AgentRegistry, unique: str) -> None:
    """Metadata kept in KV (too large for Meta) is part of the cached AgentInfo too."""
    metadata = {"prompt": "x" * 2000}
    await cached.register_agent(registration(unique, metadata=metadata))
    found = await cached.discover_agents(DiscoveryRequest(agent_type=unique))
    assert [a.metadata for a in found] == [metadata]


async def test_fail_static_then_unavailable(make_consul: MakeConsul, unique: str) -> None:
    """When Consul dies, cached discovery keeps answering the last state marked stale, for max_stale
    seconds; then RegistryUnavailableError. A direct query fails at once."""
    server = await asyncio.to_thread(make_consul)
    async with AgentRegistry(server.http_addr, max_stale=2.0, timeout=2.0) as reg:
        ids = [await reg.register_agent(registration(unique)) for _ in range(3)]
        request = DiscoveryRequest(agent_type=unique)
        fresh = await reg.discover(request)
        assert sorted(a.agent_id for a in fresh.agents) == sorted(ids) and fresh.staleness == 0
        await asyncio.to_thread(server.kill)

        async def stale() -> bool:
            return (await reg.discover(request)).staleness > 0

        await eventually(stale, 5, "staleness reported")
        result = await reg.discover(request)
        assert sorted(a.agent_id for a in result.agents) == sorted(ids)
        assert all(a.staleness == result.staleness for a in result.agents)
        with pytest.raises(RegistryUnavailableError):
            await reg.discover_agents(request, cached=False)

        async def unavailable() -> bool:
            try:
                await reg.discover(request)
            except RegistryUnavailableError as exc:
                return "max_stale" in str(exc)
            return False

        await eventually(unavailable, 10, "RegistryUnavailableError after max_stale")


async def test_first_use_without_consul_fails_cleanly() -> None:
    """With no Consul ever reachable, a cached discover raises RegistryUnavailableError and leaves no
    watch running."""
    async with AgentRegistry("http://127.0.0.1:1", timeout=1.0) as reg:
        with pytest.raises(RegistryUnavailableError):
            await reg.discover_agents(DiscoveryRequest(agent_type="nothing"))
        assert watch_names(reg) == []


async def test_watches_are_capped(cached: AgentRegistry, direct: AgentRegistry, unique: str) -> None:
    """At most max_watches watches run (least recently used stop first), and a question spanning more
    services than that is answered by Consul directly, with the same agents."""
    cached.discovery.cache.max_watches = 3
    types = [f"{unique}{k}" for k in "abcde"]
    for agent_type in types:
        await direct.register_agent(registration(agent_type, capabilities=[f"{unique}-x"]))
    for agent_type in types:
        assert len(await cached.discover_agents(DiscoveryRequest(agent_type=agent_type))) == 1
        assert len(watch_names(cached)) <= 3
    assert watch_names(cached) == [f"local/agent-{t}" for t in types[2:]]
    spanning = DiscoveryRequest(capabilities=[f"{unique}-x"])
    result = await cached.discover(spanning)
    assert not result.cached
    assert result.agents == await direct.discover_agents(spanning)
    assert len(result.agents) == 5 and len(watch_names(cached)) <= 3


async def test_views_share_one_watch_budget(consul_addr: str, direct: AgentRegistry, unique: str) -> None:
    """Per-token views share their parent's connection pool, so their watches share one budget: a view
    makes room by stopping its own least recently used watch, and one with none to give up is answered
    by Consul directly."""
    types = [f"{unique}{k}" for k in "abc"]
    for agent_type in types:
        await direct.register_agent(registration(agent_type))
    async with AgentRegistry(consul_addr) as parent:
        parent._watch_budget.limit = 2
        one, two = parent.with_token(None), parent.with_token(None)
        budget = parent._watch_budget
        for view in (one, two):  # a view's first discovery is direct; its cache starts with the second
            assert not (await view.discover(DiscoveryRequest(agent_type=types[2]))).cached
        assert (await one.discover(DiscoveryRequest(agent_type=types[0]))).cached
        assert (await one.discover(DiscoveryRequest(agent_type=types[1]))).cached
        assert budget.in_use() == 2
        late = await two.discover(DiscoveryRequest(agent_type=types[2]))
        assert not late.cached and [a.agent_type for a in late.agents] == [types[2]]
        assert (await one.discover(DiscoveryRequest(agent_type=types[2]))).cached
        assert budget.in_use() == 2 and watch_names(one) == sorted(f"local/agent-{t}" for t in types[1:])
        await one.__aexit__(None, None, None)
        assert budget.in_use() == 0
        assert (await two.discover(DiscoveryRequest(agent_type=types[0]))).cached
