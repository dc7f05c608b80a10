"""The sidecar file: validation errors name file, field and problem; the probe verdict; rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consul_agents import AgentStatus, InvalidAgentError
from consul_agents.sidecar import HealthProbe, load_config, render, service_configs, verdict
from consul_agents.sidecar.config import parse_config
from consul_agents.sidecar.render import to_hcl

CONFIG_DIR = Path(__file__).parents[2] / "config" / "agents"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))


def agent(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "agent_type": "planner",
        "capabilities": ["plan"],
        "endpoint": "http://127.0.0.1:9101",
    }
    fields.update(overrides)
    return fields


def test_examples_exist_and_load() -> None:
    """Every example file in config/agents/ is a valid sidecar file."""
    assert {p.name for p in EXAMPLES} >= {"planner.yaml", "coder.yaml", "researcher.yaml"}
    for path in EXAMPLES:
        assert load_config(path).agents


def test_defaults() -> None:
    """An entry without health gets the documented defaults and a stable id from type, host and port."""
    config = parse_config(Path("a.yaml"), {"agents": [agent()]})
    spec = config.agents[0]
    assert spec.agent_id == "planner-127.0.0.1-9101"
    assert spec.probe_url == "http://127.0.0.1:9101/health"
    assert spec.health.interval.total_seconds() == 5
    assert spec.health.timeout.total_seconds() == 2
    assert spec.health.expected_status == 200
    assert spec.health.warning_statuses == [429]
    assert spec.health.load_field is None


@pytest.mark.parametrize(
    ("document", "field", "problem"),
    [
        ({"agents": [agent(agent_type="Bad_Type")]}, "agents[0].agent_type", "not a DNS label"),
        ({"agents": [agent(capabilities=[])]}, "agents[0].capabilities", "at least 1"),
        ({"agents": [agent(endpoint="127.0.0.1:9")]}, "agents[0].endpoint", "no scheme"),
        ({"agents": [agent(colour="red")]}, "agents[0].colour", "Extra inputs"),
        ({"agents": [agent(health={"timeout": 9})]}, "agents[0].health", "must not exceed interval"),
        ({"agents": [agent(health={"path": "health"})]}, "agents[0].health.path", "must start with '/'"),
        ({"agents": [agent(health={"expected_status": 42})]}, "agents[0].health.expected_status", "100"),
        ({"agents": [agent(health={"interval": 0})]}, "agents[0].health.interval", "between 0.1"),
        ({"agents": [agent(health={"colour": 1})]}, "agents[0].health.colour", "Extra inputs"),
        ({"agents": [agent(health=[1])]}, "agents[0].health", "expected a mapping"),
        ({"agents": [agent(ttl=3, health={"interval": 5})]}, "agents[0].ttl", "must exceed the probe"),
        ({"agents": [agent(), agent()]}, "agents[1].agent_id", "already used by agents[0]"),
        ({"agents": [agent(), "x"]}, "agents[1]", "expected a mapping"),
        ({"agents": []}, "agents", "non-empty list"),
        ({"agent": [agent()]}, "agent", "unknown top-level key"),
        ([agent()], "agents", "expected a mapping"),
    ],
)
def test_errors_name_file_field_and_problem(document: Any, field: str, problem: str) -> None:
    """Each invalid file is rejected with a message naming the file, the field and the problem."""
    with pytest.raises(InvalidAgentError) as caught:
        parse_config(Path("conf/planner.yaml"), document)
    message = str(caught.value)
    assert message.startswith(f"conf/planner.yaml: {field}"), message
    assert problem in message
    assert caught.value.field == field


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    """A missing file and a file that is not YAML are errors naming the file."""
    with pytest.raises(InvalidAgentError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents: [\n")
    with pytest.raises(InvalidAgentError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


HEALTH = HealthProbe(load_field="stats.load")


@pytest.mark.parametrize(
    ("status", "body", "expected", "load"),
    [
        (200, '{"stats": {"load": 0.4}}', AgentStatus.PASSING, 0.4),
        (200, '{"stats": {"load": 1}}', AgentStatus.PASSING, 1.0),
        (200, '{"stats": {"load": 1.5}}', AgentStatus.WARNING, None),
        (200, '{"stats": {"load": true}}', AgentStatus.WARNING, None),
        (200, '{"stats": {"load": "0.4"}}', AgentStatus.WARNING, None),
        (200, '{"load": 0.4}', AgentStatus.WARNING, None),
        (200, "not json", AgentStatus.WARNING, None),
        (429, "", AgentStatus.WARNING, None),
        (503, "", AgentStatus.CRITICAL, None),
        (204, "", AgentStatus.CRITICAL, None),
        (None, "", AgentStatus.CRITICAL, None),
    ],
)
def test_verdict(status: int | None, body: str, expected: AgentStatus, load: float | None) -> None:
    """Only the expected status passes; 429 or a missing load warns; anything else (no answer too) fails."""
    result = verdict(HEALTH, "http://h:1/health", status, body, "timed out")
    assert result.status is expected
    assert result.load == load


def test_verdict_without_load_field_ignores_body() -> None:
    """Without load_field, the expected status passes whatever the body and reports no load."""
    result = verdict(HealthProbe(), "http://h:1/health", 200, "not json")
    assert (result.status, result.load) == (AgentStatus.PASSING, None)


def test_verdict_output_does_not_carry_load() -> None:
    """Two answers differing only in load give the same output, so the output never costs a catalog write."""
    a = verdict(HEALTH, "u", 200, '{"stats": {"load": 0.1}}')
    b = verdict(HEALTH, "u", 200, '{"stats": {"load": 0.9}}')
    assert a.output == b.output


def test_render_json_is_the_registration_encoding() -> None:
    """The rendered service carries the live registration's name, tags, Meta, weights and check ID."""
    config = load_config(CONFIG_DIR / "planner.yaml")
    document = json.loads(render(config, "json"))
    first = document["services"][0]
    assert first["id"] == "planner-sc-1"
    assert first["name"] == "agent-planner"
    assert first["tags"] == ["plan", "summarize"]
    assert (first["address"], first["port"]) == ("127.0.0.1", 9101)
    assert first["meta"]["agent-endpoint"] == "http://127.0.0.1:9101"
    assert first["meta"]["tier"] == "gold"
    assert "agent-heartbeat" not in first["meta"]
    assert first["weights"] == {"passing": 10, "warning": 1}
    assert first["check"]["id"] == "service:planner-sc-1"
    assert first["check"]["http"] == "http://127.0.0.1:9101/health"
    assert first["check"]["status"] == "critical"


def test_render_ttl_check() -> None:
    """--check ttl keeps the TTL heartbeat check instead of an HTTP check."""
    config = load_config(CONFIG_DIR / "planner.yaml")
    check = service_configs(config, "ttl")["services"][0]["check"]
    assert check["ttl"] == "15s"
    assert "http" not in check


def test_hcl_writer() -> None:
    """The HCL writer quotes keys that are not identifiers and escapes strings."""
    text = to_hcl(
        {"services": [{"name": 'a"b', "meta": {"agent-x": "1"}, "port": 3, "on": True, "t": ["x"]}]}
    )
    assert '"agent-x" = "1"' in text
    assert 'name = "a\\"b"' in text
    assert "port = 3" in text
    assert "on = true" in text
    assert 't = ["x"]' in text
