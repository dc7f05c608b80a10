"""Selective watches: a question narrowing a large agent type by capability or tag gets a watch that
Consul filters, shared by every question with the same capabilities and tags, bounded per type, kept
current by Consul's changes and by this client's own writes; the answers always equal direct reads.

The size from which a type counts as large (200 agents) is lowered for the tests, so that a few agents
stand for a large fleet; one test keeps it, and checks that a small type gets no selective watch."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support import eventually, registration

from consul_agents import AgentRegistry, AgentStatus, DiscoveryRequest
from consul_agents import _cache as cache_module
from consul_agents._selective import PER_SERVICE

Clients = tuple[AgentRegistry, AgentRegistry]


@pytest.fixture
async def clients(consul_addr: str) -> AsyncIterator[Clients]:
    """A cached client and a direct one (also the writer) of the tests' Consul."""
    async with AgentRegistry(consul_addr) as cached, AgentRegistry(consul_addr, cache=False) as direct:
        yield cached, direct


@pytest.fixture
def large_from_three(monkeypatch: pytest.MonkeyPatch) -> None:
    """A type of three agents or more counts as large."""
    monkeypatch.setattr(cache_module, "MIN_AGENTS", 3)


async def fleet(direct: AgentRegistry, agent_type: str, count: int = 6) -> list[str]:
    """``count`` agents; every other one also has capability ``rare`` and tag tier=gold."""
    ids = []
    for i in range(count):
        rare = i % 2 == 0
        ids.append(
            await direct.register_agent(
                registration(
                    agent_type,
                    agent_id=f"{agent_type}-{i}",
                    capabilities=["plan", "rare"] if rare else ["plan"],
                    tags={"tier": "gold" if rare else "silver"},
                )
            )
        )
    return ids


async def agree(clients: Clients, request: DiscoveryRequest, what: str) -> None:
    cached, direct = clients

    async def same() -> bool:
        return await cached.discover_agents(request) == await direct.discover_agents(request)

    await eventually(same, 10, what)


async def selective_started(cached: AgentRegistry, count: int) -> None:
    cache = cached.discovery.cache

    async def started() -> bool:
        return len(cache._selective) == count and not cache._accelerating

    await eventually(started, 10, f"{count} selective watch(es) running")


@pytest.mark.usefixtures("large_from_three")
async def test_questions_with_the_same_capabilities_share_one_filtered_watch(
    clients: Clients, unique: str
) -> None:
    """A capability question over a large type starts one watch that Consul filters; the same capability
    asked with another status or max_load uses that watch too, and every answer equals a direct read."""
    cached, direct = clients
    await fleet(direct, unique)
    rare = DiscoveryRequest(agent_type=unique, capabilities=["rare"])
    await agree(clients, rare, "cache caught up with the fleet")
    await selective_started(cached, 1)
    ((_, _, expression),) = cached.discovery.cache._selective
    assert '"rare" in Service.Tags' in expression
    variants = [
        rare,
        DiscoveryRequest(agent_type=unique, capabilities=["rare"], status=AgentStatus.CRITICAL),
        DiscoveryRequest(agent_type=unique, capabilities=["rare"], max_load=0.5),
        DiscoveryRequest(agent_type=unique),
    ]
    for request in variants:
        await agree(clients, request, f"cached answer of {request}")
    assert len(cached.discovery.cache._selective) == 1
    watch = next(iter(cached.discovery.cache._selective.values()))
    assert sorted(a.agent_id for a in watch.view.agents) == sorted(
        a.agent_id for a in await direct.discover_agents(rare)
    )


@pytest.mark.usefixtures("large_from_three")
async def test_a_selective_watch_follows_changes_and_this_clients_writes(
    clients: Clients, unique: str
) -> None:
    """Served by its filtered watch, a tag question sees a load report, a check turning critical and a
    deregistration made by another client, and at once an agent this client registers itself."""
    cached, direct = clients
    ids = await fleet(direct, unique)
    gold = DiscoveryRequest(agent_type=unique, tags={"tier": "gold"})
    await agree(clients, gold, "cache caught up with the fleet")
    await selective_started(cached, 1)
    await direct.heartbeat(ids[0], load=0.7)
    await direct.heartbeat(ids[2], status=AgentStatus.CRITICAL)
    await direct.deregister_agent(ids[4])
    await agree(clients, gold, "cache caught up with the changes")
    assert [(a.agent_id, a.current_load) for a in await cached.discover_agents(gold)] == [(ids[0], 0.7)]
    mine = await cached.register_agent(
        registration(unique, agent_id=f"{unique}-mine", capabilities=["rare"], tags={"tier": "gold"})
    )
    assert mine in [a.agent_id for a in await cached.discover_agents(gold)]
    assert len(cached.discovery.cache._selective) == 1


@pytest.mark.usefixtures("large_from_three")
async def test_selective_watches_per_type_are_bounded(clients: Clients, unique: str) -> None:
    """Questions with more distinct capabilities than the bound start at most PER_SERVICE selective watches
    for the type; the others are answered by the type's watch, all equal to direct reads."""
    cached, direct = clients
    capabilities = [f"c{i}" for i in range(PER_SERVICE + 2)]
    for i in range(4):
        await direct.register_agent(registration(unique, agent_id=f"{unique}-{i}", capabilities=capabilities))
    questions = [DiscoveryRequest(agent_type=unique, capabilities=[c]) for c in capabilities]
    for request in questions:
        await agree(clients, request, f"cached answer of {request}")
    await selective_started(cached, PER_SERVICE)
    for request in questions:
        await agree(clients, request, f"cached answer of {request}")
    assert len(cached.discovery.cache._selective) == PER_SERVICE


async def test_a_small_type_gets_no_selective_watch(clients: Clients, unique: str) -> None:
    """Below 200 agents the whole answer is small: a capability question is answered by the type's watch
    alone, and no selective watch starts."""
    cached, direct = clients
    await fleet(direct, unique)
    rare = DiscoveryRequest(agent_type=unique, capabilities=["rare"])
    await agree(clients, rare, "cache caught up with the fleet")
    await cached.discover_agents(rare)
    cache = cached.discovery.cache
    assert not cache._selective and not cache._accelerating


@pytest.mark.usefixtures("large_from_three")
async def test_the_types_own_watch_stops_while_only_selective_questions_come(
    clients: Clients, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked only a capability question, the cache stops the type's own watch once it is unused for
    SHADOWED_IDLE seconds; a question of the whole type starts it again, and then it stays."""
    monkeypatch.setattr(cache_module, "SHADOWED_IDLE", 0.2)
    cached, direct = clients
    await fleet(direct, unique)
    rare = DiscoveryRequest(agent_type=unique, capabilities=["rare"])
    everyone = DiscoveryRequest(agent_type=unique)
    await agree(clients, rare, "cache caught up with the fleet")
    await selective_started(cached, 1)
    cache = cached.discovery.cache
    typed = ("", f"agent-{unique}")

    async def type_watch_stopped() -> bool:
        await cached.discover_agents(rare)
        return typed not in cache._services

    await eventually(type_watch_stopped, 10, "the type's own watch stopped")
    await agree(clients, rare, "selective answer without the type's watch")
    await agree(clients, everyone, "the type's watch started again")
    assert typed in cache._services
    for _ in range(10):  # past SHADOWED_IDLE: the type's questions are mixed, its watch stays
        await cached.discover_agents(rare)
        await cache.wait_changed(0.05)
    assert typed in cache._services and len(cache._selective) == 1
