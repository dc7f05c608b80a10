"""The blocking-query loop for one Consul endpoint (Consul's "watch"), following Consul's documented rules.

Consul answers a read with ``X-Consul-Index``; sending it back as ``?index=`` makes the next read wait until
something changes (or ``wait`` passes). The rules from Consul's documentation, all applied here:

* reset the index to 0 (a plain, non-blocking read) when it goes backwards, e.g. after a snapshot restore
  or a leader change that lost data; the answer that came with it is still delivered;
* never send an index below 1: an answer with index 0 would make every "blocking" read return at once;
* rate-limit the loop, so a service that changes constantly cannot make the client spin;
* back off exponentially, with a cap, after errors;
* skip answers whose index did not move (a ``wait`` that timed out, or a change elsewhere in the index);
* use a read timeout longer than wait + wait/16 (Consul adds up to wait/16 of jitter): the gateway does.

The loop itself knows nothing of what it reads: ``fetch`` performs the read, ``deliver`` consumes a changed
answer. Delivery errors count like read errors (the index is not advanced, so the next read re-delivers).

Staleness (:meth:`Watch.staleness`): a healthy watch's answer is current, because Consul wakes the blocking
read on any change. It stops being healthy when a read fails, and also when a read is still running
``hang_after`` seconds after Consul should have answered it (wait + wait/16): a hung Consul never fails a
read, it just does not answer, and waiting for the read's own timeout would hide the hang for that long.
Consul's own view counts too: ``X-Consul-LastContact`` says how long ago the answering server last heard
from the leader, and ``X-Consul-KnownLeader: false`` that it knows none, so its copy ages with every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from consul_agents._errors import ConsulAgentsError, RegistryUnavailableError
from consul_agents._gateway import ConsulResponse, QueryMeta, detach_deadline

__all__ = ["LAG_NOISE", "Fetch", "Watch", "WatchPolicy", "backoff_delay", "data_lag", "next_index"]

#: A server's lag behind the leader (``X-Consul-LastContact``) below this is Raft's ordinary heartbeat
#: rhythm, not staleness worth reporting (a healthy follower answers with tens of milliseconds).
LAG_NOISE = 1.0

log = logging.getLogger("consul_agents.watch")

#: ``fetch(index, wait)``: index None means a plain read.
Fetch = Callable[[int | None, float], Awaitable[ConsulResponse]]
Deliver = Callable[[ConsulResponse], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WatchPolicy:
    """How a watch paces itself."""

    #: Consul's ``wait``: how long one blocking read may hang before it returns unchanged. Shorter than
    #: Consul's 5-minute default so that a silently dead connection, or a revoked token (Consul checks
    #: ACLs when a read starts), is noticed within about wait + wait/16 + the request timeout.
    wait: float = 10.0
    #: Rate limit: at most ``rate`` reads per second on average, in bursts of at most ``burst``.
    rate: float = 50.0
    burst: int = 10
    #: Back-off after the n-th consecutive error: min(backoff_base * 2**(n-1), backoff_max).
    backoff_base: float = 0.05
    backoff_max: float = 10.0
    #: A read still running this long after Consul should have answered it (wait + wait/16 for a blocking
    #: read, at once for a plain one) makes the watch stale: Consul hangs. The read itself goes on until
    #: its timeout.
    hang_after: float = 1.0


def data_lag(meta: QueryMeta) -> float:
    """How far behind the leader an answer was, in seconds, by what Consul said with it: its LastContact
    once that exceeds :data:`LAG_NOISE`, or whenever the server knew no leader; else 0."""
    if meta.known_leader and meta.last_contact_ms < LAG_NOISE * 1000:
        return 0.0
    return meta.last_contact_ms / 1000


def next_index(previous: int, returned: int) -> int:
    """The index for the next read, given the last one sent and the one Consul returned.

    0 means "read without blocking". An index that went backwards resets to 0; one that is not positive
    becomes 1, so that the next read blocks instead of returning at once forever.
    """
    if previous > 0 and returned < previous:
        return 0
    return max(returned, 1)


def backoff_delay(failures: int, policy: WatchPolicy) -> float:
    """Seconds to wait after ``failures`` consecutive errors (0 when there were none)."""
    if failures <= 0:
        return 0.0
    return float(min(policy.backoff_base * 2 ** min(failures - 1, 30), policy.backoff_max))


class _TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._tokens = self._burst
        self._clock = clock
        self._stamp = clock()

    def delay(self) -> float:
        """Take one token; the seconds to wait before using it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate


class Watch:
    """Keeps reading one endpoint with blocking queries and hands every changed answer to ``deliver``.

    ``start()`` performs the first read and returns once it was delivered (or raises its error); the loop
    then runs in the background until ``stop()``. ``error``/``contact_at`` tell how fresh the last
    delivered answer is: while the loop is healthy its answer is current (Consul would have woken it), and
    once reads fail it is as old as the last successful contact.
    """

    def __init__(
        self,
        name: str,
        fetch: Fetch,
        deliver: Deliver,
        *,
        policy: WatchPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.policy = policy or WatchPolicy()
        self._fetch = fetch
        self._deliver = deliver
        self._clock = clock
        self._bucket = _TokenBucket(self.policy.rate, self.policy.burst, clock)
        self._task: asyncio.Task[None] | None = None
        self.index = 0
        self.meta = QueryMeta()
        #: When Consul last answered (monotonic clock), and the error of the last read if it failed.
        self.contact_at: float | None = None
        #: When the read in flight started, and when Consul should have answered it at the latest.
        self._reading: tuple[float, float] | None = None
        self.error: ConsulAgentsError | None = None
        self.failures = 0
        self.updates = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Watch({self.name!r}, index={self.index}, {state})"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def hung(self, now: float | None = None) -> bool:
        """True while a read runs more than ``hang_after`` past the time Consul should have answered it."""
        reading = self._reading
        if reading is None:
            return False
        return (self._clock() if now is None else now) > reading[1] + self.policy.hang_after

    def staleness(self, now: float | None = None) -> float:
        """How old the delivered answer may be, in seconds: 0 while the watch is healthy and the answering
        server was in touch with its leader; else Consul's reported lag plus the seconds since Consul last
        answered (infinite if it never did)."""
        if self.contact_at is None:
            return float("inf")
        now = self._clock() if now is None else now
        lag = data_lag(self.meta)
        if self.error is None and lag == 0.0:
            reading = self._reading  # hung(), inlined: this runs on every cached answer
            if reading is None or now <= reading[1] + self.policy.hang_after:
                return 0.0
        return lag + max(now - self.contact_at, 0.0)

    async def start(self) -> None:
        """Read once and deliver, then keep watching in the background. Raises the first read's error."""
        if self._task is not None:
            return
        await self._cycle()
        if self.error is not None:
            raise self.error
        self._task = asyncio.create_task(self._run(), name=f"watch:{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh(self) -> None:
        """One plain read now, delivered if it is not older than what the watch already has."""
        response = await self._fetch(None, self.policy.wait)
        if response.meta.index >= self.index or self.index == 0:
            await self._deliver(response)
            self.meta = response.meta
            self.contact_at = self._clock()

    async def _cycle(self) -> None:
        """One read; on success delivers a changed answer and advances the index."""
        sent = self.index
        started = self._clock()
        wait = self.policy.wait
        self._reading = (started, started + (wait + wait / 16 if sent > 0 else 0.0))
        try:
            response = await self._fetch(sent if sent > 0 else None, wait)
            returned = response.meta.index
            if sent == 0 or returned != sent:
                await self._deliver(response)
                self.updates += 1
        except ConsulAgentsError as exc:
            self._failed(exc)
            return
        except Exception as exc:  # a bug in delivery must not kill the watch silently
            log.exception("watch %s: delivering an answer failed", self.name)
            self._failed(RegistryUnavailableError(f"watch {self.name}: {type(exc).__name__}: {exc}"))
            return
        finally:
            self._reading = None
        self.index = next_index(sent, returned)
        self.meta = response.meta
        self.contact_at = self._clock()
        self.error = None
        self.failures = 0

    def _failed(self, exc: ConsulAgentsError) -> None:
        self.error = exc
        self.failures += 1
        log.debug("watch %s failed (%d in a row): %s", self.name, self.failures, exc)

    async def _run(self) -> None:
        detach_deadline()  # the loop outlives the call that started it
        while True:
            pause = max(backoff_delay(self.failures, self.policy), self._bucket.delay())
            if pause > 0:
                await asyncio.sleep(pause)
            await self._cycle()
