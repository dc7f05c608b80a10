"""Logfire sees every registry operation: spans with the documented attributes, errors, and no token.

Logfire runs in a child process (tests/logfire_child.py) configured with its own testing support
(``send_to_logfire=False``, an in-memory exporter): it sets the process's global tracer provider, which
OpenTelemetry allows once per process, and the other tracing tests set theirs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from acl_support import acl_consul, master_token, provisioned
from processes import TESTS, cli_env

from consul_agents.dev import ConsulDevServer

pytest.importorskip("logfire", reason="logfire is the 'logfire' extra; `make venv` installs it (test extra)")

OPERATIONS = {
    "register",
    "heartbeat",
    "set_maintenance",
    "deregister",
    "get_agent",
    "agent_types",
    "discover",
}


@pytest.fixture(scope="module")
def captured() -> Iterator[tuple[dict[str, Any], list[str], str]]:
    """What Logfire captured while every registry operation ran with an operator token, and the tokens."""
    with acl_consul() as server:
        yield _run_child(server)


def _run_child(server: ConsulDevServer) -> tuple[dict[str, Any], list[str], str]:
    agent_type = "lf" + uuid.uuid4().hex[:8]
    spec = {"name": "operator", "kind": "operator"}
    good = provisioned(server, spec)["operator"].secret_id
    bad = str(uuid.uuid4())
    env = cli_env(CONSUL_ADDR=server.http_addr, GOOD_TOKEN=good, BAD_TOKEN=bad, AGENT_TYPE=agent_type)
    env = {k: v for k, v in env.items() if not k.startswith(("LOGFIRE_", "OTEL_"))}
    child = subprocess.run(
        [sys.executable, str(TESTS / "logfire_child.py")],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout), [good, bad, master_token(server)], agent_type


def spans_named(captured: dict[str, Any], operation: str) -> list[dict[str, Any]]:
    return [s for s in captured["spans"] if s["name"] == f"consul_agents.{operation}"]


def test_every_registry_operation_is_a_logfire_span(captured: tuple[dict[str, Any], list[str], str]) -> None:
    """Each registry operation arrives in Logfire as a consul_agents.<operation> span with outcome ok."""
    spans, _, agent_type = captured
    for operation in [*OPERATIONS, "select"]:
        found = spans_named(spans, operation)
        assert found, f"no span for {operation}"
        assert any(s["attributes"].get("outcome") == "ok" for s in found), operation
    register = spans_named(spans, "register")[0]["attributes"]
    assert (register["agent.type"], register["agent.id"]) == (agent_type, f"{agent_type}-1")
    discover = next(s for s in spans_named(spans, "discover") if s["parent"] is None)["attributes"]
    assert discover["agent.type"] == agent_type
    assert discover["agent.capabilities"] == ("plan",) or discover["agent.capabilities"] == ["plan"]
    assert discover["result.count"] == 1
    assert "cache.hit" in discover
    select = spans_named(spans, "select")[0]
    assert select["attributes"]["selection.strategy"] == "round_robin"
    assert select["attributes"]["selection.candidates"] == 1
    assert select["attributes"]["selection.reason"] == "next in round-robin order among 1 candidates"
    assert select["attributes"]["consul.datacenter"] == "dc1"
    # one span per public call: the select's own discovery is part of its span, not a child span
    select_id = select["context"]["span_id"]
    assert not [s for s in spans["spans"] if (s["parent"] or {}).get("span_id") == select_id]


def test_errors_are_recorded(captured: tuple[dict[str, Any], list[str], str]) -> None:
    """A denial sets the span's status to error with the exception recorded; not-found is recorded too."""
    spans, _, _ = captured
    denied = [s for s in spans_named(spans, "register") if s["attributes"]["outcome"] == "denied"]
    assert len(denied) == 1
    [event] = [e for e in denied[0]["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception.type"].endswith("PermissionDeniedError")
    assert denied[0]["attributes"]["logfire.level_num"] >= 17  # Logfire shows it as an error
    missing = [s for s in spans_named(spans, "get_agent") if s["attributes"]["outcome"] == "not_found"]
    assert len(missing) == 1
    assert any(e["name"] == "exception" for e in missing[0]["events"])


def test_no_token_anywhere_in_what_logfire_captured(captured: tuple[dict[str, Any], list[str], str]) -> None:
    """Neither the operator's, the rejected nor the management token is in a span, event, log or resource."""
    spans, tokens, _ = captured
    text = json.dumps(spans)
    assert any(s["name"] == "Using selector: %s" for s in spans["spans"]), "log lines reach Logfire"
    for token in tokens:
        assert token not in text
        assert token[:8] not in text
