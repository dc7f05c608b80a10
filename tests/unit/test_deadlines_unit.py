"""The pure parts of time bounds and staleness: call deadlines, which outages are retried, errors naming a
datacenter, Consul's lag headers, and a watch whose read hangs."""

from __future__ import annotations

import asyncio

import pytest

from consul_agents._errors import RegistryTimeoutError, RegistryUnavailableError
from consul_agents._gateway import (
    ConsulResponse,
    QueryMeta,
    _is_retryable,
    _raise_for,
    call_deadline,
    detach_deadline,
    time_left,
)
from consul_agents._watch import Watch, WatchPolicy, data_lag

ADDRESS = "http://127.0.0.1:8500"


def test_call_deadline_nests_without_extending() -> None:
    """A nested deadline never outlasts the enclosing one, a sooner one applies inside, and leaving a
    block restores the enclosing deadline."""
    assert time_left() is None
    with call_deadline(10):
        outer = time_left()
        assert outer is not None and 9 < outer <= 10
        with call_deadline(100):
            inner = time_left()
            assert inner is not None and inner <= outer
        with call_deadline(1):
            sooner = time_left()
            assert sooner is not None and sooner <= 1
        with call_deadline(None):
            kept = time_left()
            assert kept is not None and 1 < kept <= 10
        after = time_left()
        assert after is not None and after > 1
    assert time_left() is None


async def test_background_task_detaches_from_its_creators_deadline() -> None:
    """A task created inside a call inherits its deadline until it detaches, and detaching does not
    change the creator's."""
    seen: list[float | None] = []

    async def loop() -> None:
        seen.append(time_left())
        detach_deadline()
        seen.append(time_left())

    with call_deadline(5):
        await asyncio.create_task(loop())
        assert time_left() is not None
    assert seen[0] is not None and seen[1] is None


@pytest.mark.parametrize(
    ("body", "retried"),
    [
        ("rpc error making call: No cluster leader", False),
        ("No cluster leader", False),
        ("No path to datacenter", False),
        ("Remote DC has no server currently reachable", False),
        ("rpc error making call: EOF", True),
        ("Service Unavailable", True),
    ],
)
def test_which_outages_are_retried(body: str, retried: bool) -> None:
    """An RPC error from a server that just died is worth a retry; no leader (already held 7 s by
    Consul) and a remote datacenter without servers are not."""
    with pytest.raises(RegistryUnavailableError) as caught:
        _raise_for("discover", ADDRESS, 500 if "Unavailable" not in body else 503, body)
    assert _is_retryable(caught.value) is retried


def test_timeouts_are_not_retried() -> None:
    """A request that timed out already spent its time: it is not retried."""
    assert not _is_retryable(RegistryTimeoutError("slow", address=ADDRESS))


def test_remote_datacenter_errors_name_it() -> None:
    """An outage of a datacenter asked through the local agent names that datacenter, in the message and
    as an attribute, with the address it was asked through; "Remote DC has no server" is an outage."""
    with pytest.raises(RegistryUnavailableError) as caught:
        _raise_for("discover", ADDRESS, 500, "Remote DC has no server currently reachable", datacenter="dc4")
    assert caught.value.datacenter == "dc4" and caught.value.address == ADDRESS
    assert str(caught.value).startswith(f"Consul datacenter 'dc4' (asked through {ADDRESS}) cannot serve")


@pytest.mark.parametrize(
    ("meta", "lag"),
    [
        (QueryMeta(1, True, 0), 0.0),
        (QueryMeta(1, True, 40), 0.0),
        (QueryMeta(1, True, 2500), 2.5),
        (QueryMeta(1, False, 40), 0.04),
    ],
)
def test_data_lag_from_consul_headers(meta: QueryMeta, lag: float) -> None:
    """A server's lag behind its leader counts once beyond Raft's heartbeat noise, or at once when the
    server knows no leader."""
    assert data_lag(meta) == pytest.approx(lag)


class _Hanging:
    """A fetch whose first read answers and every later one never returns."""

    def __init__(self, meta: QueryMeta) -> None:
        self.meta = meta
        self.reads = 0
        self.reading = asyncio.Event()

    async def fetch(self, index: int | None, wait: float) -> ConsulResponse:
        self.reads += 1
        if self.reads > 1:
            self.reading.set()
            await asyncio.Event().wait()
        return ConsulResponse(200, [], self.meta)

    async def deliver(self, response: ConsulResponse) -> None:
        return None


async def test_a_read_that_hangs_makes_the_watch_stale() -> None:
    """A blocking read still running hang_after past wait + wait/16 turns the watch stale, counted from
    the last answer; before that it is fresh."""
    clock = [100.0]
    fetch = _Hanging(QueryMeta(5, True, 0))
    policy = WatchPolicy(wait=4.0, hang_after=1.0, rate=1000, burst=1000)
    watch = Watch("w", fetch.fetch, fetch.deliver, policy=policy, clock=lambda: clock[0])
    await watch.start()
    await asyncio.wait_for(fetch.reading.wait(), 5)
    assert watch.staleness() == 0.0 and not watch.hung()
    clock[0] = 100.0 + 4.25 + 0.9
    assert watch.staleness() == 0.0
    clock[0] = 100.0 + 4.25 + 1.1
    assert watch.hung() and watch.staleness() == pytest.approx(5.35)
    await watch.stop()


async def test_leaderless_answer_ages_with_time() -> None:
    """An answer from a server that knew no leader is stale by its LastContact plus the time since."""
    clock = [10.0]
    fetch = _Hanging(QueryMeta(5, False, 3000))
    watch = Watch("w", fetch.fetch, fetch.deliver, policy=WatchPolicy(wait=60), clock=lambda: clock[0])
    await watch.start()
    clock[0] = 12.0
    assert watch.staleness() == pytest.approx(5.0)
    await watch.stop()
