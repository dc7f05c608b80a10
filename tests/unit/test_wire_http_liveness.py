"""The service definition of an agent kept alive by a Consul HTTP check (liveness="http"): pure wire tests."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consul_agents import AgentRegistration
from consul_agents import _wire as wire
from consul_agents._models import utcnow


def _body(interval: float) -> dict[str, object]:
    registration = AgentRegistration(
        agent_type="coder", capabilities=["plan"], endpoint="http://127.0.0.1:9000"
    )
    alive = wire.HttpAlive(
        url="http://127.0.0.1:4000/consul-agents/health/a", interval=timedelta(seconds=interval)
    )
    return wire.service_definition(registration, "a", load=0.0, heartbeat=utcnow(), anchor=alive)


@pytest.mark.parametrize(("interval", "text"), [(5.0, "5s"), (1.0, "1s"), (2.5, "2.5s")])
def test_http_liveness_adds_an_http_check_beside_the_own_check(interval: float, text: str) -> None:
    """The agent keeps its own check and gains a GET check of its health URL every ``interval``, with a
    one-second timeout, created passing and reaped like the agent."""
    own, alive = _body(interval)["Checks"]  # type: ignore[misc]
    assert own["CheckID"] == wire.check_id("a")
    assert alive["CheckID"] == wire.alias_check_id("a")
    assert (alive["HTTP"], alive["Method"], alive["Interval"], alive["Timeout"], alive["Status"]) == (
        "http://127.0.0.1:4000/consul-agents/health/a",
        "GET",
        text,
        "1s",
        "passing",
    )
    assert alive["DeregisterCriticalServiceAfter"] == own["DeregisterCriticalServiceAfter"]
    assert "AliasService" not in alive and "TTL" not in alive
