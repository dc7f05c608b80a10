"""lease(..., retries=n) against real agents in Consul: moves to another agent on failure, one deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from support import registration

from consul_agents import AgentRegistry, InvalidAgentError, NoAgentAvailableError, SelectionCriteria


class AgentDown(ConnectionError):
    """What a caller's own client raises when the agent it called does not answer."""


@pytest.fixture
async def three(registry: AgentRegistry, unique: str) -> AsyncIterator[list[str]]:
    """Three passing agents of one new type."""
    ids = [await registry.register_agent(registration(unique, agent_id=f"{unique}-{i}")) for i in range(3)]
    yield ids
    await registry.deregister_many(ids)


def _criteria(agent_type: str) -> SelectionCriteria:
    return SelectionCriteria(agent_type=agent_type, strategy="round_robin")


async def test_a_failing_body_moves_to_another_agent(
    registry: AgentRegistry, three: list[str], unique: str
) -> None:
    """The body raising on its first two agents runs a third time on the one agent not yet tried, and the
    lease then ends well; every failed agent counted a failure."""
    tried: list[str] = []
    async for attempt in registry.lease(_criteria(unique), retries=2):
        async with attempt as agent:
            tried.append(agent.agent_id)
            if len(tried) < 3:
                raise AgentDown(f"{agent.agent_id} refused the connection")
    assert sorted(tried) == sorted(three) and len(set(tried)) == 3
    assert all(registry.leases_in_flight(a) == 0 for a in three)


async def test_only_named_exception_classes_are_retried(
    registry: AgentRegistry, three: list[str], unique: str
) -> None:
    """With retry_on naming ConnectionError, a ValueError from the body propagates at once, no retry."""
    tried: list[str] = []
    with pytest.raises(ValueError, match="bad answer"):
        async for attempt in registry.lease(_criteria(unique), retries=2, retry_on=(ConnectionError,)):
            async with attempt as agent:
                tried.append(agent.agent_id)
                raise ValueError("bad answer")
    assert len(tried) == 1


async def test_the_last_failure_propagates_after_the_retries(
    registry: AgentRegistry, three: list[str], unique: str
) -> None:
    """retries=1: two agents tried, then the second failure itself propagates."""
    tried: list[str] = []
    with pytest.raises(AgentDown, match="second"):
        async for attempt in registry.lease(_criteria(unique), retries=1):
            async with attempt as agent:
                tried.append(agent.agent_id)
                raise AgentDown("first" if len(tried) == 1 else "second")
    assert len(set(tried)) == 2


async def test_no_agent_left_to_retry_says_so(registry: AgentRegistry, unique: str) -> None:
    """With one agent only, a retry finds nobody: NoAgentAvailableError naming the failed agent, caused by
    the body's failure."""
    only = await registry.register_agent(registration(unique, agent_id=f"{unique}-only"))
    try:
        with pytest.raises(NoAgentAvailableError, match=f"{only}") as error:
            async for attempt in registry.lease(_criteria(unique), retries=3):
                async with attempt:
                    raise AgentDown("down")
        assert isinstance(error.value.__cause__, AgentDown)
    finally:
        await registry.deregister_agent(only)


async def test_the_timeout_bounds_every_attempt_together(
    registry: AgentRegistry, three: list[str], unique: str
) -> None:
    """A body that hangs is cancelled when the lease's one deadline passes: TimeoutError, no more retries,
    and the agent's lease is released."""
    tried: list[str] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async for attempt in registry.lease(_criteria(unique), retries=2, timeout=0.5):
            async with attempt as agent:
                tried.append(agent.agent_id)
                if len(tried) == 1:
                    raise AgentDown("down")
                await asyncio.Event().wait()  # hangs until the deadline cancels it
    assert 0.4 < time.monotonic() - started < 3.0
    assert len(tried) == 2
    assert all(registry.leases_in_flight(a) == 0 for a in three)


async def test_cancellation_is_not_retried(registry: AgentRegistry, three: list[str], unique: str) -> None:
    """Cancelling a retrying lease propagates CancelledError from the first attempt, with no retry."""
    tried: list[str] = []
    entered = asyncio.Event()

    async def run() -> None:
        async for attempt in registry.lease(_criteria(unique), retries=2):
            async with attempt as agent:
                tried.append(agent.agent_id)
                entered.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(tried) == 1 and all(registry.leases_in_flight(a) == 0 for a in three)


async def test_async_with_and_retries_do_not_mix(registry: AgentRegistry, unique: str) -> None:
    """`async with` on a lease with retries is refused with a message showing the async-for form; bad
    retries and retry_on values are refused too."""
    with pytest.raises(InvalidAgentError, match="async for attempt"):
        async with registry.lease(_criteria(unique), retries=1):
            pass
    with pytest.raises(InvalidAgentError, match="retries"):
        registry.lease(_criteria(unique), retries=-1)
    with pytest.raises(InvalidAgentError, match="retry_on"):
        registry.lease(_criteria(unique), retry_on=())
