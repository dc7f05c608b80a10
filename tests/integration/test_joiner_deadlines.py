"""A caller that waits for something another caller began (a watch start, the write lock of an agent)
waits at most its own deadline, against a frozen (SIGSTOPped) Consul; its timeout never ends what the
other caller still waits for."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import skip_if_external
from support import eventually, registration, stop_process

from consul_agents import AgentRegistry, DiscoveryRequest, RegistryTimeoutError
from consul_agents._gateway import call_deadline
from consul_agents.dev import ConsulDevServer

#: What a call may take beyond its deadline on a loaded 2-core machine.
SLACK = 1.5
STARTER_TIMEOUT = 8.0
JOINER_DEADLINE = 1.0


@pytest.fixture(scope="module")
def _consul() -> Iterator[ConsulDevServer]:
    """A dev agent of this module's own: the tests freeze it."""
    skip_if_external()
    with ConsulDevServer() as server:
        yield server


@pytest.fixture
async def frozen_later(_consul: ConsulDevServer) -> AsyncIterator[ConsulDevServer]:
    """The module's dev agent; SIGCONTed after the test whatever the test froze."""
    yield _consul
    assert _consul.pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(_consul.pid, signal.SIGCONT)


@pytest.mark.parametrize("typed", [True, False], ids=["service-watch", "catalog-watch"])
async def test_a_joiner_of_a_watch_start_is_bounded_by_its_own_deadline(
    frozen_later: ConsulDevServer, unique: str, typed: bool
) -> None:
    """With Consul frozen, a discovery joining a watch start begun by a caller with an 8 s timeout raises
    RegistryTimeoutError within its own 1 s deadline (plus slack), and the start goes on: once Consul
    answers again, the caller that began it gets its answer."""
    server = frozen_later
    async with AgentRegistry(server.http_addr, timeout=STARTER_TIMEOUT) as registry:
        agent_id = await registry.register_agent(registration(unique))

        async def visible() -> bool:
            request = DiscoveryRequest(agent_type=unique)
            return bool(await registry.discover_agents(request, cached=False))

        await eventually(visible, 10, f"{unique} in the catalog")
        await registry.discovery.datacenters()  # known before the freeze: failover has nothing to read
        question = DiscoveryRequest(agent_type=unique) if typed else DiscoveryRequest(capabilities=["plan"])
        cache = registry.discovery.cache
        assert server.pid is not None
        stop_process(server.pid)
        starter = asyncio.create_task(registry.discover(question))

        async def starting() -> bool:
            return bool(cache._starting)

        await eventually(starting, 5, "the starter's watch start")
        started = time.monotonic()
        with pytest.raises(RegistryTimeoutError), call_deadline(JOINER_DEADLINE):
            await registry.discover(question)
        elapsed = time.monotonic() - started
        assert elapsed < JOINER_DEADLINE + SLACK, f"the joiner waited {elapsed:.1f}s"
        assert cache._starting and not starter.done(), "the joiner's timeout ended the shared start"
        os.kill(server.pid, signal.SIGCONT)
        answer = await asyncio.wait_for(starter, STARTER_TIMEOUT + SLACK)
        assert agent_id in [agent.agent_id for agent in answer.agents]
        assert answer.cached


async def test_a_write_waiting_for_another_write_of_the_agent_is_bounded_by_its_own_deadline(
    frozen_later: ConsulDevServer, unique: str
) -> None:
    """With Consul frozen during a re-registration (timeout 8 s) of an agent, a heartbeat of the same agent
    under a 1 s deadline, which waits for the agent's write lock, raises RegistryTimeoutError within 1 s
    plus slack; the re-registration goes on and succeeds once Consul answers again."""
    server = frozen_later
    async with AgentRegistry(server.http_addr, timeout=STARTER_TIMEOUT) as registry:
        agent = registration(unique)
        agent_id = await registry.register_agent(agent)
        assert server.pid is not None
        stop_process(server.pid)
        again = agent.model_copy(update={"agent_id": agent_id})
        first = asyncio.create_task(registry.register_agent(again))
        locks = registry._write_locks._locks

        async def held() -> bool:
            return agent_id in locks and locks[agent_id][0].locked()

        await eventually(held, 5, "the first write holding the agent's lock")
        started = time.monotonic()
        with pytest.raises(RegistryTimeoutError), call_deadline(JOINER_DEADLINE):
            await registry.heartbeat(agent_id, load=0.5)
        elapsed = time.monotonic() - started
        assert elapsed < JOINER_DEADLINE + SLACK, f"the second write waited {elapsed:.1f}s"
        assert not first.done(), "the second write's timeout ended the first"
        os.kill(server.pid, signal.SIGCONT)
        assert await asyncio.wait_for(first, STARTER_TIMEOUT + SLACK) == agent_id
