"""Connections Consul still counts after this process closed them, and the admission rule built on them.

Consul 1.8 serves a blocking query to its end (its ``wait`` plus up to wait/16 of jitter, or the next
change) even when the client has closed the connection: until then the connection stays open on Consul's
side (CLOSE-WAIT) and counts against ``limits.http_max_conns_per_client`` (200 per client address). Every
watch stopped mid-read (a registry closing, a view released, an idle watch reaped, a metadata watch no
longer needed) leaves one such connection for up to about 10 s. Measured here: 84 of them from the watches
of a few registries closed one after another, then a burst of 128 new connections reached 200 and Consul
reset the rest ("unreachable (ClientOSError)").

Consul counts per client address, not per connection pool, so the ledger is the process's, keyed by Consul
address. It holds monotonic times only (no event loop), so pools on different loops share it. Pure: the
gateway records and asks; nothing here performs I/O.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

__all__ = ["LINGERING", "MAX_LINGERING", "LingeringConnections", "lingers_until"]

#: Entries kept per address. Consul refuses everything beyond 200 per client anyway; the cap only bounds
#: memory should a caller cancel blocking reads in a loop.
MAX_LINGERING = 1_000
#: Consul's wait when a blocking query names none (5 minutes).
_DEFAULT_WAIT = 300.0
#: How long a Consul server holds a request while it has no leader (rpc_hold_timeout), after which even
#: a plain read or write ends: what a request the client gave up on may still cost.
_HOLD = 7.0
#: Added to Consul's own end of the query (wait + wait/16): its clock, and the close, lag a little.
_MARGIN = 0.5


def lingers_until(started: float, *, blocking: bool, wait: float | None) -> float:
    """When Consul ends, at the latest, a request sent at ``started`` whose client went away (cancelled or
    timed out): a blocking query after its ``wait`` (None: Consul's default) and jitter, any other request
    after the time a server holds it without a leader."""
    if not blocking:
        return started + _HOLD + _MARGIN
    wait = _DEFAULT_WAIT if wait is None else wait
    return started + wait + wait / 16 + _MARGIN


class LingeringConnections:
    """Per Consul address: when each connection this process closed mid-blocking-query ends at Consul."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, limit: int = MAX_LINGERING) -> None:
        self.clock = clock
        self.limit = limit
        self._until: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def add(self, address: str, until: float) -> None:
        with self._lock:
            if address in self._until:
                self._prune(address, self._until[address])
            heap = self._until.setdefault(address, [])
            if len(heap) >= self.limit:
                heapq.heappushpop(heap, until)  # the soonest to end goes: the count stays at the cap
            else:
                heapq.heappush(heap, until)

    def count(self, address: str) -> int:
        """How many connections Consul may still count for this process at ``address``."""
        with self._lock:
            heap = self._until.get(address)
            if not heap:
                return 0
            self._prune(address, heap)
            return len(heap)

    def next_end(self, address: str) -> float | None:
        """The clock time at which the next one ends, None if none lingers."""
        with self._lock:
            heap = self._until.get(address)
            if not heap:
                return None
            self._prune(address, heap)
            return heap[0] if heap else None

    def _prune(self, address: str, heap: list[float]) -> None:
        now = self.clock()
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        if not heap:
            self._until.pop(address, None)


#: The process's ledger (Consul's limit is per client address).
LINGERING = LingeringConnections()
