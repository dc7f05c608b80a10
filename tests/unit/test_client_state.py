"""Pure parts of the client layer's state: frozen answers, bounded selection and outlier state, and the
_wire readers of KV metadata, catalog services and ACL objects."""

from __future__ import annotations

import base64
import copy
import json
import pickle
import random
from typing import Any

import pytest
from support import candidate

from consul_agents import AgentInfo, AgentStatus, SelectionCriteria
from consul_agents import _wire as wire
from consul_agents._frozen import FrozenDict, FrozenList, freeze
from consul_agents._lease import OutlierDetector, OutlierPolicy
from consul_agents._selection import SelectionState, select, selection_key


def info(**fields: Any) -> AgentInfo:
    values: dict[str, Any] = {
        "agent_id": "a",
        "agent_type": "t",
        "capabilities": ["plan"],
        "status": AgentStatus.PASSING,
        "endpoint": "http://h:1",
        "health_score": 1.0,
        "current_load": 0.0,
        "last_heartbeat": None,
        "tags": {"tier": "gold"},
        "metadata": {"limits": {"rpm": 10}, "langs": ["en"]},
    }
    return AgentInfo(**{**values, **fields})


@pytest.mark.parametrize(
    "change",
    [
        lambda i: i.tags.clear(),
        lambda i: i.tags.__setitem__("k", "v"),
        lambda i: i.tags.update(k="v"),
        lambda i: i.tags.setdefault("k", "v"),
        lambda i: i.tags.pop("tier"),
        lambda i: i.capabilities.append("x"),
        lambda i: i.capabilities.sort(),
        lambda i: i.capabilities.__setitem__(0, "x"),
        lambda i: i.metadata["limits"].__setitem__("rpm", 0),
        lambda i: i.metadata["langs"].extend(["fr"]),
        lambda i: i.metadata.__ior__({"x": 1}),
    ],
)
def test_agent_info_values_refuse_every_change(change: Any) -> None:
    """Every mutating method of an AgentInfo's lists and dicts, at any depth, raises TypeError."""
    agent = info()
    with pytest.raises(TypeError):
        change(agent)
    assert agent.tags == {"tier": "gold"} and agent.capabilities == ["plan"]
    assert agent.metadata == {"limits": {"rpm": 10}, "langs": ["en"]}


def test_frozen_values_behave_as_plain_ones_for_reading() -> None:
    """Frozen values compare equal to plain ones, serialise as JSON, copy, pickle and dump like them."""
    agent = info()
    assert json.loads(json.dumps(agent.metadata)) == {"limits": {"rpm": 10}, "langs": ["en"]}
    assert agent.model_dump(mode="json")["tags"] == {"tier": "gold"}
    assert copy.deepcopy(agent) == agent and pickle.loads(pickle.dumps(agent)) == agent
    assert isinstance(pickle.loads(pickle.dumps(agent.tags)), FrozenDict)
    mutable = dict(agent.tags)
    mutable["k"] = "v"
    assert agent.tags == {"tier": "gold"}
    assert agent.model_copy(update={"staleness": 1.0}).metadata is agent.metadata


def test_freeze_reaches_every_depth() -> None:
    """freeze() replaces every nested list and dict, and leaves other values alone."""
    frozen = freeze({"a": [1, {"b": [2]}], "c": "d"})
    assert isinstance(frozen, FrozenDict) and isinstance(frozen["a"], FrozenList)
    assert isinstance(frozen["a"][1]["b"], FrozenList) and frozen["c"] == "d"
    assert hash(FrozenList([1, 2])) == hash(FrozenList([1, 2]))


def test_selection_key_ignores_what_only_skips_agents() -> None:
    """max_load and exclude do not start a rotation of their own; type, strategy and datacenter do."""
    base = SelectionCriteria(agent_type="t", strategy="round_robin")
    assert selection_key(base, "dc1") == selection_key(
        SelectionCriteria(agent_type="t", strategy="round_robin", max_load=0.3, exclude=["x"]), "dc1"
    )
    assert selection_key(base, "dc1") != selection_key(base, "dc2")
    assert selection_key(base, "dc1") != selection_key(
        SelectionCriteria(agent_type="t", strategy="weighted_random"), "dc1"
    )


@pytest.mark.parametrize("strategy", ["round_robin", "weighted_random"])
def test_selection_state_keeps_at_most_max_keys(strategy: str) -> None:
    """Rotations for more distinct keys than max_keys forget the least recently used ones."""
    state = SelectionState(max_keys=8)
    pool = [candidate(f"a{n}") for n in range(5)]
    for key in range(100):
        select(pool, strategy, rng=random.Random(key), state=state, key=key)  # type: ignore[arg-type]
    assert len(state.cursors) <= 8 and len(state.passes) <= 8 and len(state.virtual_time) <= 8


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_outlier_records_expire_after_a_quiet_max_ejection() -> None:
    """A record with no failure and no ejection for max_ejection seconds is forgotten."""
    clock = Clock()
    detector = OutlierDetector(OutlierPolicy(consecutive_failures=2, max_ejection=30.0), clock=clock)
    for n in range(50):
        detector.record(f"a{n}", success=False)
    assert len(detector) == 50
    clock.now += 31
    detector.record("fresh", success=False)
    assert len(detector) == 1


def test_outlier_records_are_capped() -> None:
    """At most max_records agents are remembered, the least recently active forgotten first."""
    clock = Clock()
    detector = OutlierDetector(OutlierPolicy(), clock=clock, max_records=10)
    for n in range(100):
        detector.record(f"a{n}", success=False)
    assert len(detector) == 10
    assert detector.ejection_of("a99") == 0.0


def test_an_ejected_agent_is_not_forgotten_while_ejected() -> None:
    """Expiry never forgets an agent before its ejection ended and max_ejection more passed."""
    clock = Clock()
    detector = OutlierDetector(
        OutlierPolicy(consecutive_failures=1, base_ejection=100.0, max_ejection=200.0), clock=clock
    )
    assert detector.record("bad", success=False)
    clock.now += 250  # ejection over at +100, quiet for 150 s: still remembered (ejections keep counting)
    detector.record("other", success=True)
    assert len(detector) == 1 and detector.record("bad", success=False)
    assert detector.ejection_of("bad") == 200.0  # second ejection: twice the base
    clock.now += 401
    detector.record("other", success=True)
    assert len(detector) == 0


def _kv(key: str, value: bytes | None) -> dict[str, Any]:
    return {"Key": key, "Value": None if value is None else base64.b64encode(value).decode()}


def test_kv_metadata_values_keeps_only_well_formed_entries() -> None:
    """Only base64 values directly under the type's prefix are read, as bytes (their text is checked when
    the agent is read); the rest is left out."""
    prefix = wire.metadata_prefix("planner")
    body = [
        _kv(prefix + "a", b'{"x":1}'),
        _kv(prefix + "nested/b", b"{}"),
        _kv(wire.metadata_prefix("coder") + "c", b"{}"),
        _kv(prefix + "d", None),
        _kv(prefix + "e", b"\xff\xfe"),
        {"Key": prefix + "f", "Value": "not base64!"},
        "junk",
        {"Key": 5, "Value": "e30="},
    ]
    assert wire.kv_metadata_values(body, "planner") == {"a": b'{"x":1}', "e": b"\xff\xfe"}
    assert wire.kv_metadata_values(None, "planner") == {}
    assert wire.kv_metadata_values({"Key": prefix + "a"}, "planner") == {}


def test_catalog_and_acl_readers_accept_only_their_shapes() -> None:
    """agent_services keeps agent services with string tags; acl_text reads text fields or ""."""
    body = {"agent-a": ["x", 1], "consul": [], "agent-b": None, 3: ["y"]}
    assert wire.agent_services(body) == {"agent-a": ["x"], "agent-b": []}
    assert wire.agent_services(["agent-a"]) == {}
    assert wire.acl_text({"ID": "abc"}, "ID") == "abc"
    assert wire.acl_text({"ID": 5}, "ID") == wire.acl_text(None, "ID") == ""
    assert wire.local_metadata_key({"Service": "agent-p", "ID": "p1", "Meta": {"agent-metadata": "kv"}}) == (
        wire.metadata_key("p", "p1")
    )
    assert wire.local_metadata_key({"Service": "agent-p", "ID": "p1", "Meta": None}) is None
    assert wire.agent_service_of_checks([{"ServiceName": "web"}, {"ServiceName": "agent-p"}]) == "agent-p"
    assert wire.agent_service_of_checks("junk") is None
