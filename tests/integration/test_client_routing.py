"""Regional routing across two real Consul datacenters joined over WAN on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from support import registration

from consul_agents import AgentRegistry, DiscoveryRequest, SelectionCriteria
from consul_agents.dev import ConsulDevServer

pytestmark = pytest.mark.parametrize("cached", [True, False], ids=["cached", "direct"])


@pytest.fixture(scope="module")
def datacenters() -> Iterator[tuple[ConsulDevServer, ConsulDevServer]]:
    """Two dev agents, datacenters "east" (local to the tests) and "west", joined over WAN; started once."""
    with ConsulDevServer(datacenter="east") as east, ConsulDevServer(datacenter="west") as west:
        east.join_wan(west)
        yield east, west


@pytest.fixture
async def clients(
    datacenters: tuple[ConsulDevServer, ConsulDevServer],
) -> AsyncIterator[tuple[AgentRegistry, AgentRegistry]]:
    """A registry client of each datacenter (the east one is the one under test)."""
    east, west = datacenters
    async with AgentRegistry(east.http_addr) as in_east, AgentRegistry(west.http_addr) as in_west:
        yield in_east, in_west


async def test_region_asks_that_datacenter(
    clients: tuple[AgentRegistry, AgentRegistry], unique: str, cached: bool
) -> None:
    """region="west" returns west's agents, labelled with their datacenter, even from an east client."""
    east, west = clients
    await east.register_agent(registration(unique, agent_id=f"{unique}-e"))
    await west.register_agent(registration(unique, agent_id=f"{unique}-w"))
    result = await east.discover(DiscoveryRequest(agent_type=unique, region="west"), cached=cached)
    assert [(a.agent_id, a.datacenter) for a in result.agents] == [(f"{unique}-w", "west")]
    assert result.datacenter == "west" and result.datacenters_tried == ("west",)
    local = await east.discover(DiscoveryRequest(agent_type=unique), cached=cached)
    assert [a.agent_id for a in local.agents] == [f"{unique}-e"]
    assert local.datacenter == "east" and local.datacenters_tried == ("east",)


async def test_failover_when_local_has_no_match(
    clients: tuple[AgentRegistry, AgentRegistry], unique: str, cached: bool
) -> None:
    """With no matching agent in the local datacenter, discovery and selection fail over to the other,
    and say so."""
    east, west = clients
    await west.register_agent(registration(unique, agent_id=f"{unique}-w"))
    result = await east.discover(DiscoveryRequest(agent_type=unique), cached=cached)
    assert [a.agent_id for a in result.agents] == [f"{unique}-w"]
    assert result.datacenter == "west" and result.datacenters_tried == ("east", "west")
    chosen = await east.select_agent(SelectionCriteria(agent_type=unique), cached=cached)
    assert chosen is not None and chosen.datacenter == "west"


async def test_exclude_fails_over_across_datacenters(
    clients: tuple[AgentRegistry, AgentRegistry], unique: str, cached: bool
) -> None:
    """When the only local agent is excluded (it just failed), selection moves on to the next datacenter."""
    east, west = clients
    await east.register_agent(registration(unique, agent_id=f"{unique}-e"))
    await west.register_agent(registration(unique, agent_id=f"{unique}-w"))
    criteria = SelectionCriteria(agent_type=unique, exclude=[f"{unique}-e"])
    chosen = await east.select_agent(criteria, cached=cached)
    assert chosen is not None and (chosen.agent_id, chosen.datacenter) == (f"{unique}-w", "west")
    everyone = SelectionCriteria(agent_type=unique, exclude=[f"{unique}-e", f"{unique}-w"])
    assert await east.select_agent(everyone, cached=cached) is None


async def test_failover_is_bounded_and_configurable(
    datacenters: tuple[ConsulDevServer, ConsulDevServer], unique: str, cached: bool
) -> None:
    """max_failover=0 keeps discovery local; a configured order skips datacenters Consul does not know."""
    east, west = datacenters
    async with (
        AgentRegistry(west.http_addr) as in_west,
        AgentRegistry(east.http_addr, max_failover=0) as local_only,
        AgentRegistry(east.http_addr, failover_datacenters=["gone", "west"]) as configured,
    ):
        await in_west.register_agent(registration(unique, agent_id=f"{unique}-w"))
        request = DiscoveryRequest(agent_type=unique)
        none = await local_only.discover(request, cached=cached)
        assert none.agents == [] and none.datacenters_tried == ("east",)
        found = await configured.discover(request, cached=cached)
        assert found.datacenter == "west" and found.datacenters_tried == ("east", "west")
