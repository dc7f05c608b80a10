"""Choosing one agent among candidates. Pure functions over lists of AgentInfo; randomness is injected.

Strategies:

* ``least_loaded``: the lowest reported load (plus this client's in-flight requests, scaled by weight);
  ties go to the higher weight, then to a random pick among the still-equal ones.
* ``power_of_two``: two distinct random candidates (drawn by sqrt(weight) when weights differ), the less
  loaded wins (Envoy's default for least-request);
  cheap, and avoids the herd that pure least-loaded causes when many clients see the same stale loads.
* ``weighted_random``: each agent's share is proportional to Consul's weight times the health score; when
  every such weight is zero, uniform among the candidates. Picks are not independent draws (whose spread
  grows like the square root of the number of picks) but a stride schedule started from a random phase
  per client and request key: over any run of picks every agent is within about one pick of its share,
  and different clients still interleave differently.
* ``round_robin``: each candidate in turn, ordered by agent id, with a cursor per request key.

Every strategy returns None when there is no candidate, and the only candidate when there is one.
"""

from __future__ import annotations

import itertools
import math
import random as _random
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from cachetools import LRUCache

from consul_agents._models import AgentInfo, SelectionCriteria, Strategy

__all__ = ["MAX_SELECTION_KEYS", "STRATEGIES", "SelectionState", "effective_load", "select", "selection_key"]

_BY_ID = attrgetter("agent_id")
STRATEGIES: tuple[Strategy, ...] = ("round_robin", "weighted_random", "least_loaded", "power_of_two")


#: How many selection keys (pools of candidates) a client remembers cursors and passes for; the least
#: recently used beyond it start afresh, as a new client would. Any caller of ``POST /v1/select`` can
#: name new pools at will, so this bounds what they cost: about 1 KB per key and 100 agents.
MAX_SELECTION_KEYS = 1024


def selection_key(criteria: SelectionCriteria, datacenter: str) -> tuple[Any, ...]:
    """The pool of candidates a rotation (round-robin cursor, weighted schedule) runs over.

    The discovery cache keys its answers by everything a request asks; a rotation needs less: the agents
    a request can ever name (type, capabilities, tags, status, datacenter) and the strategy. ``max_load``
    and ``exclude`` only skip agents of that pool for one pick, so they do not start a rotation of their
    own (a caller varying them must not grow the state or restart the rotation).
    """
    return (
        criteria.strategy,
        criteria.agent_type,
        tuple(sorted(criteria.capabilities)),
        criteria.status,
        tuple(sorted(criteria.tags.items())),
        datacenter,
    )


class SelectionState:
    """What a client remembers between picks: round-robin cursors and requests in flight per agent.

    Cursors and weighted schedules are kept for at most ``max_keys`` selection keys (least recently used
    forgotten first); in-flight counts only exist while a lease holds them.
    """

    def __init__(self, max_keys: int = MAX_SELECTION_KEYS) -> None:
        self.cursors: LRUCache[object, int] = LRUCache(maxsize=max_keys)
        self.in_flight: dict[str, int] = {}
        #: weighted_random: per request key, each agent's next "pass" and the pass of the last pick.
        self.passes: LRUCache[object, dict[str, float]] = LRUCache(maxsize=max_keys)
        self.virtual_time: LRUCache[object, float] = LRUCache(maxsize=max_keys)

    def acquire(self, agent_id: str) -> None:
        self.in_flight[agent_id] = self.in_flight.get(agent_id, 0) + 1

    def release(self, agent_id: str) -> None:
        count = self.in_flight.get(agent_id, 0) - 1
        if count > 0:
            self.in_flight[agent_id] = count
        else:
            self.in_flight.pop(agent_id, None)


def effective_load(info: AgentInfo, in_flight: Mapping[str, int]) -> float:
    """Reported load plus this client's own in-flight requests, each counting 1/weight of capacity."""
    return info.current_load + in_flight.get(info.agent_id, 0) / max(info.weight, 1)


def _least_loaded(
    candidates: Sequence[AgentInfo], rng: _random.Random, in_flight: Mapping[str, int]
) -> AgentInfo:
    # one pass of list comprehensions (not a key function per comparison): this runs on every select
    if in_flight:
        loads = [c.current_load + in_flight.get(c.agent_id, 0) / max(c.weight, 1) for c in candidates]
    else:
        loads = [c.current_load for c in candidates]
    lowest = min(loads)
    tied = [c for c, load in zip(candidates, loads, strict=True) if load == lowest]
    if len(tied) > 1:
        heaviest = max(c.weight for c in tied)
        tied = [c for c in tied if c.weight == heaviest]
    return rng.choice(tied)


def _power_of_two(
    candidates: Sequence[AgentInfo], rng: _random.Random, in_flight: Mapping[str, int]
) -> AgentInfo:
    if all(c.weight == candidates[0].weight for c in candidates):
        first, second = rng.sample(list(candidates), 2)
    else:
        # Draws proportional to sqrt(weight): uniform draws over-serve small agents when the fleet is
        # saturated, weight-proportional draws under-serve them; sqrt measured within 7% of the
        # capacity-proportional share at demand = capacity (benchmarks/client.py, evenness table).
        cumulative = list(itertools.accumulate(math.sqrt(max(c.weight, 1)) for c in candidates))
        first = rng.choices(candidates, cum_weights=cumulative)[0]
        second = first
        while second is first:
            second = rng.choices(candidates, cum_weights=cumulative)[0]
    load_first, load_second = effective_load(first, in_flight), effective_load(second, in_flight)
    if load_first == load_second:
        return first if first.weight >= second.weight else second
    return first if load_first < load_second else second


def _weighted_random(
    candidates: Sequence[AgentInfo], rng: _random.Random, state: SelectionState, key: object
) -> AgentInfo:
    positive = [(c, c.weight * c.health_score) for c in candidates if c.weight * c.health_score > 0]
    if not positive:
        return rng.choice(list(candidates))
    passes = state.passes.get(key)
    if passes is None:
        passes = state.passes[key] = {}
    now = state.virtual_time.get(key, 0.0)
    if len(passes) > 2 * len(candidates) + 16:
        current = {c.agent_id for c in candidates}
        for agent_id in [a for a in passes if a not in current]:
            del passes[agent_id]
    best: AgentInfo | None = None
    best_pass = math.inf
    for candidate, weight in positive:
        stride = 1.0 / weight
        value = passes.get(candidate.agent_id)
        if value is None or value < now - stride:
            # a newcomer (or one back after an absence) joins at a random phase, not with a backlog
            value = passes[candidate.agent_id] = now + rng.random() * stride
        if value < best_pass:
            best, best_pass = candidate, value
    assert best is not None
    state.virtual_time[key] = best_pass
    passes[best.agent_id] = best_pass + 1.0 / (best.weight * best.health_score)
    return best


def select(
    candidates: Sequence[AgentInfo],
    strategy: Strategy,
    *,
    rng: _random.Random,
    state: SelectionState,
    key: object = None,
    exclude: Sequence[str] = (),
) -> AgentInfo | None:
    """Pick one of ``candidates`` (minus ``exclude``) by ``strategy``; None when nothing is left."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    excluded = set(exclude)
    pool = [c for c in candidates if c.agent_id not in excluded] if excluded else list(candidates)
    pool.sort(key=_BY_ID)
    if not pool:
        return None
    if len(pool) == 1:
        return pool[0]
    pickers: dict[str, Callable[[], AgentInfo]] = {
        "least_loaded": lambda: _least_loaded(pool, rng, state.in_flight),
        "power_of_two": lambda: _power_of_two(pool, rng, state.in_flight),
        "weighted_random": lambda: _weighted_random(pool, rng, state, key),
    }
    if strategy == "round_robin":
        cursor = state.cursors.get(key, rng.randrange(len(pool)))
        state.cursors[key] = cursor + 1
        return pool[cursor % len(pool)]
    return pickers[strategy]()
