"""A health score from recent history, not a lookup of the current status. Pure: the clock is the caller's.

The discovery cache feeds it every new version of a watched service (:meth:`HealthHistory.stamp`, one call
per version, with every agent of the version) and the registry feeds it lease outcomes
(:meth:`HealthHistory.record_lease`). An agent's score over the last ``window`` seconds (default 300) is::

    score = min(cap(status now), pass_ratio x flap_factor x lease_factor)

    cap(status)   1 passing, 0.5 warning, 0 critical or in maintenance (the old fixed map: a status caps
                  the score, so an agent down now scores 0 whatever its past)
    pass_ratio    time-weighted mean of cap(status) over the window, from the agent's first sighting
                  by this client if that is later (a status holds from the version that showed it to
                  the next one; the current status up to now)
    flap_factor   1 / (1 + changes / flaps_to_halve): each status change seen in the window, counted at
                  the versions that showed it; flaps_to_halve (default 4) changes halve the score
    lease_factor  (successes + 1) / (leases + 1) of the leases of this client ending in the window:
                  the success ratio with one success assumed in advance, so one failure among few
                  leases does not sink an agent (1 failure of 1: 0.5; 1 of 100: 0.99)

Scores are rounded to two decimals. An agent steady for the whole window with no failed lease scores
exactly ``cap(status)``: the fixed map
is the score of an agent without history, and what answers read without history (``cached=False``, a
client with ``cache=False``) carry.

Bounded memory: at most ``max_agents`` agent records (least recently changed, leased or first seen
forgotten first; a forgotten agent starts again without history), each with at most ``max_changes``
status changes (the oldest dropped first) and ``LEASE_BUCKETS`` lease counters over the window. Cost: a
version looks only at the agents whose entry changed (the cache reuses the AgentInfo of an unchanged
entry), and only agents with history in the window (a change or a failed lease) have their score computed
and their AgentInfo copied.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from consul_agents._models import AgentInfo, AgentStatus

__all__ = [
    "LEASE_BUCKETS",
    "MAX_HEALTH_RECORDS",
    "SCORE_DIGITS",
    "HealthHistory",
    "HealthPolicy",
    "Stamped",
    "status_cap",
]

#: Agent records a HealthHistory keeps at most (one per agent id and datacenter seen).
MAX_HEALTH_RECORDS = 50_000
#: Scores are rounded to this many decimals: a score that moves less keeps the same AgentInfo, so the
#: cache's answers and selection's prepared lists stay as they are.
SCORE_DIGITS = 2
#: Lease outcomes are counted in this many buckets spanning the window.
LEASE_BUCKETS = 10

_CAP = {
    AgentStatus.PASSING: 1.0,
    AgentStatus.WARNING: 0.5,
    AgentStatus.CRITICAL: 0.0,
    AgentStatus.MAINTENANCE: 0.0,
}


def status_cap(status: AgentStatus) -> float:
    """The score of an agent in ``status`` without history, and the most it can score in that status."""
    return _CAP[status]


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    #: Seconds of history the score looks at.
    window: float = 300.0
    #: Status changes in the window that halve the score.
    flaps_to_halve: float = 4.0
    #: Status changes kept per agent (more in one window: the oldest are dropped, the count saturates).
    max_changes: int = 16
    #: How often, at most, the scores of a view are brought up to date between two versions (the pass
    #: ratio moves with time, lease outcomes arrive between versions).
    resolution: float = 2.0

    def __post_init__(self) -> None:
        if not (
            self.window > 0 and self.flaps_to_halve > 0 and self.resolution > 0 and self.max_changes >= 1
        ):
            raise ValueError("window, flaps_to_halve and resolution must be > 0, max_changes >= 1")


class _Record:
    """What one agent's score needs: its status changes in the window and its lease outcomes."""

    __slots__ = ("base", "base_since", "changes", "last_event", "lease_counts", "scored", "status")

    def __init__(self, now: float, status: AgentStatus) -> None:
        self.status = status
        #: The status in effect from ``base_since`` until the first change kept in ``changes``.
        self.base = status
        self.base_since = now
        #: (when, new status), oldest first.
        self.changes: deque[tuple[float, AgentStatus]] | None = None
        #: When the last change or failed lease happened: past the window, the score is the status cap.
        self.last_event = -math.inf
        #: Per bucket of the window: (bucket number, successes, failures); None until a lease ends.
        self.lease_counts: list[list[int]] | None = None
        #: The last (source AgentInfo, scored copy): the copy is handed out again while both hold.
        self.scored: tuple[AgentInfo, AgentInfo] | None = None

    def change(self, now: float, status: AgentStatus, policy: HealthPolicy) -> None:
        if self.changes is None:
            self.changes = deque()
        self._forget(now, policy)
        if len(self.changes) >= policy.max_changes:
            self.base_since, self.base = self.changes.popleft()
        self.changes.append((now, status))
        self.status = status
        self.last_event = now

    def _forget(self, now: float, policy: HealthPolicy) -> None:
        """Drop the changes before the window but the last of them, which says the status at its start."""
        changes, start = self.changes, now - policy.window
        while changes and changes[0][0] <= start:
            self.base_since, self.base = changes.popleft()

    def lease(self, now: float, success: bool, policy: HealthPolicy) -> None:
        width = policy.window / LEASE_BUCKETS
        bucket = int(now // width)
        if self.lease_counts is None:
            self.lease_counts = [[-1, 0, 0] for _ in range(LEASE_BUCKETS)]
        slot = self.lease_counts[bucket % LEASE_BUCKETS]
        if slot[0] != bucket:
            slot[:] = [bucket, 0, 0]
        slot[1 if success else 2] += 1
        if not success:
            self.last_event = now

    def quiet(self, now: float, policy: HealthPolicy) -> bool:
        return now - self.last_event >= policy.window

    def score(self, now: float, policy: HealthPolicy) -> float:
        cap = _CAP[self.status]
        if cap == 0.0:
            return 0.0
        start = now - policy.window
        changes: Iterable[tuple[float, AgentStatus]] = ()
        if self.changes is not None:
            self._forget(now, policy)
            changes = self.changes
        begin = max(start, self.base_since)
        observed = now - begin
        if observed <= 0:
            pass_ratio = cap
        else:
            total, since, status = 0.0, begin, self.base
            for when, new in changes:
                total += _CAP[status] * (max(when, begin) - since)
                since, status = max(when, begin), new
            total += _CAP[status] * (now - since)
            pass_ratio = total / observed
        flaps = sum(1 for when, _ in changes if when > start)
        flap_factor = 1.0 / (1.0 + flaps / policy.flaps_to_halve)
        lease_factor = 1.0
        if self.lease_counts is not None:
            oldest = int(start // (policy.window / LEASE_BUCKETS))
            successes = failures = 0
            for bucket, ok, failed in self.lease_counts:
                if bucket > oldest:
                    successes += ok
                    failures += failed
            lease_factor = (successes + 1) / (successes + failures + 1)
        return round(max(0.0, min(cap, pass_ratio * flap_factor * lease_factor)), SCORE_DIGITS)

    def copy(self, info: AgentInfo, score: float) -> AgentInfo:
        """``info`` with ``score``: the same copy as last time when neither changed."""
        if score == info.health_score:
            return info
        if self.scored is not None and self.scored[0] is info and self.scored[1].health_score == score:
            return self.scored[1]
        copy = info.model_copy(update={"health_score": score})
        self.scored = (info, copy)
        return copy


@dataclass(frozen=True, slots=True)
class Stamped:
    """A version's agents with their scores, and until when those scores hold."""

    agents: list[AgentInfo]
    #: The clock time from which the scores should be computed again (inf: they hold until the next
    #: version or failed lease).
    rescore_at: float


class HealthHistory:
    """Status changes and lease outcomes per agent, and the scores they give. One per discovery cache (so
    per client and token: what one token saw never scores another token's answers)."""

    def __init__(self, policy: HealthPolicy | None = None, *, max_agents: int = MAX_HEALTH_RECORDS) -> None:
        self.policy = policy or HealthPolicy()
        self.max_agents = max_agents
        #: By (datacenter, agent id), least recently changed or used first.
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        #: The agents with history in the window (a change or a failed lease), by (datacenter, agent type):
        #: the only ones whose score is computed; the others score their status cap.
        self._eventful: dict[tuple[str, str], set[str]] = {}
        #: When the last failed lease was recorded: views scored before it are scored again (within
        #: ``policy.resolution``), since the failure lowers a score without a new version.
        self.failed_at = -math.inf

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"HealthHistory(agents={len(self._records)})"

    def _record(self, info: AgentInfo, now: float) -> None:
        """Record the status ``info`` shows at ``now``."""
        key = (info.datacenter, info.agent_id)
        record = self._records.get(key)
        if record is None:
            self._records[key] = _Record(now, info.status)
            if len(self._records) > self.max_agents:
                self._records.popitem(last=False)
            return
        self._records.move_to_end(key)
        if record.status is not info.status:
            record.change(now, info.status, self.policy)
            self._eventful.setdefault((info.datacenter, info.agent_type), set()).add(info.agent_id)

    def stamp(self, agents: list[AgentInfo], now: float, previous: list[AgentInfo] | None = None) -> Stamped:
        """``agents`` (one version of a service: one agent type in one datacenter) with their scores; the
        status of each agent is recorded as seen at ``now``.

        ``previous`` is the list of the last version of the same service, still held: its AgentInfos that
        reappear as the very same objects (the cache reuses what it built from an unchanged entry) cannot
        have changed, so only the others are looked at. A version thus costs O(changed) in Python, plus
        O(n) in C, plus O(n) only while the type has agents with history.
        """
        changed = agents
        if previous and len(previous) == len(agents):
            # position by position, in C: a load report or a check changes one entry in place
            changed = list(itertools.compress(agents, map(operator.is_not, agents, previous)))
        elif previous:
            fresh = set(map(id, agents)).difference(map(id, previous))
            changed = [info for info in agents if id(info) in fresh] if fresh else []
        for info in changed:
            self._record(info, now)
        if not agents:
            return Stamped([], math.inf)
        first = agents[0]
        eventful = self._eventful.get((first.datacenter, first.agent_type))
        if not eventful:
            return Stamped(list(agents), math.inf)
        policy, records = self.policy, self._records
        scored: dict[str, tuple[_Record, float]] = {}
        for agent_id in list(eventful):
            record = records.get((first.datacenter, agent_id))
            if record is None or record.quiet(now, policy):
                eventful.discard(agent_id)
            else:
                scored[agent_id] = (record, record.score(now, policy))
        if not eventful:
            del self._eventful[(first.datacenter, first.agent_type)]
            return Stamped(list(agents), math.inf)
        out = [
            info if (found := scored.get(info.agent_id)) is None else found[0].copy(info, found[1])
            for info in agents
        ]
        return Stamped(out, now + policy.resolution)

    def record_lease(self, agent: AgentInfo, success: bool, now: float) -> None:
        """Count one lease of ``agent`` ending; agents this history has not seen are not counted."""
        key = (agent.datacenter, agent.agent_id)
        record = self._records.get(key)
        if record is None:
            return
        self._records.move_to_end(key)
        record.lease(now, success, self.policy)
        if not success:
            self.failed_at = now
            self._eventful.setdefault((agent.datacenter, agent.agent_type), set()).add(agent.agent_id)

    def score_of(self, agent: AgentInfo, now: float) -> float:
        """The agent's score now (its status cap when this history has not seen it)."""
        record = self._records.get((agent.datacenter, agent.agent_id))
        if record is None or record.quiet(now, self.policy):
            return _CAP[agent.status]
        return record.score(now, self.policy)
