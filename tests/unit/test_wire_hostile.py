"""The read side of the wire format on hostile input: whatever an entry or a KV value holds, reading it
never raises, and only what this library could have written is read as an agent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consul_agents import _wire as wire
from consul_agents import _wire_read as wire_read
from consul_agents._models import AgentInfo, AgentRegistration

HEARTBEAT = datetime(2026, 11, 23, 12, 30, 45, 123000, tzinfo=UTC)


def good_entry(agent_id: str = "a-1", **service: Any) -> dict[str, Any]:
    """A health entry exactly as Consul returns one this library registered, with ``service`` overrides."""
    registration = AgentRegistration(
        agent_type="planner", capabilities=["plan"], endpoint="http://10.0.0.1:80", tags={"tier": "gold"}
    )
    body = wire.service_definition(registration, agent_id, load=0.25, heartbeat=HEARTBEAT)
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.9", "Datacenter": "dc1"},
        "Service": {
            "ID": agent_id,
            "Service": body["Name"],
            "Tags": body["Tags"],
            "Address": body["Address"],
            "Port": body["Port"],
            "Meta": body["Meta"],
            "Weights": body["Weights"],
        }
        | service,
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": wire.check_id(agent_id), "Status": "passing"},
        ],
    }


GOOD_META = good_entry()["Service"]["Meta"]


def with_meta(**meta: str | None) -> dict[str, Any]:
    entry = good_entry()
    merged = {**entry["Service"]["Meta"], **meta}
    entry["Service"]["Meta"] = {k: v for k, v in merged.items() if v is not None}
    return entry


def test_a_good_entry_is_an_agent() -> None:
    """The entry of a registration this library wrote reads back as that agent."""
    info = wire_read.read_entry(good_entry())
    assert isinstance(info, AgentInfo)
    assert (info.agent_id, info.agent_type, info.current_load, info.tags) == (
        "a-1",
        "planner",
        0.25,
        {"tier": "gold"},
    )


def no_own_check() -> dict[str, Any]:
    entry = good_entry()
    entry["Checks"] = [{"CheckID": "serfHealth", "Status": "passing"}]
    return entry


def no_checks_at_all() -> dict[str, Any]:
    entry = good_entry()
    entry["Checks"] = None
    return entry


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (good_entry("evil/../../coder/x"), "bad_id"),
        (good_entry("a/b"), "bad_id"),
        (good_entry(".hidden"), "bad_id"),
        (good_entry("x" * 129), "bad_id"),
        (no_own_check(), "no_check"),
        (no_checks_at_all(), "no_check"),
        (with_meta(**{"agent-endpoint": "not a url"}), "bad_endpoint"),
        (with_meta(**{"agent-endpoint": "http://h:99999"}), "bad_endpoint"),
        (with_meta(**{"agent-endpoint": "http://[::1"}), "bad_endpoint"),
        (with_meta(**{"agent-endpoint": None}), "bad_endpoint"),
        (with_meta(**{"agent-load": "abc"}), "bad_load"),
        (with_meta(**{"agent-load": "nan"}), "bad_load"),
        (with_meta(**{"agent-load": "inf"}), "bad_load"),
        (with_meta(**{"agent-load": "1.5"}), "bad_load"),
        (with_meta(**{"agent-load": None}), "bad_load"),
        (with_meta(**{"agent-heartbeat": "yesterday"}), "bad_heartbeat"),
        (with_meta(**{"agent-heartbeat": "2026-01-01T00:00:00"}), "bad_heartbeat"),
        (with_meta(**{"agent-heartbeat": None}), "bad_heartbeat"),
        (good_entry(Tags=[]), "bad_capabilities"),
        (good_entry(Tags=["Plan"]), "bad_capabilities"),
        (good_entry(Tags=["plan", "plan"]), "bad_capabilities"),
        (good_entry(Tags=["\x1b[2J"]), "bad_capabilities"),
        (with_meta(**{"agent-x": "y"}), "bad_tags"),
        (with_meta(**{"Consul-x": "y"}), "bad_tags"),
        (with_meta(**{"bad key": "y"}), "bad_tags"),
        (good_entry(Weights={"Passing": 0}), "bad_weight"),
        (good_entry(Weights={"Passing": 70000}), "bad_weight"),
        (good_entry(Weights={"Passing": True}), "bad_weight"),
        (good_entry(Weights={"Passing": "1"}), "bad_weight"),
        (with_meta(**{"agent-metadata": "[1]"}), "bad_metadata"),
        (with_meta(**{"agent-metadata": "{"}), "bad_metadata"),
        (with_meta(**{"agent-metadata": '{"a": NaN}'}), "bad_metadata"),
        (with_meta(**{"agent-metadata": "[" * 400}), "bad_metadata"),
        (good_entry(Meta={**GOOD_META, "agent-endpoint": 5}), "malformed"),
        (good_entry(Meta={**GOOD_META, "agent-heartbeat": 5}), "malformed"),
        (good_entry(Meta=["x"]), "malformed"),
        (good_entry(Tags="plan"), "bad_capabilities"),
        ({"Service": {"ID": "a-1", "Service": "agent-p"}, "Checks": "x"}, "malformed"),
        ({"Service": {"ID": "a-1", "Service": "agent-p"}, "Checks": [None]}, "malformed"),
        ({"Service": {"ID": "a-1", "Service": "agent-p"}, "Node": 5}, "malformed"),
        ({"Service": None}, "malformed"),
        ({"Service": {"ID": 5, "Service": "agent-p"}}, "malformed"),
        ([], "malformed"),
        (None, "malformed"),
    ],
)
def test_entries_this_library_could_not_have_written_are_skipped(entry: Any, reason: str) -> None:
    """Each kind of entry this library never writes is skipped with its own reason, and never raises."""
    result = wire_read.read_entry(entry)
    assert isinstance(result, wire_read.Skipped), result
    assert result.reason == reason
    assert result.reason in wire_read.SKIP_REASONS
    with pytest.raises(ValueError, match=reason):
        wire_read.entry_to_info(entry)


@pytest.mark.parametrize(
    "name", ["web", "agent-", "agent-Planner", "agent-a_b", "agent-" + "a" * 58, "consul"]
)
def test_services_that_are_not_agent_services_are_not_agents(name: str) -> None:
    """A service whose name is not agent-<type> for a valid type is not an agent: None, not a skip."""
    assert wire_read.read_entry(good_entry(Service=name)) is None
    assert not wire.is_agent_service(name)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"[" * 100_000, "more than"),
        ("[" * 60_000, "deeper than"),
        ("[" * 65 + '"\\"' * 20_000, "deeper than"),  # a quadratic scan of its strings took 40 s
        ("{" * 65 + '"\\' * 20_000, "deeper than"),
        ('{"a":' * 65 + "1" + "}" * 65, "deeper than"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": "\xc3"}', "not UTF-8"),
        ("[1, 2]", "not an object"),
        ('"text"', "not an object"),
        ("null", "not an object"),
        ('{"a": Infinity}', "not JSON"),
        ('{"a": -NaN}', "not JSON"),
        ('{"a": 1', "not JSON"),
        ('{"n": ' + "9" * 5000 + "}", "not JSON"),
    ],
)
def test_metadata_this_library_could_not_have_written_is_refused(value: str | bytes, problem: str) -> None:
    """Metadata read back that is too large, too deep, not UTF-8, not JSON or not an object is refused with
    a message naming the problem, and no RecursionError can escape."""
    with pytest.raises(ValueError, match=problem):
        wire_read.decode_metadata(value)


def test_metadata_up_to_the_depth_bound_is_read() -> None:
    """Metadata nested exactly to the bound, brackets in strings aside, reads back whole."""
    deep: dict[str, Any] = {"leaf": "[[[{{{" * 40}
    for _ in range(wire_read.MAX_READ_DEPTH - 1):
        deep = {"a": deep}
    text = json.dumps(deep)
    assert wire_read.decode_metadata(text) == deep
    assert wire_read.decode_metadata(text.encode()) == deep


def test_kv_metadata_is_fetched_only_for_ids_safe_in_a_path() -> None:
    """Only an agent entry with a valid id whose Meta says "kv" asks for its KV value: a hostile id never
    reaches a KV path."""
    kv = {"agent-metadata": "kv"}
    assert wire_read.kv_metadata_wanted(with_meta(**kv)) == ("planner", "a-1")
    hostile = good_entry("evil/../../coder/x")
    hostile["Service"]["Meta"] = {**hostile["Service"]["Meta"], **kv}
    assert wire_read.kv_metadata_wanted(hostile) is None
    assert wire_read.kv_metadata_wanted(good_entry()) is None
    assert wire_read.kv_metadata_wanted(None) is None


def test_missing_kv_metadata_reads_as_empty() -> None:
    """Meta says the metadata is in KV and KV has none (yet): the agent is shown with empty metadata."""
    info = wire_read.read_entry(with_meta(**{"agent-metadata": "kv"}), kv_metadata=None)
    assert isinstance(info, AgentInfo) and info.metadata == {}


def test_a_skip_message_escapes_and_cuts_what_it_quotes() -> None:
    """A skip names the entry with control characters escaped and long values cut."""
    skipped = wire_read.read_entry(good_entry("\x1b[2J" + "x" * 500))
    assert isinstance(skipped, wire_read.Skipped)
    text = str(skipped)
    assert "\x1b" not in text and "\\x1b" in text and len(text) < 300


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def mangled_entries(draw: st.DrawFn) -> Any:
    """A good entry with a random part replaced by a random JSON value, or random JSON altogether."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    entry = good_entry()
    where = draw(
        st.sampled_from(
            [
                "Node",
                "Service",
                "Checks",
                "Service.Meta",
                "Service.Tags",
                "Service.ID",
                "Service.Weights",
                "Meta.agent-load",
                "Meta.agent-endpoint",
                "Meta.agent-heartbeat",
                "Meta.agent-metadata",
                "Checks.0",
            ]
        )
    )
    value = draw(json_values | st.text())
    head, _, tail = where.partition(".")
    if head == "Meta":
        entry["Service"]["Meta"][tail] = value
    elif head == "Checks" and tail:
        entry["Checks"][int(tail)] = value
    elif tail:
        entry[head][tail] = value
    else:
        entry[head] = value
    return entry


@settings(max_examples=400)
@given(entry=mangled_entries(), kv=st.none() | st.binary(max_size=40) | st.text(max_size=40))
def test_reading_any_entry_never_raises(entry: Any, kv: bytes | str | None) -> None:
    """Whatever an entry and its KV value hold, read_entry answers an AgentInfo, a Skipped or None, and an
    AgentInfo always carries a valid endpoint, a load from 0 to 1 and a time with an offset."""
    result = wire_read.read_entry(entry, kv_metadata=kv)
    assert result is None or isinstance(result, AgentInfo | wire_read.Skipped)
    if isinstance(result, AgentInfo):
        assert 0.0 <= result.current_load <= 1.0
        assert result.last_heartbeat is not None and result.last_heartbeat.tzinfo is not None
        assert result.capabilities and "://" in result.endpoint


def test_an_answer_too_deep_for_python_is_decoded_entry_by_entry() -> None:
    """An answer holding an entry nested deeper than Python's JSON parser goes decodes entry by entry: that
    entry is None (read as malformed), the others are decoded, and nothing raises."""
    entries = [good_entry("a-1"), good_entry("a-2"), good_entry("a-3")]
    entries[1]["Service"]["Proxy"] = {"Config": "DEEP"}
    text = json.dumps(entries, separators=(",", ":"))
    text = text.replace('"DEEP"', '{"a":' * 3000 + "1" + "}" * 3000)  # json.dumps cannot write it
    decoded = wire.health_entries(text)
    assert isinstance(decoded, list) and decoded[1] is None
    results = wire_read.read_entries(decoded)
    assert [r.agent_id if isinstance(r, AgentInfo) else None for r in results] == ["a-1", None, "a-3"]
    assert isinstance(results[1], wire_read.Skipped) and results[1].reason == "malformed"
