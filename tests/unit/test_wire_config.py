"""Pure Consul JSON for config files and the prepared query template."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from consul_agents import _wire_config as wire_config
from consul_agents.dns import query_dns_name, rfc2782_name, service_dns_name


@pytest.mark.parametrize(
    ("name", "service", "tag"),
    [
        ("agent-planner", "agent-planner", None),
        ("agent-planner.plan", "agent-planner", "plan"),
        ("agent-my-type.long-cap-1", "agent-my-type", "long-cap-1"),
    ],
)
def test_template_regexp_splits_query_names(name: str, service: str, tag: str | None) -> None:
    """The template's regexp takes the service from the first label and the capability from the second."""
    match = re.match(wire_config.QUERY_REGEXP, name)
    assert match is not None
    assert match.group(1) == service
    assert match.group(2) == tag


@pytest.mark.parametrize("name", ["agent-", "planner", "agent-a.b.c", "agent-A", "agent-a..b"])
def test_template_regexp_rejects_other_names(name: str) -> None:
    """Names that are not agent-<type>[.<capability>] do not match."""
    assert re.match(wire_config.QUERY_REGEXP, name) is None


def test_query_name_matches_dns_helpers() -> None:
    """The documented DNS names are built from the same query name the template parses."""
    assert wire_config.query_name("planner", "plan") == "agent-planner.plan"
    assert query_dns_name("planner", "plan") == "agent-planner.plan.query.consul"
    assert query_dns_name("planner") == "agent-planner.query.consul"
    assert service_dns_name("planner", "plan") == "plan.agent-planner.service.consul"
    assert rfc2782_name("planner", "plan") == "_agent-planner._plan.service.consul"
    assert service_dns_name("planner", domain="example") == "agent-planner.service.example"


def test_template_body() -> None:
    """The template is a name_prefix_match on 'agent-' that drops the empty capability tag."""
    body = wire_config.prepared_query_template(nearest_n=2, datacenters=["dc3"], only_passing=True)
    assert body["Name"] == "agent-"
    assert body["Template"] == {
        "Type": "name_prefix_match",
        "Regexp": wire_config.QUERY_REGEXP,
        "RemoveEmptyTags": True,
    }
    assert body["Service"]["Service"] == "${match(1)}"
    assert body["Service"]["Tags"] == ["${match(2)}"]
    assert body["Service"]["Failover"] == {"NearestN": 2, "Datacenters": ["dc3"]}
    assert body["Service"]["OnlyPassing"] is True


def stored(body: dict[str, Any], query_id: str = "q1") -> dict[str, Any]:
    """A template as GET /v1/query returns it (Consul adds fields and fills nulls)."""
    service = dict(body["Service"], IgnoreCheckIDs=None, NodeMeta=None, ServiceMeta=None, Connect=False)
    return dict(body, ID=query_id, Session="", Token="", Service=service, CreateIndex=5, ModifyIndex=5)


def test_find_template_and_differs() -> None:
    """Our template is found among other queries; only a real change counts as different."""
    wanted = wire_config.prepared_query_template()
    others = [{"ID": "x", "Name": "agent-", "Template": {"Type": ""}}, {"ID": "y", "Name": "web"}]
    assert wire_config.find_template(others) is None
    queries = [*others, stored(wanted, "q9")]
    assert wire_config.find_template(queries) == "q9"
    assert not wire_config.template_differs(stored(wanted), wanted)
    for changed in (
        wire_config.prepared_query_template(nearest_n=1),
        wire_config.prepared_query_template(datacenters=["dc2"]),
        wire_config.prepared_query_template(only_passing=True),
        wire_config.prepared_query_template(dns_ttl="5s"),
    ):
        assert wire_config.template_differs(stored(wanted), changed)


def test_empty_datacenters_stored_as_null_is_unchanged() -> None:
    """Consul stores an empty failover list as null; that is not a difference."""
    wanted = wire_config.prepared_query_template()
    existing = stored(wanted)
    existing["Service"]["Failover"] = {"NearestN": 3, "Datacenters": None}
    assert not wire_config.template_differs(existing, wanted)


def test_http_check() -> None:
    """The HTTP check starts critical and carries interval, timeout and reaping in Go durations."""
    check = wire_config.http_check(
        "a1",
        "http://h:1/health",
        interval=timedelta(seconds=5),
        timeout=timedelta(seconds=1.5),
        deregister_after=timedelta(minutes=2),
    )
    assert check["CheckID"] == "service:a1"
    assert (check["Interval"], check["Timeout"], check["DeregisterCriticalServiceAfter"]) == (
        "5s",
        "1.5s",
        "120s",
    )
    assert check["Status"] == "critical"


def test_config_file_keys_and_verbatim_meta() -> None:
    """API keys become config-file keys; Meta keys are user data and stay verbatim."""
    definition = {
        "ID": "a",
        "Name": "agent-x",
        "Meta": {"Tier": "gold", "agent-heartbeat": "t"},
        "Check": {"CheckID": "service:a", "TTL": "5s"},
    }
    converted = wire_config.config_file_service(definition)
    assert converted == {
        "id": "a",
        "name": "agent-x",
        "meta": {"Tier": "gold"},
        "check": {"id": "service:a", "ttl": "5s"},
    }
