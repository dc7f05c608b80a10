"""The Consul wire format: exact JSON bodies, round trips through health entries, filters and quoting."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consul_agents import InvalidAgentError
from consul_agents import _wire as wire
from consul_agents import _wire_read as wire_read
from consul_agents._models import AgentInfo, AgentRegistration, AgentStatus, DiscoveryRequest, utcnow

HEARTBEAT = datetime(2026, 11, 23, 12, 30, 45, 123000, tzinfo=UTC)


def reg(**overrides: Any) -> AgentRegistration:
    data: dict[str, Any] = {
        "agent_type": "planner",
        "capabilities": ["plan", "code"],
        "endpoint": "http://10.1.2.3:8080/api",
    }
    return AgentRegistration(**{**data, **overrides})


def health_entry(
    definition: dict[str, Any],
    *,
    checks: list[dict[str, Any]] | None = None,
    node: str = "node-1",
    datacenter: str = "dc1",
) -> dict[str, Any]:
    """A /v1/health/service entry as Consul returns it for a service registered with ``definition``."""
    return {
        "Node": {"ID": "uuid", "Node": node, "Address": "192.168.0.9", "Datacenter": datacenter},
        "Service": {
            "ID": definition["ID"],
            "Service": definition["Name"],
            "Tags": definition["Tags"],
            "Address": definition["Address"],
            "Port": definition["Port"],
            "Meta": definition["Meta"],
            "Weights": definition["Weights"],
            "EnableTagOverride": False,
        },
        "Checks": checks
        if checks is not None
        else [
            {"Node": node, "CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
            {"Node": node, "CheckID": wire.check_id(definition["ID"]), "Status": "passing"},
        ],
    }


# --- service_definition ---------------------------------------------------------------------------------


def test_service_definition_exact_json() -> None:
    """service_definition produces exactly the Consul registration body documented in _wire."""
    r = reg(tags={"team": "search", "zone": "a"}, metadata={"model": "m1", "n": 2}, weight=7)
    body = wire.service_definition(r, "planner-1", load=0.25, heartbeat=HEARTBEAT)
    assert body == {
        "ID": "planner-1",
        "Name": "agent-planner",
        "Tags": ["plan", "code"],
        "Address": "10.1.2.3",
        "Port": 8080,
        "Meta": {
            "team": "search",
            "zone": "a",
            "agent-endpoint": "http://10.1.2.3:8080/api",
            "agent-load": "0.25",
            "agent-heartbeat": "2026-11-23T12:30:45.123+00:00",
            "agent-ttl": "15s",
            "agent-metadata": '{"model":"m1","n":2}',
        },
        "Weights": {"Passing": 7, "Warning": 1},
        "EnableTagOverride": False,
        "Check": {
            "CheckID": "service:planner-1",
            "Name": "heartbeat",
            "Notes": "TTL heartbeat from consul-agents; critical after 15s",
            "TTL": "15s",
            "Status": "passing",
            "DeregisterCriticalServiceAfter": "60s",
        },
    }
    json.dumps(body)  # the body must be JSON as it is


def test_service_definition_without_metadata_has_no_metadata_key() -> None:
    """With no metadata, Meta carries no agent-metadata key at all."""
    body = wire.service_definition(reg(), "a", load=0.0, heartbeat=HEARTBEAT)
    assert "agent-metadata" not in body["Meta"]
    assert body["Meta"]["agent-load"] == "0"


def test_service_definition_custom_durations() -> None:
    """Custom ttl and deregister_after appear as Go durations in the check and in Meta."""
    body = wire.service_definition(
        reg(ttl=2.5, deregister_after=timedelta(minutes=5)), "a", load=1.0, heartbeat=HEARTBEAT
    )
    assert body["Check"]["TTL"] == "2.5s"
    assert body["Check"]["DeregisterCriticalServiceAfter"] == "300s"
    assert body["Meta"]["agent-ttl"] == "2.5s"
    assert body["Meta"]["agent-load"] == "1"


def test_service_definition_ipv6_endpoint() -> None:
    """An IPv6 endpoint gives the bare address (no brackets) and its port."""
    body = wire.service_definition(reg(endpoint="https://[::1]:9443"), "a", load=0.0, heartbeat=HEARTBEAT)
    assert (body["Address"], body["Port"]) == ("::1", 9443)


def test_large_metadata_goes_to_kv() -> None:
    """Metadata whose JSON exceeds 512 characters is marked 'kv' in Meta and returned whole for KV."""
    metadata = {"prompt": "p" * 600}
    body = wire.service_definition(reg(metadata=metadata), "a", load=0.0, heartbeat=HEARTBEAT)
    assert body["Meta"]["agent-metadata"] == "kv"
    meta_value, kv_value = wire.encode_metadata(metadata)
    assert meta_value == "kv"
    assert kv_value is not None
    assert json.loads(kv_value) == metadata
    assert wire.metadata_key("planner", "a") == "consul-agents/metadata/planner/a"


@pytest.mark.parametrize(
    ("size", "in_meta"),
    [(512 - len('{"k":""}'), True), (513 - len('{"k":""}'), False)],
)
def test_metadata_meta_limit_boundary(size: int, in_meta: bool) -> None:
    """Metadata JSON of exactly 512 characters stays in Meta; one more character moves it to KV."""
    metadata = {"k": "x" * size}
    meta_value, kv_value = wire.encode_metadata(metadata)
    if in_meta:
        assert (meta_value, kv_value) == (json.dumps(metadata, separators=(",", ":")), None)
    else:
        assert meta_value == "kv"
        assert kv_value == json.dumps(metadata, separators=(",", ":"))


def test_encode_empty_metadata() -> None:
    """Empty metadata is stored nowhere."""
    assert wire.encode_metadata({}) == (None, None)


def test_metadata_json_cannot_carry_is_rejected_before_encoding() -> None:
    """Metadata with non-string keys is rejected by validation, so accepted metadata always encodes."""
    with pytest.raises(InvalidAgentError) as caught:
        reg(metadata={"outer": {1: "x", "b": 2}})
    assert caught.value.field == "metadata"


# --- round trip -------------------------------------------------------------------------------------------

_label = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\Z")
_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def registrations(draw: st.DrawFn) -> AgentRegistration:
    host = draw(st.sampled_from(["10.0.0.1", "agent.example.com", "localhost", "[fe80::1]"]))
    port = draw(st.integers(1, 65535))
    scheme = draw(st.sampled_from(["http", "https"]))
    path = draw(st.sampled_from(["", "/", "/v1"]))
    return AgentRegistration(
        agent_type=draw(_label),
        capabilities=draw(st.lists(_label, min_size=1, max_size=4, unique=True)),
        endpoint=f"{scheme}://{host}:{port}{path}",
        tags=draw(
            st.dictionaries(st.from_regex(r"\A[a-z_][A-Za-z0-9_]{0,10}\Z"), st.text(max_size=30), max_size=4)
        ),
        metadata=draw(st.dictionaries(st.text(max_size=8), _json, max_size=4)),
        weight=draw(st.integers(1, 65535)),
        ttl=draw(st.integers(1, 3600)),
    )


@settings(max_examples=150, deadline=None)
@given(r=registrations(), load=st.floats(0.0, 1.0), big=st.booleans())
def test_round_trip_through_health_entry(r: AgentRegistration, load: float, big: bool) -> None:
    """A registration body read back as a Consul health entry gives the same agent (load to 4 digits)."""
    if big:
        r = r.model_copy(update={"metadata": {**r.metadata, "pad": "z" * 600}})
    body = wire.service_definition(r, "id-1", load=load, heartbeat=HEARTBEAT)
    _, kv_value = wire.encode_metadata(r.metadata)
    entry = health_entry(body)
    assert (wire_read.kv_metadata_wanted(entry) is not None) == (kv_value is not None)
    info = wire_read.entry_to_info(entry, kv_metadata=kv_value)
    assert info.agent_id == "id-1"
    assert info.agent_type == r.agent_type
    assert info.capabilities == r.capabilities
    assert info.endpoint == r.endpoint
    assert info.tags == r.tags
    assert info.metadata == r.metadata
    assert info.weight == r.weight
    assert abs(info.current_load - load) <= 5e-5
    assert info.status is AgentStatus.PASSING
    assert info.health_score == 1.0
    assert info.last_heartbeat == HEARTBEAT
    assert info.datacenter == "dc1"
    assert info.node == "node-1"
    assert entry["Service"]["Meta"]["agent-ttl"] == wire.format_duration(r.ttl)


def test_read_entries_skips_non_agents_and_uses_kv() -> None:
    """read_entries answers None for services that are not agents and feeds each agent its KV metadata by
    id."""
    body = wire.service_definition(reg(metadata={"big": "b" * 600}), "x", load=0.5, heartbeat=HEARTBEAT)
    entry = health_entry(body)
    other = health_entry({**body, "ID": "web-1", "Name": "web"})
    bare = health_entry({**body, "ID": "p", "Name": "agent-"})
    results = wire_read.read_entries(
        [other, entry, bare], kv_metadata={"x": json.dumps({"big": "b" * 600})}, staleness=2.5
    )
    assert results[0] is None and results[2] is None
    infos = wire_read.infos_only(results)
    assert [i.agent_id for i in infos] == ["x"]
    assert infos[0].metadata == {"big": "b" * 600}
    assert infos[0].staleness == 2.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.5", 0.5), ("7", 1.0), ("-1", 0.0), ("nan", 0.0), ("junk", 0.0), (None, 0.0), ("1e-05", 1e-05)],
)
def test_reported_load_is_clamped(text: str | None, expected: float) -> None:
    """A published load is parsed and clamped to [0, 1]; junk or NaN reads as 0."""
    meta = {} if text is None else {"agent-load": text}
    assert wire.reported_load({"Meta": meta}) == expected


# --- aggregate_status / health_score ----------------------------------------------------------------------


def _checks(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"CheckID": cid, "Status": status} for cid, status in pairs]


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ([], AgentStatus.PASSING),
        (_checks(("service:a", "passing")), AgentStatus.PASSING),
        (_checks(("serfHealth", "passing"), ("service:a", "passing")), AgentStatus.PASSING),
        (_checks(("serfHealth", "passing"), ("service:a", "warning")), AgentStatus.WARNING),
        (_checks(("serfHealth", "critical"), ("service:a", "passing")), AgentStatus.CRITICAL),
        (_checks(("serfHealth", "warning"), ("service:a", "critical")), AgentStatus.CRITICAL),
        (_checks(("service:a", "critical"), ("other", "warning")), AgentStatus.CRITICAL),
        (_checks(("service:a", "passing"), ("_service_maintenance:a", "critical")), AgentStatus.MAINTENANCE),
        (_checks(("_node_maintenance", "critical"), ("service:a", "passing")), AgentStatus.MAINTENANCE),
        (_checks(("service:a", "critical"), ("_node_maintenance", "critical")), AgentStatus.MAINTENANCE),
        (_checks(("service:a", "bogus")), AgentStatus.CRITICAL),
        ([{"CheckID": "service:a"}], AgentStatus.CRITICAL),
    ],
)
def test_aggregate_status(checks: list[dict[str, str]], expected: AgentStatus) -> None:
    """Maintenance wins, then the worst status; serfHealth counts; unknown statuses count as critical."""
    assert wire.aggregate_status(checks) is expected


@pytest.mark.parametrize(
    ("status", "score"),
    [
        (AgentStatus.PASSING, 1.0),
        (AgentStatus.WARNING, 0.5),
        (AgentStatus.CRITICAL, 0.0),
        (AgentStatus.MAINTENANCE, 0.0),
    ],
)
def test_health_score(status: AgentStatus, score: float) -> None:
    """Each status maps to its documented health score, also on AgentInfo from an entry."""
    assert wire.HEALTH_SCORES[status] == score
    body = wire.service_definition(reg(), "a", load=0.0, heartbeat=HEARTBEAT)
    check_status = "critical" if status is AgentStatus.MAINTENANCE else status.value
    checks = _checks(("service:a", check_status))
    if status is AgentStatus.MAINTENANCE:
        checks += _checks(("_service_maintenance:a", "critical"))
    info = wire_read.entry_to_info(health_entry(body, checks=checks))
    assert (info.status, info.health_score) == (status, score)


# --- quote -----------------------------------------------------------------------------------------------


@given(st.text())
def test_quote_is_one_safe_literal(value: str) -> None:
    """quote() gives one double-quoted literal with no raw quote, backslash, backtick or ASCII control."""
    quoted = wire.quote(value)
    assert quoted.startswith('"')
    assert quoted.endswith('"')
    assert len(quoted) >= 2
    inner = quoted[1:-1]
    assert '"' not in inner
    assert "`" not in inner
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in inner)
    # every backslash starts a \uXXXX escape
    assert re.fullmatch(r"(?:[^\\]|\\u[0-9a-f]{4})*", inner, flags=re.DOTALL)
    assert json.loads(quoted) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plan", '"plan"'),
        ("", '""'),
        ('a"b', '"a\\u0022b"'),
        ("a\\b", '"a\\u005cb"'),
        ("a`b", '"a\\u0060b"'),
        ("a\nb", '"a\\u000ab"'),
        ("\x7f", '"\\u007f"'),
        ("é", '"é"'),
    ],
)
def test_quote_examples(value: str, expected: str) -> None:
    """quote() escapes exactly the dangerous characters as \\uXXXX and leaves the rest as they are."""
    assert wire.quote(value) == expected


# --- filter_expression / matches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, 'not ("critical" in Checks.Status)'),
        (AgentStatus.PASSING, 'not ("critical" in Checks.Status) and not ("warning" in Checks.Status)'),
        (AgentStatus.WARNING, 'not ("critical" in Checks.Status) and "warning" in Checks.Status'),
        (
            AgentStatus.CRITICAL,
            '"critical" in Checks.Status and not (Checks.CheckID matches "^_(service|node)_maintenance")',
        ),
        (AgentStatus.MAINTENANCE, 'Checks.CheckID matches "^_(service|node)_maintenance"'),
    ],
)
def test_filter_expression_status(status: AgentStatus | None, expected: str) -> None:
    """Each status gives its exact filter clause, avoiding go-bexpr's broken 'not in'."""
    expression = wire.filter_expression(DiscoveryRequest(status=status))
    assert expression == expected
    assert " not in " not in expression


def test_filter_expression_capabilities_and_tags() -> None:
    """Capabilities and tags become quoted clauses (tags sorted by key), joined with the status clause."""
    request = DiscoveryRequest(capabilities=["plan", "code"], tags={"zone": "a", "team": 'x"y'})
    assert wire.filter_expression(request) == (
        '"plan" in Service.Tags and "code" in Service.Tags and '
        'Service.Meta["team"] == "x\\u0022y" and Service.Meta["zone"] == "a" and '
        'not ("critical" in Checks.Status)'
    )


@given(st.text(max_size=40))
def test_filter_injection_stays_in_one_literal(value: str) -> None:
    """Whatever a tag value holds, it appears in the filter as exactly one string literal."""
    expression = wire.filter_expression(DiscoveryRequest(tags={"team": value}))
    prefix = 'Service.Meta["team"] == '
    suffix = ' and not ("critical" in Checks.Status)'
    assert expression.startswith(prefix)
    assert expression.endswith(suffix)
    literal = expression[len(prefix) : -len(suffix)]
    assert literal.count('"') == 2
    assert json.loads(literal) == value


def info(**overrides: Any) -> AgentInfo:
    data: dict[str, Any] = {
        "agent_id": "a1",
        "agent_type": "planner",
        "capabilities": ["plan", "code"],
        "status": AgentStatus.PASSING,
        "endpoint": "http://h:1",
        "health_score": 1.0,
        "current_load": 0.4,
        "last_heartbeat": HEARTBEAT,
        "tags": {"team": "search", "zone": "a"},
        "datacenter": "dc1",
    }
    return AgentInfo(**{**data, **overrides})


@pytest.mark.parametrize(
    ("request_args", "info_args", "expected"),
    [
        ({}, {}, True),
        ({}, {"status": AgentStatus.WARNING}, True),
        ({}, {"status": AgentStatus.CRITICAL}, False),
        ({}, {"status": AgentStatus.MAINTENANCE}, False),
        ({"status": "passing"}, {"status": AgentStatus.WARNING}, False),
        ({"status": "warning"}, {"status": AgentStatus.WARNING}, True),
        ({"status": "critical"}, {"status": AgentStatus.CRITICAL}, True),
        ({"status": "critical"}, {"status": AgentStatus.MAINTENANCE}, False),
        ({"status": "maintenance"}, {"status": AgentStatus.MAINTENANCE}, True),
        ({"agent_type": "planner"}, {}, True),
        ({"agent_type": "coder"}, {}, False),
        ({"capabilities": ["plan"]}, {}, True),
        ({"capabilities": ["plan", "code"]}, {}, True),
        ({"capabilities": ["plan", "test"]}, {}, False),
        ({"tags": {"team": "search"}}, {}, True),
        ({"tags": {"team": "search", "zone": "b"}}, {}, False),
        ({"tags": {"missing": ""}}, {}, False),
        ({"max_load": 0.4}, {}, True),
        ({"max_load": 0.39}, {}, False),
        ({"region": "dc1"}, {}, True),
        ({"region": "dc2"}, {}, False),
        ({"region": "dc2"}, {"datacenter": ""}, True),
    ],
)
def test_matches_table(request_args: dict[str, Any], info_args: dict[str, Any], expected: bool) -> None:
    """matches() applies every field of the request as documented (hand-written expectations)."""
    assert wire.matches(DiscoveryRequest(**request_args), info(**info_args)) is expected


# --- service_names_for ------------------------------------------------------------------------------------

CATALOG = {
    "consul": [],
    "web": ["plan"],
    "agent-planner": ["plan", "code"],
    "agent-coder": ["code", "python"],
    "agent-reviewer": ["code"],
    "agent-": ["plan"],
}


@pytest.mark.parametrize(
    ("request_args", "expected"),
    [
        ({}, ["agent-coder", "agent-planner", "agent-reviewer"]),
        ({"agent_type": "planner"}, ["agent-planner"]),
        ({"agent_type": "tester"}, []),
        ({"agent_type": "planner", "capabilities": ["python"]}, ["agent-planner"]),
        ({"capabilities": ["code"]}, ["agent-coder", "agent-planner", "agent-reviewer"]),
        ({"capabilities": ["plan"]}, ["agent-planner"]),
        ({"capabilities": ["code", "python"]}, ["agent-coder"]),
        ({"capabilities": ["rust"]}, []),
    ],
)
def test_service_names_for(request_args: dict[str, Any], expected: list[str]) -> None:
    """Only agent services are candidates: by type if given, else those whose tags cover the capabilities."""
    assert wire.service_names_for(DiscoveryRequest(**request_args), CATALOG) == expected


# --- ttl_update / with_load / format_duration ------------------------------------------------------------


@pytest.mark.parametrize("status", list(AgentStatus))
def test_ttl_update_is_stable(status: AgentStatus) -> None:
    """The same status always gives the same body, so repeated heartbeats cause no catalog write."""
    assert (
        wire.ttl_update(status)
        == wire.ttl_update(status)
        == {
            "Status": status.value,
            "Output": f"{status.value}: heartbeat",
        }
    )
    assert wire.ttl_update(status, "busy") == {"Status": status.value, "Output": f"{status.value}: busy"}


def test_with_load_changes_only_load_and_heartbeat() -> None:
    """with_load keeps every field of the service, updates load and heartbeat, and carries no Check."""
    body = wire.service_definition(reg(tags={"t": "1"}, weight=3), "a", load=0.1, heartbeat=HEARTBEAT)
    agent_service = {k: v for k, v in body.items() if k not in ("Name", "Check")}
    agent_service["Service"] = body["Name"]
    later = HEARTBEAT + timedelta(seconds=5)
    updated = wire.with_load(agent_service, load=0.75, heartbeat=later)
    expected_meta = {**body["Meta"], "agent-load": "0.75", "agent-heartbeat": "2026-11-23T12:30:50.123+00:00"}
    assert updated == {
        "ID": "a",
        "Name": "agent-planner",
        "Tags": ["plan", "code"],
        "Address": "10.1.2.3",
        "Port": 8080,
        "Meta": expected_meta,
        "EnableTagOverride": False,
        "Weights": {"Passing": 3, "Warning": 1},
    }
    assert "Check" not in updated
    assert agent_service["Meta"]["agent-load"] == "0.1"  # input not mutated


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(seconds=15), "15s"),
        (timedelta(minutes=1), "60s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(hours=24), "86400s"),
        (timedelta(milliseconds=250), "0.25s"),
    ],
)
def test_format_duration(value: timedelta, expected: str) -> None:
    """Durations are written as Go duration strings in seconds."""
    assert wire.format_duration(value) == expected


def test_format_duration_large_fractional_is_go_duration() -> None:
    """A large fractional duration is still a plain decimal Go duration string with its exact value."""
    assert wire.format_duration(timedelta(seconds=1234567.5)) == "1234567.5s"


# --- reading /v1/health/service answers ---------------------------------------------------------------


def consul_json(value: Any, *, dev_mode: bool) -> str:
    """``value`` as Consul writes it: Go's json.Marshal (compact), or json.MarshalIndent with four spaces
    and a final newline, as a ``-dev`` agent writes every answer."""
    if dev_mode:
        return json.dumps(value, indent=4) + "\n"
    return json.dumps(value, separators=(",", ":"))


def full_entry(agent_id: str, meta: dict[str, str], tags: list[str]) -> dict[str, Any]:
    """A health entry with the members Consul 1.8 writes, most of which the library does not read."""
    definition = wire.service_definition(reg(agent_id=agent_id), agent_id, load=0.5, heartbeat=HEARTBEAT) | {
        "Tags": tags
    }
    entry = health_entry(definition)
    entry["Node"] |= {"TaggedAddresses": {"lan": "192.168.0.9"}, "Meta": {"segment": ""}, "ModifyIndex": 7}
    entry["Service"] |= {
        "Meta": {**entry["Service"]["Meta"], **meta},
        "Proxy": {"MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "ModifyIndex": 11,
    }
    for check in entry["Checks"]:
        check |= {"Output": "", "ServiceTags": tags, "Definition": {}, "ModifyIndex": 9}
    return entry


entry_lists = st.lists(
    st.builds(
        full_entry,
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        st.dictionaries(
            st.sampled_from(["team", "note", "Node", "x"]),
            st.text(max_size=30) | st.just('},{"Node":{') | st.just('\n    },\n    {\n        "Node": {'),
            max_size=3,
        ),
        st.lists(st.sampled_from(["plan", "code", "Node"]), max_size=3),
    ),
    max_size=6,
)


@settings(max_examples=200)
@given(entries=entry_lists, dev_mode=st.booleans())
def test_split_entries_decode_like_the_whole_answer(entries: list[dict[str, Any]], dev_mode: bool) -> None:
    """Split into pieces, each piece decodes to the entry the whole answer decodes to, in both of Consul's
    layouts, whatever the strings hold (boundary look-alikes included: inside strings quotes are escaped)."""
    text = consul_json(entries, dev_mode=dev_mode)
    pieces = wire.split_health_entries(text)
    assert pieces is not None
    assert [wire.health_entry(p) for p in pieces] == wire.health_entries(text)
    assert len(pieces) == len(entries)
    assert [wire_read.read_entry(wire.health_entry(p)) for p in pieces] == [
        wire_read.read_entry(e) for e in entries
    ]


def test_typed_decoding_keeps_only_what_is_read() -> None:
    """Members the library never reads (proxy, connect, tagged addresses, check output...) are dropped."""
    entry = full_entry("a1", {"team": "x"}, ["plan"])
    (decoded,) = wire.health_entries(consul_json([entry], dev_mode=False))
    assert set(decoded) == {"Node", "Service", "Checks"}
    assert set(decoded["Node"]) == {"Node", "Address", "Datacenter", "ModifyIndex"}
    assert "Proxy" not in decoded["Service"] and decoded["Service"]["Meta"]["team"] == "x"
    assert decoded["Checks"][1] == {"CheckID": "service:a1", "Status": "passing", "ModifyIndex": 9}


def test_answers_of_another_shape_are_decoded_whole() -> None:
    assert wire.health_entries('{"not": "a list"}') == {"not": "a list"}
    assert wire.health_entries('[{"Service": {"ID": 5, "Port": "x"}}]') == [
        {"Service": {"ID": 5, "Port": "x"}}
    ]
    assert wire.health_entries("no JSON") == "no JSON"
    assert wire.health_entries("") is None


@pytest.mark.parametrize("text", ["", "[]", "[]\n", "null"])
def test_empty_answers_split_into_nothing(text: str) -> None:
    assert wire.split_health_entries(text) == []


@pytest.mark.parametrize(
    "text",
    [
        '[{"Service":{"ID":"a"},"Node":{"Node":"n"}}]',  # another member order
        '[ {"Node":{"Node":"n"}} ]',  # another layout
        '{"Node":{"Node":"n"}}',  # not a list
    ],
)
def test_answers_laid_out_otherwise_are_not_split(text: str) -> None:
    assert wire.split_health_entries(text) is None


def test_a_forged_boundary_leaves_a_piece_that_does_not_decode() -> None:
    """Arbitrary JSON in an entry (a Connect proxy's Config) can hold an object that looks like an entry
    after a comma in an array. The compact split then cuts inside the entry; the piece from the entry's
    real start ends with that array open, so it does not decode and the reader decodes the answer whole."""
    bearer = full_entry("bearer", {}, ["plan"])
    ghost = {"Node": {"Node": "n"}, "Service": {"ID": "ghost", "Service": "agent-planner", "Port": 1}}
    bearer["Service"]["Proxy"]["Config"] = {"list": [{"a": 1}, ghost]}
    entries = [full_entry("a1", {}, ["plan"]), bearer, full_entry("z9", {}, ["plan"])]
    text = consul_json(entries, dev_mode=False)
    pieces = wire.split_health_entries(text)
    assert pieces is not None and len(pieces) == 4
    decoded = [wire.health_entry(p) for p in pieces]
    assert decoded[1] is None, "the piece holding the bearer's start must not decode"
    assert [e["Service"]["ID"] for e in wire.health_entries(text)] == ["a1", "bearer", "z9"]
    # Indented, the look-alike sits deeper than the entries, so the split stays exact.
    indented = wire.split_health_entries(consul_json(entries, dev_mode=True))
    assert indented is not None and [wire.health_entry(p)["Service"]["ID"] for p in indented] == [
        "a1",
        "bearer",
        "z9",
    ]


def test_anchored_agent_has_a_state_check_and_an_alias_of_its_anchor() -> None:
    """With an anchor, the agent's own check only holds its status (a year's TTL) and an alias check of the
    anchor carries its process's liveness; both reap the agent after deregister_after."""
    registration = AgentRegistration(
        agent_type="planner", agent_id="p-1", capabilities=["plan"], endpoint="http://h:1", ttl=15
    )
    body = wire.service_definition(registration, "p-1", load=0.0, heartbeat=utcnow(), anchor="anc-1")
    own, alias = body["Checks"]
    assert "Check" not in body
    assert (own["CheckID"], own["TTL"]) == ("service:p-1", "8760h")
    assert (alias["CheckID"], alias["AliasService"]) == ("alive:p-1", "anc-1")
    assert own["DeregisterCriticalServiceAfter"] == alias["DeregisterCriticalServiceAfter"] == "60s"


def test_anchor_is_a_service_outside_the_agent_prefix_with_one_ttl_check() -> None:
    """An anchor is ``consul-agents-liveness-<type>``: never an agent service, its TTL check reaped later."""
    body = wire.anchor_definition(
        "planner",
        "consul-agents-liveness-planner-x",
        ttl=timedelta(seconds=15),
        deregister_after=timedelta(minutes=3),
    )
    assert body["Name"] == "consul-agents-liveness-planner"
    assert not wire.is_agent_service(body["Name"])
    assert body["Check"]["TTL"] == "15s"
    assert body["Check"]["DeregisterCriticalServiceAfter"] == "180s"
    assert all(not key.startswith(("agent-", "consul-")) for key in body["Meta"])
