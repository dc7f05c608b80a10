"""Pools, pure parts: the scaling signal's formula, settings read as untrusted bytes, the per-pool gauges,
and the bounds on the process-wide label sets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from support import candidate

from consul_agents import _pools as pools
from consul_agents import _wire as wire
from consul_agents._models import AgentInfo, AgentStatus
from consul_agents._pools import PoolSettings, PoolSettingsError, desired_agents, parse_settings


def agent(
    agent_id: str,
    load: float,
    *,
    status: AgentStatus = AgentStatus.PASSING,
    weight: int = 1,
    draining: bool = False,
    agent_type: str = "coder",
) -> AgentInfo:
    return candidate(agent_id, load=load, weight=weight).model_copy(
        update={"agent_type": agent_type, "status": status, "datacenter": "dc1", "draining": draining}
    )


@pytest.mark.parametrize(
    ("passing", "mean", "settings", "unmet", "expected"),
    [
        (0, None, PoolSettings(), 0, 0),  # nothing runs, nothing asked
        (0, None, PoolSettings(), 3, 1),  # demand for an empty pool: scale from zero
        (3, 0.7, PoolSettings(), 0, 3),  # at the target exactly: no float rounding up to 4
        (4, 0.9, PoolSettings(target_load=0.6), 0, 6),  # ceil(4 * 0.9 / 0.6)
        (4, 0.1, PoolSettings(target_load=0.6), 0, 1),  # shrinks
        (4, 0.1, PoolSettings(target_load=0.6), 1, 5),  # unmet demand: one more than passing
        (4, 0.9, PoolSettings(max_agents=5, target_load=0.6), 0, 5),  # clamped to max
        (4, 0.0, PoolSettings(min_agents=2), 0, 2),  # clamped to min
        (4, 0.9, PoolSettings(desired_agents=3, max_agents=10), 1, 3),  # pinned by hand
        (4, 0.9, PoolSettings(desired_agents=30, max_agents=10), 0, 10),  # pinned, still clamped
    ],
)
def test_desired_agents_follows_the_documented_formula(
    passing: int, mean: float | None, settings: PoolSettings, unmet: int, expected: int
) -> None:
    """desired = ceil(passing * mean / target), raised to passing + 1 by unmet demand, clamped, or pinned."""
    assert desired_agents(passing, mean, settings, unmet) == expected


@given(
    passing=st.integers(0, 1000),
    mean=st.floats(0, 1),
    target=st.floats(0.01, 1),
    low=st.integers(0, 50),
    span=st.integers(0, 50),
    unmet=st.integers(0, 5),
)
def test_desired_agents_stays_within_bounds(
    passing: int, mean: float, target: float, low: int, span: int, unmet: int
) -> None:
    """Whatever the load, the signal is within min..max and never below passing + 1 after unmet demand
    (unless max says otherwise)."""
    settings = PoolSettings(min_agents=low, max_agents=low + span, target_load=target)
    value = desired_agents(passing, mean, settings, unmet)
    assert low <= value <= low + span
    if unmet:
        assert value >= min(passing + 1, low + span)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "not JSON"),
        (b"null", "not an object"),
        (b'{"min_agents": true}', "min_agents"),
        (b'{"min_agents": 1.5}', "min_agents"),
        (b'{"target_load": NaN}', "target_load"),
        (b'{"target_load": 1e400}', "target_load"),
        (b'{"max_agents": 1000001}', "max_agents"),
        (b'{"cost_per_agent_hour": -1}', "cost_per_agent_hour"),
        (b'{"x": [[[[[[1]]]]]]}', "not JSON"),
        (b" " * 5000, "at most 4096"),
    ],
)
def test_settings_from_kv_are_refused_with_the_problem_named(raw: bytes, problem: str) -> None:
    """Bytes that are not valid settings raise PoolSettingsError naming the problem, never anything else."""
    with pytest.raises(PoolSettingsError, match=problem):
        parse_settings(raw)


def test_settings_written_are_compact_and_read_back() -> None:
    """What set_pool_settings writes holds only the fields that differ from their defaults, and reads back."""
    settings = PoolSettings(min_agents=1, cost_per_agent_hour=0.5)
    assert json.loads(settings.to_json()) == {"min_agents": 1, "cost_per_agent_hour": 0.5}
    assert parse_settings(settings.to_json().encode()) == settings


def test_kv_listing_keeps_direct_keys_with_base64_values_only() -> None:
    """The recurse listing yields each direct key's bytes; nested keys, other prefixes and bad base64 go."""
    body = [
        {"Key": "consul-agents/pools/coder", "Value": "e30="},
        {"Key": "consul-agents/pools/a/b", "Value": "e30="},
        {"Key": "consul-agents/poolsx", "Value": "e30="},
        {"Key": "consul-agents/pools/bad", "Value": "!!"},
        {"Key": "consul-agents/pools/none", "Value": None},
        "junk",
    ]
    assert wire.kv_values_under(body, pools.POOL_PREFIX) == {"coder": b"{}"}
    assert wire.kv_values_under({"not": "a list"}, pools.POOL_PREFIX) == {}


def test_pool_type_of_accepts_exact_agent_types_only() -> None:
    """A key names a pool only when it is an agent type spelled as the library spells it."""
    assert pools.pool_type_of("coder") == "coder"
    assert pools.pool_type_of("Coder") is None
    assert pools.pool_type_of("bad_type") is None
    assert pools.pool_type_of("x" * 80) is None


def test_build_pools_counts_what_serves() -> None:
    """passing and capacity count passing agents that are not draining; load is theirs; every status is
    reported; a pool with settings and no agent is listed too; unreadable settings give no signal."""
    agents = [
        agent("a", 0.5, weight=3),
        agent("b", 0.9, weight=1),
        agent("c", 0.0, draining=True),
        agent("d", 0.0, status=AgentStatus.CRITICAL),
        agent("e", 0.2, status=AgentStatus.WARNING),
    ]
    settings = {
        ("idle", "dc1"): PoolSettings(min_agents=1),
        ("broken", "dc1"): PoolSettingsError("the value is not JSON"),
    }
    found = {p.agent_type: p for p in pools.build_pools(agents, settings, now=0.0)}
    coder = found["coder"]
    assert (coder.passing, coder.draining, coder.capacity) == (2, 1, 4)
    assert coder.agents == {"passing": 3, "warning": 1, "critical": 1, "maintenance": 0}
    assert coder.load_mean == pytest.approx(0.7) and coder.load_max == 0.9
    assert coder.desired_agents == 2  # ceil(2 * 0.7 / 0.7)
    assert (found["idle"].passing, found["idle"].desired_agents) == (0, 1)
    assert (
        found["broken"].desired_agents is None and found["broken"].settings_error == "the value is not JSON"
    )


def test_pool_exposition_publishes_each_pool_and_omits_unknowns() -> None:
    """The per-scrape gauges carry one series per pool; no max_agents or cost when unset, no signal for a
    pool whose settings are unreadable, and settings_invalid says so."""
    settings = {("coder", "dc1"): PoolSettings(max_agents=9), ("broken", "dc1"): PoolSettingsError("bad")}
    text = pools.pool_exposition(pools.build_pools([agent("a", 0.5)], settings, now=0.0)).decode()
    values = {
        (sample.name, sample.labels.get("agent_type"), sample.labels.get("status")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert values[("consul_agents_pool_desired_agents", "coder", None)] == 1
    assert values[("consul_agents_pool_max_agents", "coder", None)] == 9
    assert values[("consul_agents_pool_agents", "coder", "passing")] == 1
    assert ("consul_agents_pool_cost_per_agent_hour", "coder", None) not in values
    assert ("consul_agents_pool_desired_agents", "broken", None) not in values
    assert values[("consul_agents_pool_settings_invalid", "broken", None)] == 1


def test_unmet_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_LABEL_SETS pools, unmet selections of new types are counted under agent_type "_other"
    (any caller may name types at will), while known ones keep their label; recent demand is remembered
    within the window only."""
    from cachetools import LRUCache

    monkeypatch.setattr(pools, "_labelled", LRUCache(maxsize=2))
    monkeypatch.setattr(pools, "MAX_LABEL_SETS", 2)
    for agent_type in ("ua", "ub", "uc", "ua"):
        pools.record_unmet(agent_type, "dcx", "none_registered", now=100.0)

    def count(agent_type: str) -> float:
        labels = {"agent_type": agent_type, "datacenter": "dcx", "reason": "none_registered"}
        return REGISTRY.get_sample_value("consul_agents_selections_unmet_total", labels) or 0.0

    assert (count("ua"), count("ub"), count("uc")) == (2, 1, 0)
    assert count("_other") >= 1
    assert pools.recent_unmet("ua", "dcx", now=130.0) == 2
    assert pools.recent_unmet("ua", "dcx", now=161.0) == 0


def test_a_problem_quoting_the_value_is_escaped() -> None:
    """An unknown field named with control characters is named escaped in the error (which is logged)."""
    with pytest.raises(PoolSettingsError) as caught:
        parse_settings(b'{"\\u001b[2J\\u202e": 1}')
    assert "\x1b" not in str(caught.value) and "\u202e" not in str(caught.value)
    assert "\\u001b[2J" in str(caught.value)
