"""100 concurrent tasks on one AgentRegistry: no registration lost, duplicated or mixed up."""

from __future__ import annotations

import asyncio

from consul_agents import AgentInfo, AgentRegistration, AgentRegistry, DiscoveryRequest

TASKS = 100
PER_TASK = 3


def task_registration(agent_type: str, task: int, n: int, *, with_id: bool) -> AgentRegistration:
    """Every field derives from (task, n), so a mixed-up registration shows as a field that does not match."""
    return AgentRegistration(
        agent_type=agent_type,
        capabilities=[f"task{task}", f"n{n}"],
        endpoint=f"http://127.0.0.1:{20000 + task * 10 + n}",
        tags={"task": str(task), "n": str(n)},
        # Every third one is large enough to live in Consul's KV store (a second write per registration).
        metadata={"task": task, "n": n, "pad": "x" * (2000 if n == 2 else 10)},
        weight=1 + task,
        agent_id=f"{agent_type}-{task}-{n}" if with_id else None,
    )


def assert_matches(info: AgentInfo, task: int, n: int, load: float) -> None:
    assert sorted(info.capabilities) == sorted([f"task{task}", f"n{n}"])
    assert info.endpoint == f"http://127.0.0.1:{20000 + task * 10 + n}"
    assert info.tags == {"task": str(task), "n": str(n)}
    assert info.metadata["task"] == task and info.metadata["n"] == n
    assert info.weight == 1 + task
    assert info.current_load == load


async def test_100_concurrent_tasks_register_heartbeat_and_deregister(
    registry: AgentRegistry, unique: str
) -> None:
    """100 tasks each register agents (half with generated ids), heartbeat them with their own loads and
    deregister some, all at once: the catalog ends with exactly the expected agents, each with its own
    fields."""

    async def one_task(task: int) -> list[tuple[str, int, float]]:
        mine: list[tuple[str, int, float]] = []
        for n in range(PER_TASK):
            agent_id = await registry.register_agent(
                task_registration(unique, task, n, with_id=task % 2 == 0)
            )
            # Distinct per agent, and at least load_threshold away from the registered 0 so it is published.
            load = round(0.05 + 0.9 * (task * PER_TASK + n) / (TASKS * PER_TASK), 3)
            await registry.heartbeat(agent_id, load=load)
            mine.append((agent_id, n, load))
        # Each task removes its first agent again, racing the other tasks' registrations.
        assert await registry.deregister_agent(mine[0][0])
        return mine[1:]

    per_task = await asyncio.gather(*(one_task(t) for t in range(TASKS)))
    expected = {agent_id: (task, n, load) for task, mine in enumerate(per_task) for agent_id, n, load in mine}
    assert len(expected) == TASKS * (PER_TASK - 1), "two tasks were handed the same generated id"

    found = await registry.discover_agents(DiscoveryRequest(agent_type=unique))
    ids = [info.agent_id for info in found]
    assert len(ids) == len(set(ids)), "an agent is listed twice"
    assert set(ids) == set(expected)
    for info in found:
        task, n, load = expected[info.agent_id]
        assert_matches(info, task, n, load)

    # Concurrent reads see the same answer as each other.
    answers = await asyncio.gather(
        *(
            registry.discover_agents(DiscoveryRequest(agent_type=unique, capabilities=[f"task{t}"]))
            for t in range(TASKS)
        )
    )
    for task, answer in enumerate(answers):
        assert sorted(info.agent_id for info in answer) == sorted(
            a for a, (t, _, _) in expected.items() if t == task
        )

    removed = await asyncio.gather(*(registry.deregister_agent(agent_id) for agent_id in expected))
    assert all(removed)
    assert await registry.discover_agents(DiscoveryRequest(agent_type=unique)) == []


async def test_burst_beyond_consuls_per_client_connection_limit(registry: AgentRegistry, unique: str) -> None:
    """250 registrations started at once from one registry all succeed, although Consul accepts at most 200
    connections from one client address: the registry queues what its connection pool cannot carry."""
    ids = await asyncio.gather(
        *(registry.register_agent(task_registration(unique, t, 0, with_id=True)) for t in range(250))
    )
    found = await registry.discover_agents(DiscoveryRequest(agent_type=unique))
    assert sorted(info.agent_id for info in found) == sorted(ids)
    assert all(await asyncio.gather(*(registry.deregister_agent(agent_id) for agent_id in ids)))
