"""Every call ends within its timeout against a Consul that hangs (SIGSTOPped) or has no leader (a
``-server -bootstrap-expect 2`` agent alone); a hang shows as staleness within about the timeout; sessions
cancelled during a hang clean up within one timeout in all and stay cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack

import pytest
from conftest import MakeConsul, skip_if_external
from support import eventually, registration, stop_process

from consul_agents import (
    AgentRegistry,
    DiscoveryRequest,
    RegistryTimeoutError,
    RegistryUnavailableError,
    SelectionCriteria,
)
from consul_agents.cluster import ConsulCluster
from consul_agents.dev import ConsulDevServer

#: What a call may take beyond its timeout on a loaded 2-core machine (the old code took 2x to 4x).
SLACK = 1.5


class LeaderlessServer(ConsulDevServer):
    """A server agent expecting a second server that never comes: it answers HTTP, but has no leader."""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.get_json("/v1/agent/self") is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"leaderless agent not answering after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def leaderless() -> Iterator[LeaderlessServer]:
    """One server agent with bootstrap_expect=2, alone: Consul holds consistent reads ~7 s, then 500."""
    skip_if_external()
    with LeaderlessServer(dev_mode=False, bootstrap_expect=2) as server:
        yield server


@pytest.fixture
def freeze() -> Iterator[Callable[[ConsulDevServer], None]]:
    """SIGSTOP a Consul agent (it then accepts connections and never answers); every agent frozen is
    SIGCONTed at teardown."""
    frozen: list[int] = []

    def stop(server: ConsulDevServer) -> None:
        assert server.pid is not None
        stop_process(server.pid)
        frozen.append(server.pid)

    yield stop
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.fixture
async def hung_agent(
    make_consul: MakeConsul, freeze: Callable[[ConsulDevServer], None]
) -> AsyncIterator[tuple[ConsulDevServer, Callable[[], None]]]:
    """A private dev agent and the function that freezes it."""
    server = await asyncio.to_thread(make_consul)
    yield server, lambda: freeze(server)


async def _visible(registry: AgentRegistry, agent_type: str) -> None:
    """Poll until a direct discovery of ``agent_type`` finds an agent (the catalog follows the agent)."""

    async def found() -> bool:
        return bool(await registry.discover_agents(DiscoveryRequest(agent_type=agent_type), cached=False))

    await eventually(found, 10, f"{agent_type} in the catalog")


@pytest.mark.parametrize("call", ["get_agent", "discover_direct"])
async def test_no_leader_is_not_retried_past_the_timeout(leaderless: LeaderlessServer, call: str) -> None:
    """Against a Consul with no leader (each consistent read held ~7 s, then "No cluster leader"), a call
    with timeout=9 ends within 9 s plus slack with RegistryUnavailableError, instead of retrying (22 s)."""
    async with AgentRegistry(leaderless.http_addr, timeout=9.0) as registry:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError) as caught:
            if call == "get_agent":
                await registry.get_agent("somebody-1")
            else:
                await registry.discover_agents(DiscoveryRequest(agent_type="somebody"), cached=False)
        elapsed = time.monotonic() - started
    assert elapsed < 9.0 + SLACK, f"{call} took {elapsed:.1f}s"
    assert "leader" in str(caught.value).lower() or isinstance(caught.value, RegistryTimeoutError)


async def test_direct_discovery_against_a_hung_agent_ends_within_the_timeout(
    hung_agent: tuple[ConsulDevServer, Callable[[], None]], unique: str
) -> None:
    """A direct discovery against a frozen Consul raises RegistryTimeoutError within one timeout: the
    failover that follows the local failure spends the same deadline, not a second one."""
    server, freeze = hung_agent
    async with AgentRegistry(server.http_addr, timeout=4.0) as registry:
        await registry.register_agent(registration(unique))
        await _visible(registry, unique)
        freeze()
        started = time.monotonic()
        with pytest.raises(RegistryTimeoutError):
            await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=False)
        elapsed = time.monotonic() - started
    assert elapsed < 4.0 + SLACK, f"took {elapsed:.1f}s"


async def test_select_against_a_hung_agent_ends_within_the_timeout(
    hung_agent: tuple[ConsulDevServer, Callable[[], None]], unique: str
) -> None:
    """select_agent (which nests a discovery) and a fresh cached discovery of a new type against a
    frozen Consul each end within one timeout."""
    server, freeze = hung_agent
    async with AgentRegistry(server.http_addr, timeout=3.0) as registry:
        await registry.register_agent(registration(unique))
        await _visible(registry, unique)
        freeze()
        for name, call in {
            "select": lambda: registry.select_agent(SelectionCriteria(agent_type=unique), cached=False),
            "cached": lambda: registry.discover(DiscoveryRequest(agent_type=unique + "x")),
        }.items():
            started = time.monotonic()
            with pytest.raises(RegistryUnavailableError):
                await call()
            elapsed = time.monotonic() - started
            assert elapsed < 3.0 + SLACK, f"{name} took {elapsed:.1f}s"


async def test_hung_agent_shows_as_staleness_within_the_timeout(
    hung_agent: tuple[ConsulDevServer, Callable[[], None]], unique: str
) -> None:
    """A warm cache notices a frozen Consul within about its timeout (not after a blocking wait plus a
    timeout, 20 s by default): staleness turns positive while the last answer keeps being served."""
    server, freeze = hung_agent
    timeout = 3.0
    async with AgentRegistry(server.http_addr, timeout=timeout) as registry:
        agent_id = await registry.register_agent(registration(unique))
        request = DiscoveryRequest(agent_type=unique)
        typeless = DiscoveryRequest(capabilities=["plan"])  # the catalog watch too
        for question in (request, typeless):
            fresh = await registry.discover(question)
            assert [a.agent_id for a in fresh.agents] == [agent_id] and fresh.staleness == 0
        freeze()
        frozen_at = time.monotonic()

        async def stale() -> bool:
            return (await registry.discover(request)).staleness > 0 and (
                await registry.discover(typeless)
            ).staleness > 0

        await eventually(stale, timeout * 17 / 16 + 1.0 + SLACK + 2.0, "staleness reported")
        noticed = time.monotonic() - frozen_at
        served = await registry.discover(request)
        assert [a.agent_id for a in served.agents] == [agent_id]
        assert served.agents[0].staleness == served.staleness > 0
    assert noticed < timeout * 17 / 16 + 1.0 + SLACK, f"hang noticed after {noticed:.1f}s"


async def test_cancelled_sessions_clean_up_within_one_timeout_and_stay_cancelled(
    hung_agent: tuple[ConsulDevServer, Callable[[], None]], unique: str
) -> None:
    """Cancelling a task holding three sessions while Consul hangs ends within one timeout in all (not one
    per session) and raises CancelledError, not the cleanup's RegistryTimeoutError."""
    server, freeze = hung_agent
    timeout = 2.0
    async with AgentRegistry(server.http_addr, timeout=timeout) as registry:
        entered = asyncio.Event()

        async def hold() -> None:
            async with AsyncExitStack() as stack:
                for i in range(3):
                    await stack.enter_async_context(
                        registry.session(registration(unique, agent_id=f"{unique}-{i}"))
                    )
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hold())
        await asyncio.wait_for(entered.wait(), 10)
        freeze()
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        elapsed = time.monotonic() - started
    assert elapsed < timeout + SLACK, f"cleanup took {elapsed:.1f}s"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ConsulCluster]:
    """Three Consul servers (no client agent): the tests talk to one follower's HTTP API directly."""
    skip_if_external()
    with ConsulCluster(client=False) as started:
        yield started


@pytest.fixture
async def cut_off_follower(
    cluster: ConsulCluster, freeze: Callable[[ConsulDevServer], None]
) -> AsyncIterator[tuple[ConsulDevServer, Callable[[], None]]]:
    """A follower, and the function that freezes the two other servers so it loses its leader; they are
    thawed at teardown, which waits for a leader again."""
    leader = await asyncio.to_thread(cluster.wait_for_leader, 30)
    follower = next(s for s in cluster.servers if s is not leader)
    others = [s for s in cluster.servers if s is not follower]

    def cut_off() -> None:
        for server in others:
            freeze(server)

    yield follower, cut_off
    for server in others:
        assert server.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGCONT)
    await asyncio.to_thread(cluster.wait_for_leader, 60, peers=3)


async def test_cache_counts_a_followers_lag_behind_its_lost_leader(
    cut_off_follower: tuple[ConsulDevServer, Callable[[], None]], unique: str
) -> None:
    """A cache reading from a follower that lost its leader reports staleness from what Consul says
    (X-Consul-KnownLeader false, X-Consul-LastContact growing), instead of 0 for as long as it lasts."""
    follower, cut_off = cut_off_follower
    async with AgentRegistry(follower.http_addr, timeout=3.0) as registry:
        agent_id = await registry.register_agent(registration(unique))
        request = DiscoveryRequest(agent_type=unique)

        async def cached() -> bool:
            return [a.agent_id for a in (await registry.discover(request)).agents] == [agent_id]

        await eventually(cached, 10, "agent in the cache")
        cut_off()

        async def stale() -> bool:
            result = await registry.discover(request)
            return result.staleness > 0 and not result.known_leader

        await eventually(stale, 15, "staleness from Consul's lag headers")
        result = await registry.discover(request)
        assert [a.agent_id for a in result.agents] == [agent_id] and result.staleness > 0


async def test_max_stale_is_passed_to_consul(
    cut_off_follower: tuple[ConsulDevServer, Callable[[], None]], unique: str
) -> None:
    """Direct stale reads from a follower cut off from its leader report its lag as staleness, and once
    the lag passes max_stale Consul re-asks the (missing) leader, so the read fails instead of serving an
    ever older copy."""
    follower, cut_off = cut_off_follower
    async with AgentRegistry(follower.http_addr, timeout=3.0, stale_reads=True, max_stale=4.0) as registry:
        agent_id = await registry.register_agent(registration(unique))
        request = DiscoveryRequest(agent_type=unique)
        await _visible(registry, unique)
        cut_off()
        lagging: list[float] = []

        async def refused() -> bool:
            try:
                result = await registry.discover(request, cached=False)
            except RegistryUnavailableError:
                return True
            assert [a.agent_id for a in result.agents] == [agent_id]
            lagging.append(result.staleness)
            return False

        await eventually(refused, 20, "direct stale read refused beyond max_stale")
        assert any(staleness > 0 for staleness in lagging), lagging
