"""The pure diff behind `consul-agents watch`: which changes between two answers are reported, and how."""

from __future__ import annotations

from typing import Any

import pytest

from consul_agents import AgentInfo, AgentStatus
from consul_agents.cli.watch import changes


def info(agent_id: str, **overrides: Any) -> AgentInfo:
    fields: dict[str, Any] = {
        "agent_id": agent_id,
        "agent_type": "planner",
        "capabilities": ["plan"],
        "status": AgentStatus.PASSING,
        "endpoint": "http://h:1",
        "health_score": 1.0,
        "current_load": 0.1,
        "last_heartbeat": None,
    }
    fields.update(overrides)
    return AgentInfo(**fields)


def test_added_removed_and_changed_in_id_order() -> None:
    """An agent only after is added, one only before is removed, one whose fields moved is changed."""
    before = {"b": info("b"), "c": info("c"), "d": info("d")}
    after = {"a": info("a"), "c": info("c", current_load=0.9, status=AgentStatus.WARNING), "d": info("d")}
    found = changes(before, after)
    assert [(c.kind, c.agent.agent_id) for c in found] == [("added", "a"), ("removed", "b"), ("changed", "c")]
    assert found[2].fields == {
        "status": (AgentStatus.PASSING, AgentStatus.WARNING),
        "current_load": (0.1, 0.9),
    }
    assert found[2].to_line() == "~ c (planner) status passing -> warning, current_load 0.1 -> 0.9"
    assert found[2].to_json()["changed"]["status"] == {"before": "passing", "after": "warning"}
    assert found[0].to_line() == "+ a (planner) passing load 0.10 http://h:1"
    assert found[1].to_line() == "- b (planner)"


@pytest.mark.parametrize("noise", [{"last_heartbeat": "2026-01-01T00:00:00Z"}, {"staleness": 3.0}])
def test_heartbeat_time_and_staleness_alone_are_not_changes(noise: dict[str, Any]) -> None:
    """Fields that move on every heartbeat or cache read do not produce a line."""
    assert changes({"a": info("a")}, {"a": info("a", **noise)}) == []
