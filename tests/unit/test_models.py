"""Validation of the public models: every bad input raises InvalidAgentError naming the field."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_agents._errors import InvalidAgentError
from consul_agents._models import (
    MAX_METADATA_BYTES,
    MAX_TAGS,
    AgentRegistration,
    AgentStatus,
    DiscoveryRequest,
    SelectionCriteria,
)

BASE: dict[str, Any] = {"agent_type": "planner", "capabilities": ["plan"], "endpoint": "http://10.0.0.1:8080"}


def reg(**overrides: Any) -> AgentRegistration:
    return AgentRegistration(**{**BASE, **overrides})


BAD_REGISTRATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("type with space", {"agent_type": "my planner"}, "agent_type"),
    ("type with dot", {"agent_type": "my.planner"}, "agent_type"),
    ("type with underscore", {"agent_type": "my_planner"}, "agent_type"),
    ("type non-ascii", {"agent_type": "plänner"}, "agent_type"),
    ("type empty", {"agent_type": ""}, "agent_type"),
    ("type leading dash", {"agent_type": "-planner"}, "agent_type"),
    ("type trailing dash", {"agent_type": "planner-"}, "agent_type"),
    ("type 58 chars", {"agent_type": "a" * 58}, "agent_type"),
    ("type 64 chars", {"agent_type": "a" * 64}, "agent_type"),
    ("type not a string", {"agent_type": 5}, "agent_type"),
    ("capability with space", {"capabilities": ["make plan"]}, "capabilities"),
    ("capability with dot", {"capabilities": ["make.plan"]}, "capabilities"),
    ("capability with underscore", {"capabilities": ["make_plan"]}, "capabilities"),
    ("capability non-ascii", {"capabilities": ["plän"]}, "capabilities"),
    ("capability 64 chars", {"capabilities": ["c" * 64]}, "capabilities"),
    ("capability with comma", {"capabilities": ["plan,code"]}, "capabilities"),
    ("capability with equals", {"capabilities": ["plan=1"]}, "capabilities"),
    ("capabilities empty", {"capabilities": []}, "capabilities"),
    ("capability duplicated", {"capabilities": ["plan", "code", "plan"]}, "capabilities"),
    ("capability duplicated after lowercasing", {"capabilities": ["Plan", "plan"]}, "capabilities"),
    ("endpoint without scheme", {"endpoint": "10.0.0.1:8080"}, "endpoint"),
    ("endpoint without scheme, slashes", {"endpoint": "//10.0.0.1:8080"}, "endpoint"),
    ("endpoint without host", {"endpoint": "http://:8080"}, "endpoint"),
    ("endpoint without port", {"endpoint": "http://10.0.0.1"}, "endpoint"),
    ("endpoint with bad port", {"endpoint": "http://10.0.0.1:99999"}, "endpoint"),
    ("endpoint with text port", {"endpoint": "http://10.0.0.1:http"}, "endpoint"),
    ("weight zero", {"weight": 0}, "weight"),
    ("weight negative", {"weight": -3}, "weight"),
    ("weight too large", {"weight": 65536}, "weight"),
    ("load negative", {"load": -0.01}, "load"),
    ("load above one", {"load": 1.01}, "load"),
    ("load NaN", {"load": math.nan}, "load"),
    ("load infinite", {"load": math.inf}, "load"),
    ("too many tags", {"tags": {f"k{i}": "v" for i in range(MAX_TAGS + 1)}}, "tags"),
    ("tag key with space", {"tags": {"my key": "v"}}, "tags"),
    ("tag key with dot", {"tags": {"my.key": "v"}}, "tags"),
    ("tag key empty", {"tags": {"": "v"}}, "tags"),
    ("tag key 129 chars", {"tags": {"k" * 129: "v"}}, "tags"),
    ("tag key reserved agent-", {"tags": {"agent-load": "0.5"}}, "tags"),
    ("tag key reserved agent- uppercase", {"tags": {"Agent-Foo": "x"}}, "tags"),
    ("tag key reserved consul-", {"tags": {"consul-version": "1"}}, "tags"),
    ("tag value 513 chars", {"tags": {"k": "v" * 513}}, "tags"),
    ("metadata with a set", {"metadata": {"s": {1, 2}}}, "metadata"),
    ("metadata with NaN", {"metadata": {"x": math.nan}}, "metadata"),
    ("metadata with infinity", {"metadata": {"x": math.inf}}, "metadata"),
    ("metadata too large", {"metadata": {"blob": "x" * MAX_METADATA_BYTES}}, "metadata"),
    ("ttl below one second", {"ttl": 0.5}, "ttl"),
    ("ttl zero", {"ttl": 0}, "ttl"),
    ("ttl negative timedelta", {"ttl": timedelta(seconds=-5)}, "ttl"),
    ("ttl above a day", {"ttl": timedelta(hours=24, seconds=1)}, "ttl"),
    ("ttl NaN", {"ttl": math.nan}, "ttl"),
    ("deregister_after 59 s", {"deregister_after": 59}, "deregister_after"),
    ("deregister_after timedelta 59.9 s", {"deregister_after": timedelta(seconds=59.9)}, "deregister_after"),
    ("agent_id with space", {"agent_id": "my agent"}, "agent_id"),
    ("agent_id with slash", {"agent_id": "a/b"}, "agent_id"),
    ("agent_id starting with dash", {"agent_id": "-a"}, "agent_id"),
    ("agent_id empty", {"agent_id": ""}, "agent_id"),
    ("agent_id 129 chars", {"agent_id": "a" * 129}, "agent_id"),
    ("agent_id non-ascii", {"agent_id": "agént"}, "agent_id"),
    ("unknown field", {"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [(o, f) for _, o, f in BAD_REGISTRATIONS],
    ids=[n for n, _, _ in BAD_REGISTRATIONS],
)
def test_bad_registration_raises_invalid_agent_error_naming_field(
    overrides: dict[str, Any], field: str
) -> None:
    """Each bad registration input raises InvalidAgentError (a ValueError) whose field names the culprit."""
    with pytest.raises(InvalidAgentError) as caught:
        reg(**overrides)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == field
    assert field in str(caught.value)


@pytest.mark.parametrize("missing", ["agent_type", "capabilities", "endpoint"])
def test_missing_required_field_is_named(missing: str) -> None:
    """Leaving out a required field raises InvalidAgentError naming that field."""
    data = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(InvalidAgentError) as caught:
        AgentRegistration(**data)
    assert caught.value.field == missing


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"agent_type": "planner\n"}, "agent_type", id="type-trailing-newline"),
        pytest.param({"capabilities": ["plan\n"]}, "capabilities", id="capability-trailing-newline"),
        pytest.param({"tags": {"key\n": "v"}}, "tags", id="tag-key-trailing-newline"),
        pytest.param({"agent_id": "agent-1\n"}, "agent_id", id="agent-id-trailing-newline"),
    ],
)
def test_trailing_newline_is_rejected(overrides: dict[str, Any], field: str) -> None:
    """A name with a trailing newline is not a DNS label / Meta key / agent id and must be rejected."""
    with pytest.raises(InvalidAgentError) as caught:
        reg(**overrides)
    assert caught.value.field == field


def test_non_ascii_that_lowercases_to_ascii_is_rejected() -> None:
    """A non-ASCII agent type is rejected even when Unicode lowercasing maps it to ASCII."""
    with pytest.raises(InvalidAgentError):
        reg(agent_type="\u212aey")


@pytest.mark.parametrize("ttl", [math.inf, 1e15])
def test_huge_ttl_raises_invalid_agent_error(ttl: float) -> None:
    """An infinite or overflowing ttl raises InvalidAgentError naming ttl, not a raw OverflowError."""
    with pytest.raises(InvalidAgentError) as caught:
        reg(ttl=ttl)
    assert caught.value.field == "ttl"


def test_tag_value_limit_counts_utf8_bytes() -> None:
    """A tag value over 512 UTF-8 bytes is rejected before reaching Consul, whatever its character count."""
    with pytest.raises(InvalidAgentError):
        reg(tags={"k": "é" * 300})


def test_defaults() -> None:
    """A minimal registration gets ttl 15 s, deregister_after 60 s, weight 1, load 0 and empty tags."""
    r = reg()
    assert r.ttl == timedelta(seconds=15)
    assert r.deregister_after == timedelta(seconds=60)
    assert r.weight == 1
    assert r.load == 0.0
    assert r.tags == {}
    assert r.metadata == {}
    assert r.agent_id is None
    assert r.service_name == "agent-planner"


def test_uppercase_names_are_lowercased() -> None:
    """Agent type and capabilities are lowercased, as documented (Consul DNS is case-insensitive)."""
    r = reg(agent_type="Planner", capabilities=["Plan", "CODE-Review"])
    assert r.agent_type == "planner"
    assert r.capabilities == ["plan", "code-review"]
    assert r.service_name == "agent-planner"


def test_boundary_lengths_are_accepted() -> None:
    """A 57-character type, a 63-character capability, a 128-char tag key and a 512-char value are valid."""
    r = reg(
        agent_type="a" * 57,
        capabilities=["c" * 63],
        tags={"k" * 128: "v" * 512},
        agent_id="i" * 128,
        weight=65535,
        load=1.0,
    )
    assert r.service_name == "agent-" + "a" * 57
    assert len(r.service_name) == 63


def test_max_tags_is_accepted() -> None:
    """Exactly MAX_TAGS user tags fit beside the five reserved Meta keys (64 in all)."""
    tags = {f"k{i}": str(i) for i in range(MAX_TAGS)}
    assert MAX_TAGS == 59
    assert reg(tags=tags).tags == tags


def test_metadata_just_under_the_limit_is_accepted() -> None:
    """Metadata whose compact JSON is exactly MAX_METADATA_BYTES bytes is accepted."""
    overhead = len('{"blob":""}')
    metadata = {"blob": "x" * (MAX_METADATA_BYTES - overhead)}
    assert reg(metadata=metadata).metadata == metadata
    with pytest.raises(InvalidAgentError):
        reg(metadata={"blob": "x" * (MAX_METADATA_BYTES - overhead + 1)})


@pytest.mark.parametrize(
    ("given_ttl", "expected"),
    [
        (30, timedelta(seconds=30)),
        (1, timedelta(seconds=1)),
        (2.5, timedelta(seconds=2.5)),
        (timedelta(minutes=2), timedelta(minutes=2)),
        (86400, timedelta(hours=24)),
    ],
)
def test_ttl_accepts_seconds_or_timedelta(given_ttl: Any, expected: timedelta) -> None:
    """ttl may be given as a number of seconds or as a timedelta; both give the same timedelta."""
    assert reg(ttl=given_ttl).ttl == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [(60, timedelta(minutes=1)), (90.5, timedelta(seconds=90.5)), (timedelta(hours=1), timedelta(hours=1))],
)
def test_deregister_after_accepts_seconds_or_timedelta(given: Any, expected: timedelta) -> None:
    """deregister_after may be given in seconds or as a timedelta, down to Consul's one-minute minimum."""
    assert reg(deregister_after=given).deregister_after == expected


@pytest.mark.parametrize("agent_id", ["a", "agent-1", "A_b.c:d-9", "0" * 128])
def test_valid_agent_ids(agent_id: str) -> None:
    """Agent ids of letters, digits, '-', '_', '.' and ':' up to 128 characters are kept, lowercased."""
    assert reg(agent_id=agent_id).agent_id == agent_id.lower()


def test_registration_is_frozen() -> None:
    """A registration cannot be mutated after validation (it would bypass the checks)."""
    r = reg()
    with pytest.raises(Exception, match="frozen"):
        r.weight = 5  # type: ignore[misc]


@given(st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,55}[a-z0-9])?\Z"))
def test_any_dns_label_type_is_accepted(label: str) -> None:
    """Every DNS label up to 57 characters is a valid agent type, kept as given."""
    assert reg(agent_type=label).agent_type == label


@given(st.text(min_size=1, max_size=70))
def test_type_is_accepted_only_if_dns_label(text: str) -> None:
    """Arbitrary text is accepted as a type exactly when its lowercase form is an ASCII DNS label <= 57."""
    lowered = text.lower()
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    valid = (
        lowered.isascii()
        and text.isascii()
        and 1 <= len(lowered) <= 57
        and set(lowered) <= allowed
        and not lowered.startswith("-")
        and not lowered.endswith("-")
    )
    if valid:
        assert reg(agent_type=text).agent_type == lowered
    elif text.isascii() and not text.endswith("\n"):
        with pytest.raises(InvalidAgentError):
            reg(agent_type=text)


# --- DiscoveryRequest and SelectionCriteria -------------------------------------------------------------


def test_empty_discovery_request() -> None:
    """An empty request has no constraint at all."""
    r = DiscoveryRequest()
    assert (r.agent_type, r.capabilities, r.status, r.max_load, r.tags, r.region) == (
        None,
        [],
        None,
        None,
        {},
        None,
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_load": math.nan}, "max_load"),
        ({"max_load": -0.1}, "max_load"),
        ({"max_load": 1.5}, "max_load"),
        ({"region": "dc 1"}, "region"),
        ({"region": "dc.1"}, "region"),
        ({"region": ""}, "region"),
        ({"region": "d" * 65}, "region"),
        ({"agent_type": "bad type"}, "agent_type"),
        ({"capabilities": ["a", "A"]}, "capabilities"),
        ({"tags": {"consul-x": "1"}}, "tags"),
        ({"status": "healthy"}, "status"),
        ({"limit": 3}, "limit"),
    ],
)
def test_bad_discovery_request(overrides: dict[str, Any], field: str) -> None:
    """A bad discovery request raises InvalidAgentError naming the field."""
    with pytest.raises(InvalidAgentError) as caught:
        DiscoveryRequest(**overrides)
    assert caught.value.field == field


def test_discovery_request_normalises() -> None:
    """A discovery request lowercases type and capabilities and parses status strings."""
    r = DiscoveryRequest(
        agent_type="Coder", capabilities=["Python"], status="warning", max_load=0.5, region="dc-2"
    )
    assert r.agent_type == "coder"
    assert r.capabilities == ["python"]
    assert r.status is AgentStatus.WARNING
    assert r.max_load == 0.5
    assert r.region == "dc-2"


def test_selection_criteria_unknown_strategy() -> None:
    """An unknown strategy raises InvalidAgentError naming strategy."""
    with pytest.raises(InvalidAgentError) as caught:
        SelectionCriteria(strategy="fastest")
    assert caught.value.field == "strategy"


def test_selection_criteria_defaults_and_dedupe() -> None:
    """The default strategy is least_loaded, and exclude is de-duplicated keeping first-seen order."""
    assert SelectionCriteria().strategy == "least_loaded"
    c = SelectionCriteria(strategy="round_robin", exclude=["b", "a", "b", "c", "a"])
    assert c.exclude == ["b", "a", "c"]
    assert c.strategy == "round_robin"


def test_selection_criteria_validates_inherited_fields() -> None:
    """SelectionCriteria applies DiscoveryRequest's validation too."""
    with pytest.raises(InvalidAgentError) as caught:
        SelectionCriteria(max_load=2)
    assert caught.value.field == "max_load"
