"""Prepared pools: select() draws exactly what the per-call O(n log n) implementation drew, seed for seed."""

from __future__ import annotations

import random
from typing import Any

import selection_reference as reference
from hypothesis import given, settings
from hypothesis import strategies as st
from support import candidate

from consul_agents._models import AgentInfo
from consul_agents._selection import STRATEGIES, SelectionState, select

_agents = st.lists(
    st.builds(
        candidate,
        st.sampled_from([f"a{n:02}" for n in range(12)]),
        load=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        weight=st.sampled_from([1, 2, 5]),
        health=st.sampled_from([1.0, 0.5, 0.0]),
    ),
    max_size=12,
    unique_by=lambda agent: agent.agent_id,
)

# One step: a new candidate list (or the same list object again), a shuffle, a key, exclusions, leases.
_steps = st.lists(
    st.tuples(
        st.one_of(st.none(), _agents),
        st.booleans(),
        st.sampled_from(["k1", "k2"]),
        st.lists(st.sampled_from([f"a{n:02}" for n in range(12)]), max_size=3),
        st.one_of(st.none(), st.sampled_from([f"a{n:02}" for n in range(12)])),
        st.integers(1, 5),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(strategy=st.sampled_from(STRATEGIES), first=_agents, steps=_steps, seed=st.integers(0, 2**32))
def test_prepared_draws_equal_the_reference(
    strategy: Any, first: list[AgentInfo], steps: list[Any], seed: int
) -> None:
    """Over any sequence of candidate lists, keys, exclusions and leases, every pick equals the old one."""
    ours, theirs = SelectionState(), reference.SelectionState()
    rng_ours, rng_theirs = random.Random(seed), random.Random(seed)
    candidates = first
    for new_list, shuffle, key, exclude, leased, repeats in steps:
        if new_list is not None:
            candidates = new_list
        if shuffle:
            candidates = random.Random(seed).sample(candidates, len(candidates))
        if leased is not None:
            ours.acquire(leased)
            theirs.acquire(leased)
        for _ in range(repeats):
            mine = select(candidates, strategy, rng=rng_ours, state=ours, key=key, exclude=exclude)
            old = reference.select(
                candidates, strategy, rng=rng_theirs, state=theirs, key=key, exclude=exclude
            )
            assert (mine and mine.agent_id) == (old and old.agent_id)


def test_same_list_is_prepared_once() -> None:
    """Selecting again from the same candidate list reuses its prepared pool; a changed list replaces it."""
    state = SelectionState()
    fleet = [candidate(f"a{n}", weight=n + 1) for n in range(50)]
    select(fleet, "weighted_random", rng=random.Random(0), state=state, key="k")
    prepared = state.pools["k"]
    for _ in range(20):
        select(list(fleet), "weighted_random", rng=random.Random(0), state=state, key="k")
    assert state.pools["k"] is prepared
    select(fleet[1:], "weighted_random", rng=random.Random(0), state=state, key="k")
    assert state.pools["k"] is not prepared and len(state.pools["k"].agents) == 49


def test_weighted_schedule_stays_even_at_ten_thousand() -> None:
    """20,000 weighted picks among 10,000 equal agents choose every agent exactly twice."""
    state = SelectionState()
    fleet = [candidate(f"a{n:05}") for n in range(10_000)]
    rng = random.Random(1)
    picks = [select(fleet, "weighted_random", rng=rng, state=state, key="k") for _ in range(20_000)]
    counts: dict[str, int] = {}
    for agent in picks:
        assert agent is not None
        counts[agent.agent_id] = counts.get(agent.agent_id, 0) + 1
    assert set(counts.values()) == {2}


def test_prepared_lists_are_bounded_by_agents_held() -> None:
    """Prepared lists stay within max_agents (with room for exclusion sets); too large ones are not kept."""
    state = SelectionState(max_keys=8, max_agents=1000)
    fleet = [candidate(f"a{n:03}") for n in range(300)]
    for key in range(20):
        assert select(fleet[:100], "round_robin", rng=random.Random(key), state=state, key=key) is not None
        assert sum(pool.held for pool in state.pools.values()) <= 1000
    assert 1 <= len(state.pools) <= 2
    assert select(fleet, "least_loaded", rng=random.Random(0), state=state, key="big") is not None
    assert "big" not in state.pools


@settings(max_examples=300, deadline=None)
@given(
    fleet=st.lists(
        st.builds(
            candidate,
            st.sampled_from([f"a{n:02}" for n in range(30)]),
            load=st.sampled_from([0.0, 0.5]),
            weight=st.sampled_from([1, 2]),
        ),
        min_size=2,
        max_size=30,
        unique_by=lambda agent: agent.agent_id,
    ),
    in_flight=st.dictionaries(st.sampled_from([f"a{n:02}" for n in range(35)]), st.integers(1, 3)),
    seed=st.integers(0, 2**32),
)
def test_least_loaded_with_requests_in_flight_equals_the_reference(
    fleet: list[AgentInfo], in_flight: dict[str, int], seed: int
) -> None:
    """least_loaded with leases on some agents (ties everywhere) draws what the old code drew."""
    ours, theirs = SelectionState(), reference.SelectionState()
    ours.in_flight.update(in_flight)
    theirs.in_flight.update(in_flight)
    rng_ours, rng_theirs = random.Random(seed), random.Random(seed)
    for _ in range(5):
        mine = select(fleet, "least_loaded", rng=rng_ours, state=ours, key="k")
        old = reference.select(fleet, "least_loaded", rng=rng_theirs, state=theirs, key="k")
        assert mine is not None and old is not None and mine.agent_id == old.agent_id
