"""Agent Card rules (pure): skill ids as capabilities, endpoint from the first interface, hostile cards."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_agents import AgentRegistration, AgentStatus, InvalidAgentError
from consul_agents import _wire as wire
from consul_agents._cards import (
    MAX_CARD_BYTES,
    CardError,
    card_digest,
    card_text,
    parse_card_text,
    skill_capability,
)


def sample_card(**overrides: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "name": "Planner",
        "description": "plans things",
        "version": "2.1.0",
        "supportedInterfaces": [
            {
                "url": "https://planner.example:8443/a2a",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "1.0",
            },
            {"url": "https://planner.example:9443/rest", "protocolBinding": "HTTP+JSON"},
        ],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            {"id": "plan_trip", "name": "Plan a trip", "description": "d", "tags": ["travel"]},
            {"id": "Summarize.V2", "name": "Summarize", "description": "d", "tags": []},
        ],
    }
    card.update(overrides)
    return card


@pytest.mark.parametrize(
    ("skill_id", "label"),
    [("plan", "plan"), ("hello_world", "hello-world"), ("Summarize.V2", "summarize-v2"), ("--a  b--", "a-b")],
)
def test_skill_ids_map_to_dns_labels(skill_id: str, label: str) -> None:
    """Skill ids are lowercased and runs of other characters become one '-', trimmed at the ends."""
    assert skill_capability(skill_id) == label


def test_registration_from_card_takes_skills_endpoint_and_card() -> None:
    """from_agent_card derives capabilities from skills and the endpoint from the first interface."""
    card = sample_card()
    registration = AgentRegistration.from_agent_card(card, agent_type="planner", capabilities=["extra"])
    assert registration.capabilities == ["plan-trip", "summarize-v2", "extra"]
    assert registration.endpoint == "https://planner.example:8443/a2a"
    assert registration.card == card
    fields = registration.card_fields
    assert fields is not None and fields.version == "2.1.0"
    assert fields.digest == card_digest(card_text(card))


def test_interface_url_without_port_gets_the_scheme_default() -> None:
    """An https interface URL without a port registers port 443 (Consul DNS answers with a port)."""
    card = sample_card(supportedInterfaces=[{"url": "https://a.example/rpc", "protocolBinding": "JSONRPC"}])
    assert AgentRegistration.from_agent_card(card, agent_type="t").endpoint == "https://a.example:443/rpc"


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("huge", sample_card(description="x" * (MAX_CARD_BYTES + 1)), "bytes once serialised"),
    ("deep", sample_card(capabilities={"extensions": [{"params": _nested(100)}]}), "nests deeper"),
    ("not-label", sample_card(skills=[{"id": "résumé", "name": "r"}]), "skill 'résumé'"),
    ("no-letters", sample_card(skills=[{"id": "__", "name": "r"}]), "skill '__'"),
    ("long-skill", sample_card(skills=[{"id": "a" * 64, "name": "r"}]), "longer than 63"),
    ("clash", sample_card(skills=[{"id": "a_b", "name": "x"}, {"id": "a.b", "name": "y"}]), "both map"),
    ("no-url", sample_card(supportedInterfaces=[{"url": "not a url", "protocolBinding": "JSONRPC"}]), "URL"),
    ("ftp", sample_card(supportedInterfaces=[{"url": "ftp://h:21/", "protocolBinding": "JSONRPC"}]), "URL"),
    ("no-skills", sample_card(skills=[]), "skills"),
    ("no-name", sample_card(name=""), "name"),
    ("no-interfaces", sample_card(supportedInterfaces=[]), "supportedInterfaces"),
    ("surrogate", sample_card(name="bad\ud800"), "Unicode"),
    ("nan", sample_card(capabilities={"x": float("nan")}), "not finite"),
    ("version-control", sample_card(version="1\n2"), "version"),
]


@pytest.mark.parametrize(("card", "message"), [(c, m) for _, c, m in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_cards_are_refused_naming_the_problem(card: dict[str, Any], message: str) -> None:
    """Cards that are too large, too deep, badly skilled or badly addressed raise InvalidAgentError."""
    with pytest.raises(InvalidAgentError, match="card") as raised:
        AgentRegistration.from_agent_card(card, agent_type="t")
    assert message in str(raised.value)


def test_a_card_given_directly_must_agree_with_the_capabilities() -> None:
    """A registration built by hand with a card must carry the card's skills as capabilities."""
    with pytest.raises(InvalidAgentError, match="missing"):
        AgentRegistration(agent_type="t", capabilities=["other"], endpoint="http://h:1", card=sample_card())


def test_stored_card_must_match_its_digest() -> None:
    """A card read back whose digest differs from the one in Meta is refused, as is text that is not JSON."""
    card = sample_card()
    text = card_text(card)
    assert parse_card_text(text, card_digest(text)) == card
    tampered = card_text(copy.deepcopy(sample_card(name="Evil")))
    with pytest.raises(ValueError, match="digest"):
        parse_card_text(tampered, card_digest(text))
    with pytest.raises(ValueError, match="not JSON"):
        parse_card_text("[" * 100_000, card_digest(text))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@given(st.text(max_size=80))
def test_any_skill_id_maps_to_a_dns_label_or_a_named_refusal(skill_id: str) -> None:
    """Whatever the id, the result is a DNS label, or a CardError naming the skill."""
    try:
        label = skill_capability(skill_id)
    except CardError as exc:
        assert "skill" in str(exc)
    else:
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", label)


@given(st.dictionaries(st.sampled_from(list(sample_card())), JSON, max_size=6))
def test_any_json_card_registers_or_raises_invalid_agent_error(overrides: dict[str, Any]) -> None:
    """A card of arbitrary JSON values builds a registration or raises InvalidAgentError, nothing else."""
    try:
        AgentRegistration.from_agent_card(sample_card(**overrides), agent_type="t")
    except InvalidAgentError as exc:
        assert str(exc).startswith("invalid ")


def test_only_the_services_own_draining_check_is_the_draining_mark() -> None:
    """draining:<id> of the service itself is the flag, not health; a node check of that name is health."""
    own = {"CheckID": "draining:a1", "ServiceID": "a1", "Status": "critical"}
    ttl = {"CheckID": "service:a1", "ServiceID": "a1", "Status": "passing"}
    node = {"CheckID": "draining:a1", "ServiceID": "", "Status": "critical"}
    assert wire.is_draining([ttl, own]) and wire.aggregate_status([ttl, own]) is AgentStatus.PASSING
    assert not wire.is_draining([ttl, node]) and wire.aggregate_status([ttl, node]) is AgentStatus.CRITICAL
