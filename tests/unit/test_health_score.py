"""The health score from history (consul_agents._health_score): its formula, its bounds and its costs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_agents import AgentInfo, AgentStatus
from consul_agents._health_score import HealthHistory, HealthPolicy, status_cap

PASSING, WARNING, CRITICAL, MAINTENANCE = (
    AgentStatus.PASSING,
    AgentStatus.WARNING,
    AgentStatus.CRITICAL,
    AgentStatus.MAINTENANCE,
)


def agent(agent_id: str, status: AgentStatus = PASSING, datacenter: str = "dc1") -> AgentInfo:
    return AgentInfo(
        agent_id=agent_id,
        agent_type="t",
        capabilities=["plan"],
        status=status,
        endpoint="http://127.0.0.1:9000",
        health_score=status_cap(status),
        current_load=0.0,
        last_heartbeat=None,
        datacenter=datacenter,
    )


def score(history: HealthHistory, info: AgentInfo, now: float) -> float:
    (stamped,) = history.stamp([info], now).agents
    return stamped.health_score


@pytest.mark.parametrize(
    ("status", "expected"), [(PASSING, 1.0), (WARNING, 0.5), (CRITICAL, 0.0), (MAINTENANCE, 0.0)]
)
def test_an_agent_without_history_scores_its_status_cap(status: AgentStatus, expected: float) -> None:
    """An agent seen for the first time scores what the old fixed map gave its status, as the same object."""
    history = HealthHistory()
    info = agent("a", status)
    stamped = history.stamp([info], now=10.0)
    assert stamped.agents[0] is info and info.health_score == expected
    assert stamped.rescore_at == math.inf


def test_the_formula_pass_ratio_times_flap_factor() -> None:
    """Passing 0-100 s, critical 100-110 s, passing since: at 200 s the pass ratio is 190/200 and two
    changes give a flap factor of 1/(1 + 2/4), rounded to two decimals."""
    history = HealthHistory()
    history.stamp([agent("a")], 0.0)
    assert score(history, agent("a", CRITICAL), 100.0) == 0.0
    history.stamp([agent("a")], 110.0)
    assert score(history, agent("a"), 200.0) == round(190 / 200 / 1.5, 2)


def test_a_flapping_agent_scores_below_a_steady_one_and_recovers_after_the_window() -> None:
    """Each status change lowers the score; five minutes without one bring it back to 1."""
    history = HealthHistory()
    history.stamp([agent("steady"), agent("flappy")], 0.0)
    now = 0.0
    for _ in range(3):
        now += 1.0
        history.stamp([agent("steady"), agent("flappy", CRITICAL)], now)
        now += 1.0
        stamped = history.stamp([agent("steady"), agent("flappy")], now)
    steady, flappy = stamped.agents
    assert steady.health_score == 1.0
    assert 0 < flappy.health_score < 0.5
    assert stamped.rescore_at == now + history.policy.resolution
    later = history.stamp([agent("steady"), agent("flappy")], now + 301)
    assert [a.health_score for a in later.agents] == [1.0, 1.0]
    assert later.rescore_at == math.inf


def test_more_changes_score_lower() -> None:
    """The score falls with the number of changes in the window, at the same pass ratio."""
    scores = []
    for flaps in (1, 2, 4, 8):
        history = HealthHistory()
        history.stamp([agent("a")], 0.0)
        now = 0.0
        for _ in range(flaps):
            history.stamp([agent("a", WARNING)], now + 0.001)
            now += 1.0
            history.stamp([agent("a")], now)
        scores.append(score(history, agent("a"), 200.0))
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4


def test_status_caps_the_score() -> None:
    """A warning agent scores at most 0.5 and a critical one 0, whatever their history."""
    history = HealthHistory()
    history.stamp([agent("a")], 0.0)
    assert score(history, agent("a", WARNING), 100.0) <= 0.5
    assert score(history, agent("a", MAINTENANCE), 101.0) == 0.0


def test_failed_leases_lower_the_score_and_successes_raise_it_back() -> None:
    """One failed lease of one halves the score; nine successes after it bring it to (9 + 1) / (10 + 1);
    outcomes older than the window no longer count."""
    history = HealthHistory()
    info = agent("a")
    history.stamp([info], 0.0)
    history.record_lease(info, False, 10.0)
    assert history.failed_at == 10.0
    assert score(history, info, 10.0) == pytest.approx(0.5)
    for _ in range(9):
        history.record_lease(info, True, 11.0)
    assert score(history, info, 11.0) == round(10 / 11, 2)
    assert score(history, info, 400.0) == 1.0


def test_leases_of_agents_never_seen_are_not_counted() -> None:
    """A lease outcome for an agent the history has not seen creates no record."""
    history = HealthHistory()
    history.record_lease(agent("ghost"), False, 1.0)
    assert len(history) == 0


def test_agents_are_told_apart_by_datacenter() -> None:
    """The same id in two datacenters is two agents."""
    history = HealthHistory()
    for now, status in ((0.0, PASSING), (1.0, CRITICAL), (2.0, PASSING)):
        dc1 = history.stamp([agent("a", status, "dc1")], now)
        dc2 = history.stamp([agent("a", datacenter="dc2")], now)
    assert dc1.agents[0].health_score < 1.0 and dc2.agents[0].health_score == 1.0


def test_agents_reused_from_the_previous_version_are_not_looked_at_again() -> None:
    """Passing the previous version: an agent that is the very same object keeps its record untouched, a
    new object (a changed entry) has its status recorded, whether the list kept its length or not."""
    history = HealthHistory()
    steady, flappy = agent("steady"), agent("flappy")
    first = [steady, flappy]
    history.stamp(first, 0.0)
    second = [steady, agent("flappy", CRITICAL)]
    history.stamp(second, 1.0, first)
    third = [steady, agent("flappy"), agent("new")]
    stamped = history.stamp(third, 2.0, second)
    assert stamped.agents[0].health_score == 1.0
    assert 0 < stamped.agents[1].health_score < 1.0
    assert stamped.agents[2].health_score == 1.0 and len(history) == 3


def test_memory_is_bounded_by_agents_and_changes() -> None:
    """At most max_agents records (least recently seen forgotten) and max_changes changes per agent."""
    history = HealthHistory(HealthPolicy(max_changes=4), max_agents=3)
    for n in range(5):
        history.stamp([agent(f"a{n}")], float(n))
    assert len(history) == 3
    for n in range(100):
        history.stamp([agent("a4", CRITICAL if n % 2 else PASSING)], 10.0 + n)
    record = history._records[("dc1", "a4")]
    assert record.changes is not None and len(record.changes) == 4
    assert 0 < score(history, agent("a4"), 110.0) < 1


def test_policy_refuses_nonsense() -> None:
    """A window, resolution or flap count that is not positive is refused."""
    with pytest.raises(ValueError):
        HealthPolicy(window=0)
    with pytest.raises(ValueError):
        HealthPolicy(flaps_to_halve=-1)


@given(
    st.lists(
        st.tuples(st.sampled_from(list(AgentStatus)), st.floats(0.0, 50.0), st.booleans() | st.none()),
        max_size=60,
    )
)
def test_the_score_stays_within_zero_and_the_status_cap(
    events: list[tuple[AgentStatus, float, bool | None]],
) -> None:
    """Whatever the history of statuses and leases, the score is between 0 and the current status cap."""
    history = HealthHistory(HealthPolicy(window=100.0, max_changes=5))
    now = 0.0
    for status, step, lease in events:
        now += step
        info = agent("a", status)
        value = score(history, info, now)
        assert 0.0 <= value <= status_cap(status)
        if lease is not None:
            history.record_lease(info, lease, now)
        assert 0.0 <= history.score_of(info, now) <= status_cap(status)
