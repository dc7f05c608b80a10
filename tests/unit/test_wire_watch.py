"""Reading `consul watch` handler input as alerts (consul_agents._wire_watch): shapes, skips and bounds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from support import GOOD_META

from consul_agents._wire_watch import MAX_FIELD, alerts_from_watch


def check(agent_id: str = "a1", status: str = "critical", **fields: Any) -> dict[str, Any]:
    body = {
        "Node": "n1",
        "CheckID": f"service:{agent_id}",
        "Status": status,
        "Output": "critical: HTTP 503",
        "ServiceID": agent_id,
        "ServiceName": "agent-planner",
    }
    return {**body, **fields}


def entry(agent_id: str, status: str) -> dict[str, Any]:
    return {
        "Node": {"Node": "n1", "Datacenter": "dc1"},
        "Service": {
            "ID": agent_id,
            "Service": "agent-planner",
            "Tags": ["plan"],
            "Meta": dict(GOOD_META),
            "Address": "127.0.0.1",
            "Port": 9000,
            "Weights": {"Passing": 1, "Warning": 1},
        },
        "Checks": [{"CheckID": f"service:{agent_id}", "Status": status, "ServiceID": agent_id}],
    }


def test_checks_become_one_alert_per_unhealthy_agent() -> None:
    """A critical agent check is ConsulAgentsAgentCritical, a warning one ConsulAgentsAgentWarning, in
    Alertmanager's shape with type, id, node and output."""
    alerts = alerts_from_watch(json.dumps([check("a1"), check("a2", "warning"), check("a3", "passing")]))
    assert [(a.alertname, a.agent_id) for a in alerts] == [
        ("ConsulAgentsAgentCritical", "a1"),
        ("ConsulAgentsAgentWarning", "a2"),
    ]
    body = alerts[0].to_alertmanager(datetime(2026, 1, 1, tzinfo=UTC))
    assert body == {
        "labels": {
            "alertname": "ConsulAgentsAgentCritical",
            "severity": "warning",
            "agent_type": "planner",
            "agent_id": "a1",
            "node": "n1",
            "source": "consul-watch",
        },
        "annotations": {
            "summary": "agent a1 of type planner is critical (check service:a1)",
            "output": "critical: HTTP 503",
        },
        "startsAt": "2026-01-01T00:00:00+00:00",
    }


@pytest.mark.parametrize(
    "item",
    [
        check(ServiceName="web"),  # not an agent service
        check(ServiceName="agent-Bad_Type"),
        check(ServiceID="../../kv/x"),  # not an agent id
        check(CheckID="_service_maintenance:a1"),  # maintenance is deliberate
        check(CheckID="draining:a1"),  # so is draining
        check(Status="exploded"),
        check(ServiceID=7),
        "not a check",
        None,
    ],
)
def test_what_is_not_an_agent_failure_is_skipped(item: Any) -> None:
    """Checks of other services, bad ids, maintenance, draining and malformed items give no alert."""
    assert alerts_from_watch(json.dumps([item, check("ok", "passing")])) == []


def test_strings_from_consul_are_cut() -> None:
    """A huge check output is cut to MAX_FIELD characters."""
    (alert,) = alerts_from_watch(json.dumps([check(Output="x" * 100_000)]))
    assert len(alert.output) == MAX_FIELD


def test_service_entries_give_agent_alerts_and_no_passing_agent() -> None:
    """A -type=service result with no passing agent gives one alert per critical agent and
    ConsulAgentsNoPassingAgent for the type; with a passing agent, only the agent alerts."""
    alerts = alerts_from_watch(json.dumps([entry("a1", "critical"), entry("a2", "critical")]))
    assert [a.alertname for a in alerts] == [
        "ConsulAgentsAgentCritical",
        "ConsulAgentsAgentCritical",
        "ConsulAgentsNoPassingAgent",
    ]
    assert alerts[-1].datacenter == "dc1" and alerts[-1].severity == "critical"
    alerts = alerts_from_watch(json.dumps([entry("a1", "critical"), entry("a2", "passing")]))
    assert [a.alertname for a in alerts] == ["ConsulAgentsAgentCritical"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"a": 1}', "not the array"),
        ('"text"', "not the array"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_problem(text: str, problem: str) -> None:
    """Text that is not a watch result raises ValueError saying why (never RecursionError)."""
    with pytest.raises(ValueError, match=problem):
        alerts_from_watch(text)


def test_an_empty_result_is_no_alert() -> None:
    """An empty array, or nothing at all, gives no alert."""
    assert alerts_from_watch("[]") == [] and alerts_from_watch("") == []
