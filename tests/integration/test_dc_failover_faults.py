"""Datacenter failover when a remote datacenter hangs (SIGSTOPped) or dies, across three real Consul
datacenters joined over WAN on loopback; and a datacenter that joined a moment ago."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import MakeConsul, skip_if_external
from support import consul_get, eventually, registration, stop_process

from consul_agents import (
    AgentRegistry,
    DiscoveryRequest,
    RegistryTimeoutError,
    RegistryUnavailableError,
    SelectionCriteria,
)
from consul_agents.dev import ConsulDevServer

#: What a call may take beyond its timeout on a loaded 2-core machine.
SLACK = 1.5

Datacenters = tuple[ConsulDevServer, ConsulDevServer, ConsulDevServer]


@pytest.fixture(scope="module")
def datacenters() -> Iterator[Datacenters]:
    """Dev agents of dc1 (the client's), dc2 and dc3, joined over WAN; started once for the module."""
    skip_if_external()
    with (
        ConsulDevServer(datacenter="dc1") as dc1,
        ConsulDevServer(datacenter="dc2") as dc2,
        ConsulDevServer(datacenter="dc3") as dc3,
    ):
        dc1.join_wan(dc2)
        dc1.join_wan(dc3)
        yield dc1, dc2, dc3


async def _reachable_from(dc1: ConsulDevServer, name: str) -> None:
    """Poll until dc1 answers catalog reads for datacenter ``name``."""

    async def answers() -> bool:
        return (
            await asyncio.to_thread(lambda: consul_get(dc1.http_addr, f"/v1/catalog/nodes?dc={name}")[0])
            is not None
        )

    await eventually(answers, 60, f"{name} reachable from dc1 again")


@pytest.fixture
async def frozen_dc2(datacenters: Datacenters) -> AsyncIterator[ConsulDevServer]:
    """dc2's agent, to be SIGSTOPped by the test (``os.kill``); SIGCONTed at teardown, which waits until dc1
    reaches dc2 again so later tests find it healthy."""
    dc1, dc2, _ = datacenters
    pid = dc2.pid
    assert pid is not None
    try:
        yield dc2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await _reachable_from(dc1, "dc2")


async def _register_in(server: ConsulDevServer, agent_type: str, agent_id: str) -> None:
    async with AgentRegistry(server.http_addr) as registry:
        await registry.register_agent(registration(agent_type, agent_id=agent_id))


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "direct"])
async def test_frozen_datacenter_costs_one_share_then_is_skipped(
    datacenters: Datacenters, frozen_dc2: ConsulDevServer, unique: str, cached: bool
) -> None:
    """With dc2 frozen and failover order dc2, dc3, the first discovery answers from dc3 within one
    timeout (dc2 gets a share of it, not all of it), and the next skips dc2 at once instead of waiting
    for it again; asking dc2 by region times out within the timeout with an error naming dc2."""
    dc1, dc2, dc3 = datacenters
    await _register_in(dc2, unique, f"{unique}-2")
    await _register_in(dc3, unique, f"{unique}-3")
    timeout = 4.0
    async with AgentRegistry(dc1.http_addr, timeout=timeout, failover_datacenters=["dc2", "dc3"]) as registry:
        request = DiscoveryRequest(agent_type=unique)
        await registry.discovery.datacenters()  # known before the freeze, as in a running client
        stop_process(frozen_dc2.pid or 0)
        started = time.monotonic()
        first = await registry.discover(request, cached=cached)
        first_took = time.monotonic() - started
        assert [a.agent_id for a in first.agents] == [f"{unique}-3"]
        assert first.datacenters_tried == ("dc1", "dc2", "dc3")
        started = time.monotonic()
        second = await registry.discover(request, cached=cached)
        second_took = time.monotonic() - started
        assert second.datacenter == "dc3" and second.datacenters_tried == ("dc1", "dc3")
        assert first_took + second_took < timeout + SLACK, (first_took, second_took)
        started = time.monotonic()
        with pytest.raises(RegistryTimeoutError) as caught:
            await registry.discover(DiscoveryRequest(agent_type=unique, region="dc2"), cached=cached)
        assert time.monotonic() - started < timeout + SLACK
    assert caught.value.datacenter == "dc2" and "'dc2'" in str(caught.value)


async def test_warm_cache_fails_over_from_a_frozen_datacenter(
    datacenters: Datacenters, frozen_dc2: ConsulDevServer, unique: str
) -> None:
    """A cached client serving dc2's agents moves on to dc3 within about its timeout once dc2 freezes,
    instead of serving the frozen datacenter's agents until max_stale (about 50 s before)."""
    dc1, dc2, dc3 = datacenters
    await _register_in(dc2, unique, f"{unique}-2")
    await _register_in(dc3, unique, f"{unique}-3")
    timeout = 3.0
    async with AgentRegistry(dc1.http_addr, timeout=timeout, failover_datacenters=["dc2", "dc3"]) as registry:
        request = DiscoveryRequest(agent_type=unique)
        warm = await registry.discover(request)
        assert warm.datacenter == "dc2" and warm.staleness == 0
        stop_process(frozen_dc2.pid or 0)
        frozen_at = time.monotonic()

        async def moved() -> bool:
            return (await registry.discover(request)).datacenter == "dc3"

        await eventually(moved, 15, "failover from frozen dc2 to dc3")
        took = time.monotonic() - frozen_at
        answer = await registry.discover(request)
        assert [a.agent_id for a in answer.agents] == [f"{unique}-3"] and answer.staleness == 0
    assert took < timeout * 17 / 16 + 1.0 + SLACK, f"failover after {took:.1f}s"


async def test_dead_datacenter_does_not_count_and_is_named(
    datacenters: Datacenters, make_consul: MakeConsul, unique: str
) -> None:
    """A datacenter whose servers died is skipped without counting against max_failover (max_failover=1,
    order dead, dc2: dc2 still answers, selection too), and asking it by region raises, without 1.8 s of
    RPC-error retries, a RegistryUnavailableError naming it, not the local Consul's address."""
    dc1, dc2, _ = datacenters
    dead = await asyncio.to_thread(make_consul, datacenter=f"dead{unique[-4:]}")
    await asyncio.to_thread(dc1.join_wan, dead)
    await asyncio.to_thread(dead.kill)
    await _register_in(dc2, unique, f"{unique}-2")
    timeout = 4.0
    async with AgentRegistry(
        dc1.http_addr, timeout=timeout, max_failover=1, failover_datacenters=[dead.datacenter, "dc2"]
    ) as registry:
        for cached in (False, True):
            started = time.monotonic()
            result = await registry.discover(DiscoveryRequest(agent_type=unique), cached=cached)
            assert time.monotonic() - started < timeout + SLACK
            assert [a.agent_id for a in result.agents] == [f"{unique}-2"], cached
            assert result.datacenter == "dc2"
        chosen = await registry.select_agent(SelectionCriteria(agent_type=unique), cached=False)
        assert chosen is not None and chosen.datacenter == "dc2"
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError) as caught:
            await registry.discover(DiscoveryRequest(agent_type=unique, region=dead.datacenter), cached=False)
        refused_after = time.monotonic() - started
    assert refused_after < 1.2, f"a dead datacenter took {refused_after:.2f}s to refuse (1.8 s of retries)"
    assert caught.value.datacenter == dead.datacenter
    assert repr(dead.datacenter) in str(caught.value)


async def test_region_that_just_joined_is_known(
    datacenters: Datacenters, make_consul: MakeConsul, unique: str
) -> None:
    """A datacenter that joined over WAN after the client listed the datacenters is accepted as a region
    at once (the list is re-read before refusing), and an unknown region is still refused."""
    dc1, _, _ = datacenters
    async with AgentRegistry(dc1.http_addr) as registry:
        assert "dc2" in await registry.discovery.datacenters()
        late = await asyncio.to_thread(make_consul, datacenter=f"late{unique[-4:]}")
        await asyncio.to_thread(dc1.join_wan, late)
        await _register_in(late, unique, f"{unique}-late")
        result = await registry.discover(DiscoveryRequest(agent_type=unique, region=late.datacenter))
        assert [a.agent_id for a in result.agents] == [f"{unique}-late"]
        with pytest.raises(ValueError, match="not a known Consul datacenter"):
            await registry.discover(DiscoveryRequest(agent_type=unique, region="nowhere"))
