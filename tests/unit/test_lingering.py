"""The ledger of connections Consul still counts after this process gave up on them (pure)."""

from __future__ import annotations

import asyncio
import time

import pytest

from consul_agents._gateway import MAX_CONNECTIONS, MIN_CONNECTIONS, ConsulGateway
from consul_agents._lingering import LINGERING, LingeringConnections, lingers_until
from consul_agents._settings import ConsulSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_blocking_read_lingers_until_its_wait_and_jitter_end() -> None:
    """A blocking read with wait 10 s lingers wait + wait/16 plus a margin after it was sent."""
    assert lingers_until(5.0, blocking=True, wait=10.0) == pytest.approx(5.0 + 10.0 + 0.625 + 0.5)


def test_blocking_read_without_wait_lingers_for_consuls_default_wait() -> None:
    """A blocking read naming no wait lingers for Consul's default of 5 minutes (plus jitter)."""
    assert lingers_until(0.0, blocking=True, wait=None) > 300.0


def test_plain_request_lingers_for_the_leaderless_hold() -> None:
    """A plain request given up on lingers for Consul's rpc_hold_timeout (7 s) plus a margin."""
    assert lingers_until(1.0, blocking=False, wait=10.0) == pytest.approx(8.5)


def test_count_drops_entries_as_they_end_per_address() -> None:
    """Entries count until their end time, per Consul address, and are forgotten after it."""
    clock = Clock()
    ledger = LingeringConnections(clock)
    ledger.add("a", 101.0)
    ledger.add("a", 103.0)
    ledger.add("b", 102.0)
    assert (ledger.count("a"), ledger.count("b"), ledger.count("c")) == (2, 1, 0)
    assert ledger.next_end("a") == 101.0
    clock.now = 101.5
    assert ledger.count("a") == 1 and ledger.next_end("a") == 103.0
    clock.now = 103.0
    assert ledger.count("a") == 0 and ledger.next_end("a") is None and ledger.count("b") == 0


def test_ledger_is_bounded_per_address() -> None:
    """Past the cap the entry ending soonest is dropped: the count stays at the cap, the latest end kept."""
    clock = Clock()
    ledger = LingeringConnections(clock, limit=3)
    for end in (110.0, 111.0, 112.0, 113.0, 114.0):
        ledger.add("a", end)
    assert ledger.count("a") == 3
    assert ledger.next_end("a") == 112.0


def test_an_entry_already_ended_is_not_counted() -> None:
    """Recording an end time that has passed (a timed-out blocking read) adds nothing."""
    clock = Clock()
    ledger = LingeringConnections(clock)
    ledger.add("a", 99.0)
    assert ledger.count("a") == 0


def test_gateway_counts_lingering_connections_against_its_pool_down_to_a_floor() -> None:
    """A gateway's places are 128 minus the connections lingering at its Consul, never fewer than 16."""
    address = "http://10.9.9.9:8500"
    gateway = ConsulGateway(ConsulSettings.resolve(address, env={}))
    for _ in range(40):
        LINGERING.add(address, time.monotonic() + 600)
    gateway._in_flight = MAX_CONNECTIONS - 41
    assert gateway._has_room()
    gateway._in_flight += 1
    assert not gateway._has_room()
    for _ in range(200):
        LINGERING.add(address, time.monotonic() + 600)
    gateway._in_flight = MIN_CONNECTIONS - 1
    assert gateway._has_room()
    gateway._in_flight = MIN_CONNECTIONS
    assert not gateway._has_room()


async def test_a_waiter_cancelled_as_it_is_woken_stays_cancelled() -> None:
    """A call waiting for a place, cancelled in the same loop turn as a place frees, raises CancelledError
    (asyncio.wait_for on Python 3.11 swallowed it, and a watch's stop then waited for ever)."""
    gateway = ConsulGateway(ConsulSettings.resolve("http://10.9.9.8:8500", env={}))
    gateway._in_flight = MAX_CONNECTIONS
    waiting = asyncio.create_task(gateway._admit(time.monotonic() + 60))
    await asyncio.sleep(0)
    assert not waiting.done()
    gateway._in_flight -= 1
    gateway._wake()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert gateway._in_flight == MAX_CONNECTIONS - 1
