"""Prometheus http_sd target groups built from discovered agents (pure)."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from consul_agents import AgentInfo, AgentStatus
from consul_agents.api._errors import BadRequest
from consul_agents.api._http_sd import http_sd_groups, metrics_path_of


def agent(endpoint: str, **fields: object) -> AgentInfo:
    values: dict[str, object] = {
        "agent_id": "a-1",
        "agent_type": "planner",
        "capabilities": ["plan", "summarize"],
        "status": AgentStatus.PASSING,
        "endpoint": endpoint,
        "health_score": 1.0,
        "current_load": 0.0,
        "last_heartbeat": None,
        "datacenter": "dc1",
        "node": "n1",
    }
    return AgentInfo(**{**values, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("endpoint", "target", "scheme", "path"),
    [
        ("http://10.0.0.5:9000", "10.0.0.5:9000", "http", "/metrics"),
        ("http://10.0.0.5:9000/", "10.0.0.5:9000", "http", "/metrics"),
        ("https://h.example:8443/v1", "h.example:8443", "https", "/v1/metrics"),
        ("http://h:80/a/b/", "h:80", "http", "/a/b/metrics"),
        ("http://[::1]:9000/v1", "[::1]:9000", "http", "/v1/metrics"),
        ("HTTPS://H.example:1", "h.example:1", "https", "/metrics"),
    ],
)
def test_target_scheme_and_path_come_from_the_endpoint(
    endpoint: str, target: str, scheme: str, path: str
) -> None:
    """The target is the endpoint's host:port; its scheme and path (plus /metrics) say how to scrape it."""
    [group] = http_sd_groups([agent(endpoint)])
    assert group["targets"] == [target]
    assert (group["labels"]["__scheme__"], group["labels"]["__metrics_path__"]) == (scheme, path)


def test_labels_name_the_agent_and_carry_status_capabilities_and_tags_as_meta() -> None:
    """agent_id, agent_type and datacenter are target labels; status, capabilities and tags are __meta_."""
    [group] = http_sd_groups(
        [agent("http://h:1", status=AgentStatus.WARNING, tags={"tier": "gold", "cost-centre": "x"})],
        "/prom",
    )
    labels = group["labels"]
    assert labels["agent_id"] == "a-1" and labels["agent_type"] == "planner" and labels["datacenter"] == "dc1"
    assert labels["__metrics_path__"] == "/prom"
    assert labels["__meta_consul_agents_status"] == "warning"
    assert labels["__meta_consul_agents_capabilities"] == ",plan,summarize,"
    assert labels["__meta_consul_agents_tag_tier"] == "gold"
    assert labels["__meta_consul_agents_tag_cost_centre"] == "x"
    assert all(isinstance(v, str) for v in labels.values())


@pytest.mark.parametrize(
    "endpoint", ["http://ho st:1", "http://h%2f:1", "http://[zz::1]:1", "http://h:99999"]
)
def test_hostile_endpoints_from_consul_give_no_target(endpoint: str) -> None:
    """An endpoint read from Consul whose host is not a plain name or address, or whose port is invalid,
    gives no target (Consul holds whatever a registrant wrote)."""
    info = agent("http://h:1").model_copy(update={"endpoint": endpoint})
    assert http_sd_groups([info]) == []


def test_endpoints_that_cannot_be_scraped_are_left_out() -> None:
    """An endpoint that is not http(s) (e.g. grpc://) gives no target instead of a broken one."""
    assert http_sd_groups([agent("grpc://h:1"), agent("http://h:2", agent_id="b")])[0]["targets"] == ["h:2"]
    assert len(http_sd_groups([agent("grpc://h:1")])) == 0


@pytest.mark.parametrize(
    ("given", "path"), [(None, "/metrics"), ("metrics", "/metrics"), ("/x/y", "/x/y"), ("//x", "/x")]
)
def test_metrics_path_parameter(given: str | None, path: str) -> None:
    """metrics_path defaults to /metrics and always starts with one '/'."""
    query: MultiDict[str] = MultiDict() if given is None else MultiDict(metrics_path=given)
    assert metrics_path_of(query) == path


@pytest.mark.parametrize("given", ["/m?x=1", "/m#f", "/a\\b", "/a\nb", "/" + "m" * 300])
def test_metrics_path_that_is_not_a_path_is_a_bad_request(given: str) -> None:
    """A metrics_path with a query, fragment, backslash, control character or 300 characters is refused."""
    with pytest.raises(BadRequest, match="metrics_path"):
        metrics_path_of(MultiDict(metrics_path=given))
