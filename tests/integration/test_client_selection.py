"""select_agent and leases against a real Consul: in-flight accounting, failover with exclude, outlier
ejection, and bad input."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
from support import registration

from consul_agents import (
    AgentRegistry,
    DiscoveryRequest,
    InvalidAgentError,
    NoAgentAvailableError,
    SelectionCriteria,
)
from consul_agents._lease import OutlierPolicy


class Boom(Exception):
    pass


@pytest.fixture
async def registry(consul_addr: str) -> AsyncIterator[AgentRegistry]:
    policy = OutlierPolicy(consecutive_failures=2, base_ejection=60.0, max_ejection=120.0)
    async with AgentRegistry(consul_addr, outlier_policy=policy) as reg:
        yield reg


async def fleet(registry: AgentRegistry, agent_type: str, count: int) -> list[str]:
    return [
        await registry.register_agent(
            registration(agent_type, endpoint=f"http://127.0.0.1:{9000 + i}", agent_id=f"{agent_type}-{i}")
        )
        for i in range(count)
    ]


async def test_lease_counts_in_flight(registry: AgentRegistry, unique: str) -> None:
    """While a lease is held its agent counts as loaded, so nested least_loaded leases spread over the
    agents; the count drops when the block ends."""
    ids = await fleet(registry, unique, 3)
    criteria = SelectionCriteria(agent_type=unique, strategy="least_loaded")
    async with registry.lease(criteria) as a, registry.lease(criteria) as b, registry.lease(criteria) as c:
        assert sorted({a.agent_id, b.agent_id, c.agent_id}) == sorted(ids)
        assert registry._selection.in_flight == {a.agent_id: 1, b.agent_id: 1, c.agent_id: 1}
    assert registry._selection.in_flight == {}


async def test_exclude_fails_over_to_another_agent(registry: AgentRegistry, unique: str) -> None:
    """After an agent failed, selecting with it excluded returns another; excluding all returns None and a
    lease raises NoAgentAvailableError."""
    ids = await fleet(registry, unique, 2)
    for strategy in ("round_robin", "weighted_random", "least_loaded", "power_of_two"):
        first = await registry.select_agent(SelectionCriteria(agent_type=unique, strategy=strategy))
        assert first is not None
        other = await registry.select_agent(
            SelectionCriteria(agent_type=unique, strategy=strategy, exclude=[first.agent_id])
        )
        assert other is not None and other.agent_id != first.agent_id
    everyone = SelectionCriteria(agent_type=unique, exclude=ids)
    assert await registry.select_agent(everyone) is None
    with pytest.raises(NoAgentAvailableError):
        async with registry.lease(everyone):
            pass


async def test_failing_agent_is_ejected(registry: AgentRegistry, unique: str) -> None:
    """Two failed leases in a row eject an agent: later selections avoid it, successes of others do not
    bring it back, and the failure still reaches the caller."""
    ids = await fleet(registry, unique, 3)
    bad = ids[0]
    only_bad = SelectionCriteria(agent_type=unique, exclude=ids[1:])
    for _ in range(2):
        with pytest.raises(Boom):
            async with registry.lease(only_bad) as agent:
                assert agent.agent_id == bad
                raise Boom
    assert registry.outliers.ejected_now() == {bad}
    for strategy in ("round_robin", "weighted_random", "least_loaded", "power_of_two"):
        for _ in range(12):
            async with registry.lease(SelectionCriteria(agent_type=unique, strategy=strategy)) as agent:
                assert agent.agent_id != bad
    # ejection never empties the pool: with only the bad agent left it is still chosen
    assert (await registry.select_agent(only_bad)) is not None


async def test_cancelled_lease_is_not_a_failure(registry: AgentRegistry, unique: str) -> None:
    """A lease ended by cancellation counts neither as failure nor as success."""
    await fleet(registry, unique, 1)
    criteria = SelectionCriteria(agent_type=unique)
    for _ in range(3):
        with pytest.raises(asyncio.CancelledError):
            async with registry.lease(criteria):
                raise asyncio.CancelledError
    assert registry.outliers.ejected_now() == set()


@pytest.mark.parametrize(
    "bad",
    [
        {"strategy": "fastest"},
        {"max_load": math.nan},
        {"max_load": -0.1},
        {"exclude": "a-string"},
    ],
)
def test_bad_criteria_are_rejected(bad: dict[str, object]) -> None:
    """An unknown strategy, a NaN or negative max_load or a malformed exclude raise InvalidAgentError."""
    with pytest.raises(InvalidAgentError):
        SelectionCriteria(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("cached", [True, False])
async def test_unknown_region_is_invalid(registry: AgentRegistry, cached: bool) -> None:
    """A region that is not a Consul datacenter raises InvalidAgentError naming it, cached or not."""
    with pytest.raises(InvalidAgentError, match="nowhere"):
        await registry.discover_agents(DiscoveryRequest(region="nowhere"), cached=cached)
    with pytest.raises(InvalidAgentError, match="nowhere"):
        await registry.select_agent(SelectionCriteria(region="nowhere"), cached=cached)


def test_bad_client_options_are_rejected() -> None:
    """Negative or NaN max_stale and negative max_failover raise InvalidAgentError."""
    for kwargs in ({"max_stale": -1.0}, {"max_stale": math.nan}, {"max_failover": -1}):
        with pytest.raises(InvalidAgentError):
            AgentRegistry("http://127.0.0.1:8500", **kwargs)  # type: ignore[arg-type]
