"""Connections Consul still counts after the client closed them (blocking reads of stopped watches) are
part of the per-client budget: a burst right after watches stopped is not refused by Consul."""

from __future__ import annotations

import asyncio

from consul_agents import AgentRegistration, AgentRegistry, DiscoveryRequest
from consul_agents._cache import MAX_WATCHES
from consul_agents._lingering import LINGERING
from consul_agents._watch import WatchPolicy

BURST = 250


def registration(agent_type: str, n: int) -> AgentRegistration:
    return AgentRegistration(
        agent_type=agent_type, capabilities=["burst"], endpoint=f"http://127.0.0.1:{30000 + n}"
    )


async def watch_then_close(consul_addr: str, types: list[str]) -> None:
    """One registry watches every type (one blocking read each), then closes with all of them mid-read.

    Their wait of 30 s keeps them open on Consul's side through the burst however slow the machine."""
    async with AgentRegistry(consul_addr, watch_policy=WatchPolicy(wait=30.0)) as reg:
        for agent_type in types:
            await reg.discover_agents(DiscoveryRequest(agent_type=agent_type))
        assert reg.discovery.cache.watch_count == len(types)


async def test_burst_after_closing_registries_with_watches(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """Two registries each close MAX_WATCHES watches mid-read (Consul 1.8 keeps those connections open
    until the blocking read would have ended), then a burst of 250 registrations from a third
    one all succeed: the pool counts the lingering connections against Consul's 200 per client address."""
    types = [f"{unique}x{i}" for i in range(MAX_WATCHES)]
    ids = await asyncio.gather(*(registry.register_agent(registration(t, i)) for i, t in enumerate(types)))
    try:
        await watch_then_close(consul_addr, types)
        await watch_then_close(consul_addr, types)
        assert LINGERING.count(registry.gateway.address) >= 2 * MAX_WATCHES

        async with AgentRegistry(consul_addr) as burst:
            burst_ids = await asyncio.gather(
                *(burst.register_agent(registration(unique, n)) for n in range(BURST))
            )
            found = await burst.discover_agents(DiscoveryRequest(agent_type=unique), cached=False)
            assert sorted(info.agent_id for info in found) == sorted(burst_ids)
            assert all(await asyncio.gather(*(burst.deregister_agent(i) for i in burst_ids)))
    finally:
        await asyncio.gather(*(registry.deregister_agent(i) for i in ids))
