"""The blocking-query loop: Consul's index rules, rate limit and back-off, driven by a scripted endpoint."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from support import eventually

from consul_agents._errors import RegistryUnavailableError
from consul_agents._gateway import ConsulResponse, QueryMeta
from consul_agents._watch import Watch, WatchPolicy, backoff_delay, next_index

FAST = WatchPolicy(wait=1.0, rate=10_000.0, burst=100, backoff_base=0.001, backoff_max=0.004)


@pytest.mark.parametrize(
    ("previous", "returned", "expected"),
    [
        (0, 7, 7),  # first read
        (7, 9, 9),  # moved forward
        (9, 9, 9),  # unchanged
        (9, 4, 0),  # went backwards: reset to a plain read
        (0, 0, 1),  # never below 1
        (5, -3, 0),
        (0, -3, 1),
    ],
)
def test_next_index_follows_consul_rules(previous: int, returned: int, expected: int) -> None:
    """The next index resets to 0 when it goes backwards and is never below 1 otherwise."""
    assert next_index(previous, returned) == expected


def test_backoff_is_exponential_and_capped() -> None:
    """Back-off doubles per consecutive failure from the base and stops growing at the cap."""
    policy = WatchPolicy(backoff_base=0.1, backoff_max=1.0)
    assert [backoff_delay(n, policy) for n in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff_delay(10_000, policy) == 1.0


class Script:
    """A fake endpoint: answers each read with the next scripted index (or raises the scripted error),
    then hangs like a blocking query with nothing new."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = list(steps)
        self.sent: list[int | None] = []
        self.delivered: list[int] = []
        self.more = asyncio.Event()
        self.sent_at: list[float] = []

    def add(self, step: Any) -> None:
        self.steps.append(step)
        self.more.set()

    async def fetch(self, index: int | None, wait: float) -> ConsulResponse:
        self.sent.append(index)
        self.sent_at.append(time.monotonic())
        while not self.steps:
            self.more = asyncio.Event()
            await self.more.wait()
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return ConsulResponse(200, {"index": step}, QueryMeta(index=step, known_leader=step != 13))

    async def deliver(self, response: ConsulResponse) -> None:
        self.delivered.append(response.body["index"])


async def until(condition: Any) -> None:
    async def check() -> bool:
        return bool(condition())

    await eventually(check, 5, "watch reached the expected state")


async def run_script(steps: list[Any], policy: WatchPolicy = FAST) -> tuple[Script, Watch]:
    script = Script(steps)
    watch = Watch("test", script.fetch, script.deliver, policy=policy)
    await watch.start()
    await until(lambda: len(script.sent) > len(steps))
    return script, watch


async def test_indexes_sent_and_changes_delivered() -> None:
    """Each read sends the last index; unchanged answers are skipped; a backwards index resets to a plain
    read, and both answers are delivered; index 0 after a plain read becomes 1."""
    script, watch = await run_script([5, 5, 8, 3, 3, 3, 0, 0])
    await watch.stop()
    assert script.sent == [None, 5, 5, 8, None, 3, 3, None, 1]
    assert script.delivered == [5, 8, 3, 3, 0, 0]
    assert watch.index == 1


async def test_errors_back_off_then_recover() -> None:
    """Errors do not advance the index, count consecutive failures and make the answer stale; the next
    success clears them."""
    clock = [100.0]
    script = Script([4, RegistryUnavailableError("down"), RegistryUnavailableError("down")])
    watch = Watch("test", script.fetch, script.deliver, policy=FAST, clock=lambda: clock[0])
    await watch.start()
    await until(lambda: watch.failures >= 2)
    assert watch.failures == 2
    assert isinstance(watch.error, RegistryUnavailableError)
    clock[0] = 103.5
    assert watch.staleness() == pytest.approx(3.5)
    script.add(6)
    await until(lambda: watch.error is None)
    await watch.stop()
    assert script.sent[:3] == [None, 4, 4]
    assert script.delivered == [4, 6]
    assert watch.failures == 0 and watch.staleness() == 0.0


async def test_first_read_error_is_raised_by_start() -> None:
    """start() raises the first read's error and leaves no background task."""
    script = Script([RegistryUnavailableError("down")])
    watch = Watch("test", script.fetch, script.deliver, policy=FAST)
    with pytest.raises(RegistryUnavailableError):
        await watch.start()
    assert not watch.running
    assert watch.staleness() == float("inf")


async def test_delivery_bug_does_not_kill_the_watch() -> None:
    """An exception in delivery counts as a failed cycle: the index stays and the answer is re-read."""
    calls: list[int] = []

    async def deliver(response: ConsulResponse) -> None:
        calls.append(response.meta.index)
        if len(calls) == 2:
            raise KeyError("boom")

    script = Script([2, 3, 3])
    watch = Watch("test", script.fetch, deliver, policy=FAST)
    await watch.start()
    await until(lambda: len(script.sent) >= 4)
    await watch.stop()
    assert script.sent[:4] == [None, 2, 2, 3]
    assert calls == [2, 3, 3]


async def test_rate_limit_spaces_reads() -> None:
    """With rate 100/s and burst 1, 11 reads that each return at once take at least about 0.1 s."""
    script = Script(list(range(1, 12)))
    watch = Watch("test", script.fetch, script.deliver, policy=WatchPolicy(rate=100.0, burst=1))
    started = time.monotonic()
    await watch.start()
    await until(lambda: len(script.sent) >= 12)
    elapsed = script.sent_at[11] - started
    await watch.stop()
    assert len(script.delivered) == 11
    assert elapsed >= 0.09
