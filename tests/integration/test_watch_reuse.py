"""A watch's wake converts only what changed: entries compared with the last answer from both ends keep
their AgentInfo (the same object) through inserts and removals in the middle, and agents whose metadata
lives in KV are converted again only when their own KV value changes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from support import consul_put, eventually, registration

from consul_agents import AgentInfo, AgentRegistry, DiscoveryRequest
from consul_agents import _wire as wire

#: Too large for Meta: registration writes it to KV.
BIG = {"blob": "x" * 600}

Readers = tuple[AgentRegistry, AgentRegistry]


@pytest.fixture
async def readers(consul_addr: str) -> AsyncIterator[Readers]:
    """A cached client and a direct one of the tests' Consul."""
    async with AgentRegistry(consul_addr) as cached, AgentRegistry(consul_addr, cache=False) as direct:
        yield cached, direct


def converged(readers: Readers, request: DiscoveryRequest) -> Callable[[], Awaitable[bool]]:
    cached, direct = readers

    async def check() -> bool:
        return await cached.discover_agents(request) == await direct.discover_agents(request)

    return check


async def by_id(registry: AgentRegistry, request: DiscoveryRequest) -> dict[str, AgentInfo]:
    return {agent.agent_id: agent for agent in await registry.discover_agents(request)}


async def test_inserts_and_removals_in_the_middle_keep_the_other_agents(
    readers: Readers, unique: str
) -> None:
    """An agent registered between others (in Consul's order) and one deregistered from the middle leave
    every other agent's AgentInfo the same object, and the cache agrees with a direct read each time."""
    cached, direct = readers
    request = DiscoveryRequest(agent_type=unique)
    ids = [f"{unique}-{i}" for i in range(0, 9, 2)]
    for agent_id in ids:
        await direct.register_agent(registration(unique, agent_id=agent_id))
    await eventually(converged(readers, request), 10, "cache caught up with the fleet")
    before = await by_id(cached, request)
    assert sorted(before) == ids
    await direct.register_agent(registration(unique, agent_id=f"{unique}-3"))
    await eventually(converged(readers, request), 10, "cache caught up with the insert")
    inserted = await by_id(cached, request)
    assert all(inserted[i] is before[i] for i in ids)
    await direct.deregister_agent(f"{unique}-4")
    await eventually(converged(readers, request), 10, "cache caught up with the removal")
    removed = await by_id(cached, request)
    assert sorted(removed) == sorted({*ids, f"{unique}-3"} - {f"{unique}-4"})
    assert all(removed[i] is inserted[i] for i in removed)


async def test_agents_with_kv_metadata_are_converted_again_only_when_their_value_changes(
    readers: Readers, consul_addr: str, unique: str
) -> None:
    """With every agent's metadata in KV, a load report of one agent and a KV write of another each make a
    new AgentInfo for that agent alone; the others stay the same objects (each wake used to convert every
    agent whose metadata is in KV again)."""
    cached, direct = readers
    request = DiscoveryRequest(agent_type=unique)
    ids = [
        await direct.register_agent(registration(unique, agent_id=f"{unique}-{i}", metadata=BIG))
        for i in range(4)
    ]
    await eventually(converged(readers, request), 10, "cache caught up with the fleet")
    before = await by_id(cached, request)
    assert all(agent.metadata == BIG for agent in before.values())
    await direct.heartbeat(ids[1], load=0.5)
    await eventually(converged(readers, request), 10, "cache caught up with the load report")
    loaded = await by_id(cached, request)
    assert loaded[ids[1]].current_load == 0.5
    assert [loaded[i] is before[i] for i in ids] == [True, False, True, True]
    new = {"blob": "y" * 600}
    consul_put(consul_addr, f"/v1/kv/{wire.metadata_key(unique, ids[2])}", new)
    await eventually(converged(readers, request), 10, "cache caught up with the KV write")
    rewritten = await by_id(cached, request)
    assert rewritten[ids[2]].metadata == new
    assert [rewritten[i] is loaded[i] for i in ids] == [True, True, False, True]


async def test_own_writes_of_kv_metadata_are_read_back_at_once(readers: Readers, unique: str) -> None:
    """With the type's KV metadata watched, this client's re-registration with new KV metadata and its
    registration of a new agent with KV metadata show in its very next cached answer (both re-read)."""
    cached, _ = readers
    request = DiscoveryRequest(agent_type=unique)
    first = await cached.register_agent(registration(unique, agent_id=f"{unique}-0", metadata=BIG))
    assert (await by_id(cached, request))[first].metadata == BIG
    new = {"blob": "z" * 600}
    await cached.register_agent(registration(unique, agent_id=first, metadata=new))
    assert (await by_id(cached, request))[first].metadata == new
    second = await cached.register_agent(registration(unique, agent_id=f"{unique}-1", metadata=BIG))
    assert (await by_id(cached, request))[second].metadata == BIG
