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

Cost: the cache answers the same list of the same frozen AgentInfos until Consul changes them, so what the
strategies need from a list (its id order, the order by load, cumulative weights, the weighted schedule's
heap) is prepared once per list and selection key and reused while the next call's candidates are the same
objects (one identity comparison per candidate, in C). A pick is then O(1) (round_robin, least_loaded
with nothing in flight in the pool) or O(log n) (weighted_random, power_of_two with unequal weights); the
draws are the very ones the straightforward O(n log n) per-call code made, seed for seed
(tests/unit/test_selection_prepared.py).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random as _random
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from cachetools import LRUCache

from consul_agents._frozen import FrozenList
from consul_agents._models import AgentInfo, SelectionCriteria, Strategy

__all__ = [
    "MAX_PREPARED_AGENTS",
    "MAX_SELECTION_KEYS",
    "STRATEGIES",
    "SelectionState",
    "effective_load",
    "select",
    "selection_key",
]

_BY_ID = attrgetter("agent_id")
STRATEGIES: tuple[Strategy, ...] = ("round_robin", "weighted_random", "least_loaded", "power_of_two")


#: How many selection keys (pools of candidates) a client remembers cursors and passes for; the least
#: recently used beyond it start afresh, as a new client would. Any caller of ``POST /v1/select`` can
#: name new pools at will, so this bounds what they cost: about 1 KB per key and 100 agents.
MAX_SELECTION_KEYS = 1024
#: Pools prepared without some excluded agents, kept per prepared list (each exclusion set is one).
_MAX_EXCLUSION_SETS = 4
#: How many agents the prepared candidate lists of one client may hold in all, counting each list as if
#: its exclusion sets were full (a few hundred bytes an agent: some 60 MB at most; four pools of 10,000
#: agents). A list too large for it is prepared for each pick and not kept.
MAX_PREPARED_AGENTS = 200_000


def selection_key(criteria: SelectionCriteria, datacenter: str) -> tuple[Any, ...]:
    """The pool of candidates a rotation (round-robin cursor, weighted schedule) runs over.

    The discovery cache keys its answers by everything a request asks; a rotation needs less: the agents
    a request can ever name (type, capabilities, tags, status, datacenter) and the strategy. ``max_load``
    and ``exclude`` only skip agents of that pool for one pick, so they do not start a rotation of their
    own (a caller varying them must not grow the state or restart the rotation).
    """
    capabilities, tags = criteria.capabilities, criteria.tags
    return (
        criteria.strategy,
        criteria.agent_type,
        tuple(sorted(capabilities)) if len(capabilities) > 1 else tuple(capabilities),
        criteria.status,
        tuple(sorted(tags.items())) if tags else (),
        datacenter,
    )


class _Pool:
    """What the strategies need from one list of candidates, computed once. Immutable once built (the
    exclusion sub-pools aside, a bounded memo)."""

    __slots__ = (
        "agents",
        "by_load",
        "equal_weights",
        "excluding",
        "held",
        "index",
        "lightest",
        "loaded",
        "positive",
        "runs",
        "source",
        "sqrt_cumulative",
    )

    def __init__(self, candidates: list[AgentInfo]) -> None:
        #: The list this was prepared from, to recognise it next time (same objects, same order).
        self.source = candidates
        self.agents: tuple[AgentInfo, ...] = tuple(sorted(candidates, key=_BY_ID))
        self.index = {agent.agent_id: position for position, agent in enumerate(self.agents)}
        weights = [agent.weight for agent in self.agents]
        self.equal_weights = all(weight == weights[0] for weight in weights)
        #: power_of_two: cumulative sqrt(weight), for O(log n) draws by rng.choices.
        self.sqrt_cumulative = list(itertools.accumulate(math.sqrt(max(w, 1)) for w in weights))
        #: weighted_random: (position, weight x health) of every agent with a positive share.
        self.positive = [
            (position, agent.weight * agent.health_score)
            for position, agent in enumerate(self.agents)
            if agent.weight * agent.health_score > 0
        ]
        #: least_loaded without in-flight requests: the agents of lowest load and, among them, highest
        #: weight, in id order (the tie rng.choice draws from).
        lowest = min((agent.current_load for agent in self.agents), default=0.0)
        tied = [agent for agent in self.agents if agent.current_load == lowest]
        heaviest = max((agent.weight for agent in tied), default=0)
        self.lightest = [agent for agent in tied if agent.weight == heaviest]
        #: least_loaded with requests in flight: positions by (load, heaviest first, id), and where each
        #: (load, weight) run of that order starts and ends.
        self.by_load = sorted(
            range(len(self.agents)), key=lambda p: (self.agents[p].current_load, -weights[p], p)
        )
        self.runs: dict[tuple[float, int], tuple[int, int]] = {}
        for at, position in enumerate(self.by_load):
            run = (self.agents[position].current_load, weights[position])
            begun = self.runs.get(run, (at, at))[0]
            self.runs[run] = (begun, at + 1)
        self.excluding: LRUCache[frozenset[str], _Pool] = LRUCache(maxsize=_MAX_EXCLUSION_SETS)
        #: least_loaded: the requests in flight it last planned for, and the plan (None: none of them here).
        self.loaded: tuple[dict[str, int], _LoadedPlan | None] | None = None
        #: What keeping it costs, in agents: its own and room for its exclusion sets.
        self.held = len(self.agents) * (1 + _MAX_EXCLUSION_SETS)

    def without(self, excluded: frozenset[str]) -> _Pool:
        """This pool less ``excluded`` (ids of this pool), prepared once per exclusion set."""
        pool = self.excluding.get(excluded)
        if pool is None:
            pool = self.excluding[excluded] = _Pool([a for a in self.agents if a.agent_id not in excluded])
        return pool


class _Schedule:
    """weighted_random's stride schedule for one selection key: each agent's next pass and the virtual
    time (the pass of the last pick). While the pool stays the same prepared list, the passes live in a
    heap of (pass, position), so a pick is a heap replace; on a change of pool they are carried over by
    agent id, newcomers joining at a random phase as before."""

    __slots__ = ("heap", "now", "passes", "pool")

    def __init__(self) -> None:
        self.passes: dict[str, float] = {}
        self.heap: list[tuple[float, int]] = []
        self.pool: _Pool | None = None
        self.now = 0.0

    def switch_to(self, pool: _Pool, rng: _random.Random) -> None:
        if self.pool is not None:
            for value, position in self.heap:
                self.passes[self.pool.agents[position].agent_id] = value
        passes, now = self.passes, self.now
        if len(passes) > 2 * len(pool.agents) + 16:
            for agent_id in [a for a in passes if a not in pool.index]:
                del passes[agent_id]
        heap: list[tuple[float, int]] = []
        for position, weight in pool.positive:
            agent_id = pool.agents[position].agent_id
            stride = 1.0 / weight
            known = passes.get(agent_id)
            if known is None or known < now - stride:
                # a newcomer (or one back after an absence) joins at a random phase, not with a backlog
                known = passes[agent_id] = now + rng.random() * stride
            heap.append((known, position))
        heapq.heapify(heap)
        self.heap, self.pool = heap, pool

    def pick(self, pool: _Pool, rng: _random.Random) -> AgentInfo:
        if self.pool is not pool:
            self.switch_to(pool, rng)
        value, position = self.heap[0]
        agent = pool.agents[position]
        self.now = value
        heapq.heapreplace(self.heap, (value + 1.0 / (agent.weight * agent.health_score), position))
        return agent


class SelectionState:
    """What a client remembers between picks: round-robin cursors and requests in flight per agent.

    Cursors, weighted schedules and prepared pools are kept for at most ``max_keys`` selection keys
    (least recently used forgotten first), the prepared pools also within ``max_agents`` agents in all;
    in-flight counts only exist while a lease holds them.
    """

    def __init__(self, max_keys: int = MAX_SELECTION_KEYS, max_agents: int = MAX_PREPARED_AGENTS) -> None:
        self.max_agents = max_agents
        self.cursors: LRUCache[object, int] = LRUCache(maxsize=max_keys)
        self.in_flight: dict[str, int] = {}
        #: weighted_random: per request key, the stride schedule.
        self.schedules: LRUCache[object, _Schedule] = LRUCache(maxsize=max_keys)
        #: per request key, the last candidate list prepared: each counts as its agents (with room for
        #: its exclusion sets) but at least a max_keys-th of the budget, so both bounds hold.
        floor = max_agents // max_keys
        self.pools: LRUCache[object, _Pool] = LRUCache(
            maxsize=max_agents, getsizeof=lambda pool: max(pool.held, floor)
        )

    def acquire(self, agent_id: str) -> None:
        self.in_flight[agent_id] = self.in_flight.get(agent_id, 0) + 1

    def release(self, agent_id: str) -> None:
        count = self.in_flight.get(agent_id, 0) - 1
        if count > 0:
            self.in_flight[agent_id] = count
        else:
            self.in_flight.pop(agent_id, None)

    def prepared(self, candidates: Sequence[AgentInfo], key: object) -> _Pool:
        """The prepared pool of ``candidates``: the one kept for ``key`` when they are the same list."""
        listed = candidates if isinstance(candidates, list) else list(candidates)
        pool = self.pools.get(key)
        # The cache hands selection its own answer list while Consul's view is unchanged: one identity
        # test. Else list == list compares element by element, identity first: microseconds for 1,000.
        if pool is not None and (
            (pool.source is listed and type(listed) is FrozenList) or pool.source == listed
        ):
            return pool
        pool = _Pool(listed if type(listed) is FrozenList else list(listed))
        if pool.held > self.max_agents:
            self.pools.pop(key, None)
        else:
            self.pools[key] = pool
        return pool


def effective_load(info: AgentInfo, in_flight: Mapping[str, int]) -> float:
    """Reported load plus this client's own in-flight requests, each counting 1/weight of capacity."""
    return info.current_load + in_flight.get(info.agent_id, 0) / max(info.weight, 1)


class _LoadedPlan:
    """least_loaded's tie for one pool under one set of requests in flight, worked out once: the agents
    of lowest effective load and, among them, highest weight, as a run of the pool's load order less the
    affected agents it holds (``skipped``), plus affected agents that equal it (``extras``). A pick draws
    one index into that tie (in id order, as the reference draws from the sorted tie) and maps it in O(k)
    for k agents in flight."""

    __slots__ = ("extras", "skip_at", "start", "thresholds", "total")

    def __init__(self, pool: _Pool, affected: dict[int, int]) -> None:
        agents, by_load = pool.agents, pool.by_load
        first = next((p for p in by_load if p not in affected), None)
        effective = {
            p: agents[p].current_load + count / max(agents[p].weight, 1) for p, count in affected.items()
        }
        lowest = min(effective.values())
        if first is not None:
            lowest = min(lowest, agents[first].current_load)
        weights = [agents[p].weight for p, load in effective.items() if load == lowest]
        if first is not None and agents[first].current_load == lowest:
            weights.append(agents[first].weight)
        heaviest = max(weights)
        extras = sorted(p for p, load in effective.items() if load == lowest and agents[p].weight == heaviest)
        start, end = pool.runs.get((lowest, heaviest), (0, 0))
        skipped = sorted(
            p for p in affected if agents[p].current_load == lowest and agents[p].weight == heaviest
        )
        self.start = start
        self.total = end - start - len(skipped) + len(extras)
        #: Where each skipped agent sits in the run (ascending: the run is in position order).
        self.skip_at = [bisect.bisect_left(by_load, p, start, end) for p in skipped]
        self.extras = extras
        #: For each extra, its index in the tie: the run's kept agents before it, plus the extras before it.
        self.thresholds = [
            bisect.bisect_left(by_load, extra, start, end) - start - bisect.bisect_left(skipped, extra) + j
            for j, extra in enumerate(extras)
        ]

    def pick(self, pool: _Pool, rng: _random.Random) -> AgentInfo:
        wanted = rng.randrange(self.total)  # what rng.choice(tied) draws
        agents = pool.agents
        skipped_before = 0
        for j, threshold in enumerate(self.thresholds):
            if threshold == wanted:
                return agents[self.extras[j]]
            if threshold > wanted:
                break
            skipped_before = j + 1
        return agents[pool.by_load[self._kept(wanted - skipped_before)]]

    def _kept(self, k: int) -> int:
        """The index in the load order of the k-th agent of the run that is not skipped."""
        at = self.start + k
        for position in self.skip_at:
            if position <= at:
                at += 1
            else:
                break
        return at


def _least_loaded(pool: _Pool, rng: _random.Random, in_flight: Mapping[str, int]) -> AgentInfo:
    if not in_flight:
        return rng.choice(pool.lightest)
    # Requests in flight: the plan for this pool and these counts is kept until they change (a lease
    # taken or given back), so a pick with leases held costs a comparison of the counts and a draw.
    planned = pool.loaded
    if planned is not None and planned[0] == in_flight:
        plan = planned[1]
    else:
        index = pool.index
        affected = {index[a]: count for a, count in in_flight.items() if a in index}
        plan = _LoadedPlan(pool, affected) if affected else None
        pool.loaded = (dict(in_flight), plan)
    if plan is None:
        return rng.choice(pool.lightest)
    return plan.pick(pool, rng)


def _power_of_two(pool: _Pool, rng: _random.Random, in_flight: Mapping[str, int]) -> AgentInfo:
    candidates = pool.agents
    if pool.equal_weights:
        first, second = rng.sample(candidates, 2)
    else:
        # Draws proportional to sqrt(weight): uniform draws over-serve small agents when the fleet is
        # saturated, weight-proportional draws under-serve them; sqrt measured within 7% of the
        # capacity-proportional share at demand = capacity (benchmarks/client.py, evenness table).
        cumulative = pool.sqrt_cumulative
        first = rng.choices(candidates, cum_weights=cumulative)[0]
        second = first
        while second is first:
            second = rng.choices(candidates, cum_weights=cumulative)[0]
    load_first, load_second = effective_load(first, in_flight), effective_load(second, in_flight)
    if load_first == load_second:
        return first if first.weight >= second.weight else second
    return first if load_first < load_second else second


def _weighted_random(pool: _Pool, rng: _random.Random, state: SelectionState, key: object) -> AgentInfo:
    if not pool.positive:
        return rng.choice(pool.agents)
    schedule = state.schedules.get(key)
    if schedule is None:
        schedule = state.schedules[key] = _Schedule()
    return schedule.pick(pool, rng)


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
    if not candidates:
        return None
    pool = state.prepared(candidates, key)
    if exclude:
        excluded = frozenset(agent_id for agent_id in exclude if agent_id in pool.index)
        if excluded:
            pool = pool.without(excluded)
    agents = pool.agents
    if not agents:
        return None
    if len(agents) == 1:
        return agents[0]
    if strategy == "round_robin":
        cursor = state.cursors.get(key, rng.randrange(len(agents)))
        state.cursors[key] = cursor + 1
        return agents[cursor % len(agents)]
    if strategy == "least_loaded":
        return _least_loaded(pool, rng, state.in_flight)
    if strategy == "power_of_two":
        return _power_of_two(pool, rng, state.in_flight)
    return _weighted_random(pool, rng, state, key)
