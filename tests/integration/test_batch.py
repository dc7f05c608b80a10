"""register_many / deregister_many against a real Consul: validated first, bounded, every item reported."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import consul_get, registration

from consul_agents import AgentRegistry, InvalidAgentError
from consul_agents._batch import MAX_BATCH, InvalidBatchError


def _item(agent_type: str, i: int, **fields: Any) -> dict[str, Any]:
    return {
        "agent_type": agent_type,
        "agent_id": f"{agent_type}-{i}",
        "capabilities": ["plan"],
        "endpoint": f"http://127.0.0.1:{31000 + i}",
        "metadata": {"i": i},
        **fields,
    }


def _catalog_ids(consul_addr: str, agent_type: str) -> set[str]:
    entries, _ = consul_get(consul_addr, f"/v1/health/service/agent-{agent_type}")
    return {e["Service"]["ID"] for e in entries}


async def test_register_many_registers_every_item_with_its_metadata(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """Every item of a batch of dicts is registered and reported ok, with its metadata readable back."""
    result = await registry.register_many([_item(unique, i) for i in range(12)], concurrency=4)
    assert result.ok and [r.index for r in result.results] == list(range(12))
    assert [r.agent_id for r in result.results] == [f"{unique}-{i}" for i in range(12)]
    assert _catalog_ids(consul_addr, unique) == {f"{unique}-{i}" for i in range(12)}
    assert (await registry.get_agent(f"{unique}-7")).metadata == {"i": 7}
    removed = await registry.deregister_many([f"{unique}-{i}" for i in range(12)] + [f"{unique}-gone"])
    assert removed.ok and [r.removed for r in removed.results] == [True] * 12 + [False]
    assert _catalog_ids(consul_addr, unique) == set()


async def test_an_invalid_batch_writes_nothing_and_names_every_invalid_item(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """A batch with a bad endpoint, a missing field and a duplicate id is refused whole: each invalid item
    is named by index and field, and none of the valid items reaches Consul."""
    items = [
        _item(unique, 0),
        _item(unique, 1, endpoint="nowhere"),
        _item(unique, 2),
        {"agent_type": unique, "endpoint": "http://127.0.0.1:1"},
        _item(unique, 0, endpoint="http://127.0.0.1:2"),
        "not an object",
    ]
    with pytest.raises(InvalidBatchError) as refused:
        await registry.register_many(items)  # type: ignore[arg-type]
    invalid = {(i.index, i.field) for i in refused.value.invalid}
    assert invalid == {(1, "endpoint"), (3, "capabilities"), (4, "agent_id"), (5, None)}
    assert "nothing written" in str(refused.value) and "[1]" in str(refused.value)
    assert _catalog_ids(consul_addr, unique) == set()


async def test_deregister_many_refuses_bad_ids_before_removing_any(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """A deregistration batch with a path-escaping id or a duplicate removes nothing."""
    agent_id = await registry.register_agent(registration(unique, agent_id=f"{unique}-a"))
    with pytest.raises(InvalidBatchError) as refused:
        await registry.deregister_many([agent_id, "../kv/x", agent_id.upper()])
    assert {i.index for i in refused.value.invalid} == {1, 2}
    assert _catalog_ids(consul_addr, unique) == {agent_id}
    await registry.deregister_agent(agent_id)


async def test_batch_size_and_concurrency_are_bounded(registry: AgentRegistry, unique: str) -> None:
    """More than MAX_BATCH items, or a concurrency outside 1..64, is refused before anything is written."""
    with pytest.raises(InvalidAgentError, match=f"at most {MAX_BATCH}"):
        await registry.register_many([_item(unique, i) for i in range(MAX_BATCH + 1)])
    with pytest.raises(InvalidAgentError, match="concurrency"):
        await registry.deregister_many([f"{unique}-1"], concurrency=0)


async def test_at_most_concurrency_registrations_are_in_flight(
    registry: AgentRegistry, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    """register_many never has more than ``concurrency`` registrations with Consul at once."""
    real = registry.register_agent
    running = peak = 0

    async def counting(*args: Any, **kwargs: Any) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return await real(*args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(registry, "register_agent", counting)
    result = await registry.register_many([_item(unique, i) for i in range(20)], concurrency=3)
    assert result.ok and peak == 3
    await registry.deregister_many([f"{unique}-{i}" for i in range(20)])


async def test_a_failing_item_is_reported_and_the_others_proceed(
    consul_addr: str, registry: AgentRegistry, unique: str
) -> None:
    """An item Consul-side refused (its id held by an agent of another type) is reported with the error's
    class and message, while every other item of the batch is registered."""
    async with AgentRegistry(consul_addr) as other:
        held = await other.register_agent(registration(f"{unique}o", agent_id=f"{unique}-1"))
        result = await registry.register_many([_item(unique, i) for i in range(4)])
        assert not result.ok
        (failed,) = result.failed
        assert (failed.index, failed.agent_id, failed.error) == (1, held, "InvalidAgentError")
        assert "held by an agent of type" in (failed.message or "")
        assert [r.index for r in result.succeeded] == [0, 2, 3]
        assert (await registry.get_agent(held)).agent_type == f"{unique}o"
        await other.deregister_agent(held)
    await registry.deregister_many([f"{unique}-{i}" for i in (0, 2, 3)])


async def test_unreachable_consul_reports_every_item(unique: str) -> None:
    """Against a Consul that does not answer, no item is lost: each one is reported with its error."""
    async with AgentRegistry("http://127.0.0.1:1", timeout=2) as dead:
        result = await dead.register_many([_item(unique, i) for i in range(5)], concurrency=2)
    assert [r.error for r in result.results] == ["RegistryUnavailableError"] * 5
    assert all(r.message and not r.ok for r in result.results)


async def test_the_batch_timeout_bounds_the_whole_batch(registry: AgentRegistry, unique: str) -> None:
    """With a batch timeout shorter than its work, the call returns by the deadline and reports the items
    it did not finish as timed out (none is silently dropped)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await registry.register_many([_item(unique, i) for i in range(40)], concurrency=1, timeout=0.05)
    assert loop.time() - started < 2.0
    assert len(result.results) == 40
    timed_out = [r for r in result.failed if r.error == "RegistryTimeoutError"]
    assert timed_out and len(result.succeeded) + len(timed_out) == 40
    await registry.deregister_many([r.agent_id for r in result.succeeded if r.agent_id])


async def test_cancelling_a_batch_propagates_and_stops_its_items(
    registry: AgentRegistry, unique: str
) -> None:
    """Cancelling register_many cancels the items still waiting and raises CancelledError to the caller."""
    task = asyncio.create_task(registry.register_many([_item(unique, i) for i in range(200)], concurrency=1))
    await asyncio.sleep(0)  # let it start
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = {a.agent_id for a in await registry.discover_agents()} & {f"{unique}-{i}" for i in range(200)}
    assert len(done) < 200
    await registry.deregister_many(sorted(done))
