"""Passive outlier detection: consecutive failures eject, ejections grow and are capped, share is bounded."""

from __future__ import annotations

import math

import pytest

from consul_agents import InvalidAgentError
from consul_agents._lease import OutlierDetector, OutlierPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detector(**policy: float) -> tuple[OutlierDetector, Clock]:
    clock = Clock()
    values = {"consecutive_failures": 3, "base_ejection": 10.0, "max_ejection": 25.0, **policy}
    return OutlierDetector(OutlierPolicy(**values), clock=clock), clock  # type: ignore[arg-type]


def fail(d: OutlierDetector, agent_id: str, times: int) -> list[bool]:
    return [d.record(agent_id, success=False) for _ in range(times)]


def test_consecutive_failures_eject() -> None:
    """The n-th failure in a row ejects; a success in between starts the count again."""
    d, _ = detector()
    assert fail(d, "a", 2) == [False, False]
    d.record("a", success=True)
    assert fail(d, "a", 2) == [False, False]
    assert d.ejected_now() == set()
    assert fail(d, "a", 1) == [True]
    assert d.ejected_now() == {"a"}
    assert d.ejection_of("a") == 10.0


def test_ejection_grows_and_is_capped_then_expires() -> None:
    """Each repeated ejection lasts base * count, capped at max; it ends when its time is up."""
    d, clock = detector()
    durations = []
    for _ in range(4):
        fail(d, "a", 3)
        durations.append(d.ejection_of("a"))
        clock.now += durations[-1]
        assert d.ejected_now() == set()
    assert durations == [10.0, 20.0, 25.0, 25.0]


def test_failures_while_ejected_do_not_extend() -> None:
    """Failures reported during an ejection (leases taken before it) do not eject again."""
    d, clock = detector()
    fail(d, "a", 3)
    clock.now += 5
    assert fail(d, "a", 6) == [False] * 6
    assert d.ejection_of("a") == 5.0


def test_long_healthy_period_resets_the_multiplier() -> None:
    """An agent clear of ejection for max_ejection seconds is ejected for the base time again."""
    d, clock = detector()
    fail(d, "a", 3)
    clock.now += 10
    fail(d, "a", 3)
    assert d.ejection_of("a") == 20.0
    clock.now += 20 + 25
    fail(d, "a", 3)
    assert d.ejection_of("a") == 10.0


@pytest.mark.parametrize(
    ("share", "candidates", "ejected", "expected"),
    [
        (0.5, 4, 3, 2),
        (0.5, 3, 3, 1),
        (1.0, 3, 3, 2),  # never every candidate
        (0.0, 3, 1, 0),
        (0.5, 1, 1, 0),
    ],
)
def test_ejected_share_is_bounded(share: float, candidates: int, ejected: int, expected: int) -> None:
    """At most max_ejected_share of the candidates (and never all) are left out, earliest ejected first."""
    d, clock = detector(max_ejected_share=share)
    ids = [f"a{i}" for i in range(candidates)]
    for agent_id in ids[:ejected]:
        fail(d, agent_id, 3)
        clock.now += 0.1
    left_out = d.excluded(ids)
    assert len(left_out) == expected
    assert left_out == ids[:expected]


def test_excluded_ignores_agents_not_among_candidates() -> None:
    """An ejected agent that is not a candidate neither counts nor appears."""
    d, _ = detector()
    fail(d, "x", 3)
    assert d.excluded(["a", "b"]) == []
    assert d.excluded([]) == []


@pytest.mark.parametrize(
    "policy",
    [
        {"consecutive_failures": 0},
        {"base_ejection": -1.0},
        {"base_ejection": 10.0, "max_ejection": 5.0},
        {"max_ejected_share": 1.5},
        {"max_ejected_share": math.nan},
    ],
)
def test_bad_policy_is_rejected(policy: dict[str, float]) -> None:
    """A policy that makes no sense raises InvalidAgentError."""
    with pytest.raises(InvalidAgentError):
        OutlierPolicy(**policy)  # type: ignore[arg-type]
