"""weighted_random as a stride schedule from a random phase: proportional, even, and fair to newcomers."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from support import candidate as agent

from consul_agents._models import AgentInfo
from consul_agents._selection import SelectionState, select


def picks(
    candidates: list[AgentInfo], n: int, seed: int = 1, state: SelectionState | None = None
) -> Counter[str]:
    state = state or SelectionState()
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(n):
        chosen = select(candidates, "weighted_random", rng=rng, state=state, key="k")
        assert chosen is not None
        counts[chosen.agent_id] += 1
    return counts


def test_equal_weights_are_even() -> None:
    """100 equal agents, 10,000 picks: every agent gets 100 picks give or take one."""
    counts = picks([agent(f"a{i:02d}") for i in range(100)], 10_000)
    assert max(counts.values()) <= 101 and min(counts.values()) >= 99


def test_share_follows_weight_times_health() -> None:
    """Shares are proportional to weight x health score, within one pick per agent."""
    fleet = [agent("w1"), agent("w3", weight=3), agent("w4h", weight=4, health=0.5)]
    counts = picks(fleet, 6_000)
    assert abs(counts["w1"] - 1000) <= 1
    assert abs(counts["w3"] - 3000) <= 1
    assert abs(counts["w4h"] - 2000) <= 1


def test_phase_depends_on_the_seed() -> None:
    """Different random sources start the schedule at different agents (clients do not march in step)."""
    fleet = [agent(f"a{i}") for i in range(10)]
    firsts = {next(iter(picks(fleet, 1, seed=seed))) for seed in range(20)}
    assert len(firsts) > 3


def test_newcomer_joins_without_a_backlog() -> None:
    """An agent added after many picks gets its share from then on, not a burst of catch-up picks."""
    state = SelectionState()
    fleet = [agent(f"a{i}") for i in range(4)]
    picks(fleet, 1_000, state=state)
    counts = picks([*fleet, agent("new")], 50, state=state)
    assert counts["new"] <= 11


def test_all_zero_weights_fall_back_to_uniform() -> None:
    """When every weight x health is zero (all critical), picks are uniform among the candidates."""
    fleet = [agent(f"c{i}", health=0.0) for i in range(3)]
    counts = picks(fleet, 3_000)
    assert set(counts) == {"c0", "c1", "c2"}
    assert all(800 < c < 1200 for c in counts.values())


@pytest.mark.parametrize("demand", [1, 2])
@pytest.mark.parametrize("strategy", ["least_loaded", "power_of_two"])
def test_load_aware_strategies_give_capacity_proportional_shares(strategy: str, demand: int) -> None:
    """With capacities 1 to 4 at demand 1x or 2x capacity, each capacity class gets its share within 10%."""
    from benchmarks.client import _agents, _closed_loop

    capacities = [1 + i % 4 for i in range(100)]
    fleet = _agents(capacities)
    rng = random.Random(7)
    picks = 30_000

    def pick(state: SelectionState) -> AgentInfo:
        chosen = select(fleet, strategy, rng=rng, state=state, key="k")  # type: ignore[arg-type]
        assert chosen is not None
        return chosen

    counts = _closed_loop(fleet, pick, picks, in_flight=demand * sum(capacities))
    for capacity in (1, 2, 3, 4):
        members = [a for a in fleet if a.weight == capacity]
        share = sum(counts[a.agent_id] for a in members) / picks
        proportional = capacity * len(members) / sum(capacities)
        assert abs(share / proportional - 1) <= 0.10, (capacity, share / proportional)
