"""Passive outlier detection for leases, as Envoy does it. Pure: the clock is injected.

Each lease ends in a success or a failure. After ``consecutive_failures`` failures in a row, an agent is
ejected from this client's selections for ``base_ejection`` seconds times the number of times it has been
ejected (capped at ``max_ejection``): an agent that keeps failing stays out longer each time. An agent that
then stays clear of ejection for ``max_ejection`` seconds starts again from one.

Records are bounded: an agent's record is forgotten once it has been clear of ejection for
``max_ejection`` seconds with no failure since (it would start again from one anyway), and at most
``max_records`` agents are remembered (the least recently active forgotten first), so a client that sees
agents come and go for months keeps only what still matters.

Ejection never removes more than ``max_ejected_share`` of the candidates of one selection (at least one
candidate always stays): when many agents fail at once, the fault is more likely on the caller's side or in
the network, and sending traffic to "failing" agents beats sending none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cachetools import LRUCache

from consul_agents._errors import InvalidAgentError

__all__ = ["MAX_OUTLIER_RECORDS", "OutlierDetector", "OutlierPolicy"]

#: Agents an OutlierDetector remembers at most.
MAX_OUTLIER_RECORDS = 10_000


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejected_share: float = 0.5

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1:
            raise InvalidAgentError("consecutive_failures must be at least 1", field="consecutive_failures")
        if not (self.base_ejection >= 0 and self.max_ejection >= self.base_ejection):
            raise InvalidAgentError(
                "ejection times must satisfy 0 <= base_ejection <= max_ejection", field="base_ejection"
            )
        if math.isnan(self.max_ejected_share) or not 0 <= self.max_ejected_share <= 1:
            raise InvalidAgentError("max_ejected_share must be between 0 and 1", field="max_ejected_share")


@dataclass(slots=True)
class _Record:
    failures: int = 0
    ejections: int = 0
    ejected_at: float = 0.0
    ejected_until: float = field(default=-math.inf)
    last_failure: float = field(default=-math.inf)


class OutlierDetector:
    """Counts lease outcomes per agent and says which agents are ejected now."""

    def __init__(
        self,
        policy: OutlierPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_records: int = MAX_OUTLIER_RECORDS,
    ) -> None:
        self.policy = policy or OutlierPolicy()
        self._clock = clock
        self._records: LRUCache[str, _Record] = LRUCache(maxsize=max_records)
        self._next_sweep = -math.inf

    def __len__(self) -> int:
        """How many agents have a record."""
        return len(self._records)

    def __repr__(self) -> str:
        return f"OutlierDetector(ejected={sorted(self.ejected_now())})"

    @property
    def active(self) -> bool:
        """Whether any agent has an outcome on record (when not, nothing can be ejected)."""
        return bool(self._records)

    def record(self, agent_id: str, success: bool) -> bool:
        """Count one outcome; True when this failure ejected the agent."""
        now = self._clock()
        self._sweep(now)
        record = self._records.get(agent_id)
        if record is None:
            record = self._records[agent_id] = _Record()
        if success:
            record.failures = 0
            if record.ejections == 0 and now >= record.ejected_until:
                self._records.pop(agent_id, None)
            return False
        record.failures += 1
        record.last_failure = now
        if record.failures < self.policy.consecutive_failures or now < record.ejected_until:
            return False
        if record.ejections and now - record.ejected_until >= self.policy.max_ejection:
            record.ejections = 0
        record.ejections += 1
        record.failures = 0
        record.ejected_at = now
        record.ejected_until = now + min(
            self.policy.base_ejection * record.ejections, self.policy.max_ejection
        )
        return True

    def _expired(self, record: _Record, now: float) -> bool:
        """Clear of ejection and of failures for max_ejection seconds: nothing left worth remembering."""
        quiet_since = max(record.ejected_until, record.last_failure)
        return now - quiet_since >= self.policy.max_ejection

    def _sweep(self, now: float) -> None:
        """Forget expired records, at most once per max_ejection / 4 (amortised over the outcomes)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + max(self.policy.max_ejection / 4, 1.0)
        for agent_id in [a for a, r in self._records.items() if self._expired(r, now)]:
            del self._records[agent_id]

    def ejection_of(self, agent_id: str) -> float:
        """Seconds left of the agent's ejection (0 when it is not ejected)."""
        record = self._records.get(agent_id)
        return 0.0 if record is None else max(record.ejected_until - self._clock(), 0.0)

    def ejected_now(self) -> set[str]:
        now = self._clock()
        return {agent_id for agent_id, r in self._records.items() if r.ejected_until > now}

    def excluded(self, candidate_ids: Iterable[str]) -> list[str]:
        """The candidates to leave out now: the ejected ones, at most max_ejected_share of them (the
        earliest ejected first), and never every candidate."""
        if not self._records:
            return []
        ids = list(candidate_ids)
        if not ids:
            return []
        now = self._clock()
        ejected = [
            (record.ejected_at, agent_id)
            for agent_id in ids
            if (record := self._records.get(agent_id)) is not None and record.ejected_until > now
        ]
        if not ejected:
            return []
        limit = min(math.floor(self.policy.max_ejected_share * len(ids)), len(ids) - 1)
        ejected.sort()
        return [agent_id for _, agent_id in ejected[: max(limit, 0)]]
