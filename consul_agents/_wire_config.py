"""Consul JSON for objects written once rather than per request: service definition files for Consul's
config directory, and the prepared query template behind the cross-datacenter DNS names. Pure.

Service definition files use Consul's configuration keys (snake_case: ``enable_tag_override``, a check's
``id``), not the HTTP API's CamelCase; :func:`config_file_service` converts one API body from
:func:`consul_agents._wire.service_definition`, so a rendered file and a live registration encode an agent
identically (same name, tags, Meta, weights, check ID).

Prepared query template: one query named :data:`QUERY_PREFIX` of type ``name_prefix_match``. Consul
resolves ``<name>.query.consul`` through the template whose Name is the longest prefix of ``<name>``, and
the template's Regexp splits the name::

    agent-<type>.query.consul               healthy agents of that type
    agent-<type>.<capability>.query.consul  ... that have that capability (a service tag)

Types and capabilities are DNS labels (no dots), so the split is unambiguous. Consul answers from the
local datacenter when it has a healthy match, otherwise from the nearest datacenters by round-trip time
(``Failover.NearestN``) and then from an explicit list (``Failover.Datacenters``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from consul_agents._models import SERVICE_PREFIX
from consul_agents._wire import META_HEARTBEAT, check_id, format_duration

__all__ = [
    "QUERY_PREFIX",
    "QUERY_REGEXP",
    "config_file_service",
    "find_template",
    "http_check",
    "prepared_query_template",
    "query_name",
    "template_differs",
]

#: The template's Name: every query name starting with it is resolved by the template.
QUERY_PREFIX = SERVICE_PREFIX
#: match(1) = the service name ``agent-<type>``, match(2) = the capability or "" (then dropped).
QUERY_REGEXP = r"^(" + SERVICE_PREFIX + r"[a-z0-9-]+)(?:\.([a-z0-9-]+))?$"

_KEYS = {
    "ID": "id",
    "Name": "name",
    "Tags": "tags",
    "Address": "address",
    "Port": "port",
    "Meta": "meta",
    "Weights": "weights",
    "EnableTagOverride": "enable_tag_override",
    "Check": "check",
    "Passing": "passing",
    "Warning": "warning",
    "CheckID": "id",
    "Notes": "notes",
    "TTL": "ttl",
    "HTTP": "http",
    "Method": "method",
    "Interval": "interval",
    "Timeout": "timeout",
    "Status": "status",
    "DeregisterCriticalServiceAfter": "deregister_critical_service_after",
}


def http_check(
    agent_id: str, url: str, *, interval: timedelta, timeout: timedelta, deregister_after: timedelta
) -> dict[str, Any]:
    """An HTTP check for Consul to run itself: 2xx passing, 429 warning, anything else critical.

    It starts critical, so an agent is never announced before Consul has seen it answer.
    """
    return {
        "CheckID": check_id(agent_id),
        "Name": "health",
        "Notes": f"Consul probes GET {url}",
        "HTTP": url,
        "Method": "GET",
        "Interval": format_duration(interval),
        "Timeout": format_duration(timeout),
        "Status": "critical",
        "DeregisterCriticalServiceAfter": format_duration(deregister_after),
    }


def _convert(value: Any, *, verbatim: bool = False) -> Any:
    if isinstance(value, Mapping):
        if verbatim:
            return dict(value)
        return {_KEYS[key]: _convert(item, verbatim=(key == "Meta")) for key, item in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def config_file_service(
    definition: Mapping[str, Any], check: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A service for Consul's config directory, from a ``/v1/agent/service/register`` body.

    ``check`` replaces the body's TTL check (a TTL check in a static file needs a process heartbeating
    it; an HTTP check does not). The heartbeat stamp is left out: a file is not a heartbeat.
    """
    body = dict(definition)
    body["Meta"] = {k: v for k, v in (body.get("Meta") or {}).items() if k != META_HEARTBEAT}
    if check is not None:
        body["Check"] = dict(check)
    converted: dict[str, Any] = _convert(body)
    return converted


def query_name(agent_type: str, capability: str | None = None) -> str:
    """The prepared query name (the part before ``.query.consul``) for a type and optional capability."""
    return SERVICE_PREFIX + agent_type + (f".{capability}" if capability else "")


def prepared_query_template(
    *, nearest_n: int = 3, datacenters: Sequence[str] = (), only_passing: bool = False, dns_ttl: str = "0s"
) -> dict[str, Any]:
    """The body of ``POST /v1/query`` (or ``PUT /v1/query/:id``) for the agent lookup template.

    ``only_passing`` False answers with passing and warning agents, as Consul's ``service`` lookups do by
    default; critical agents are never returned either way. ``Near: _agent`` sorts the answer by
    round-trip time from the Consul agent that serves the DNS request.
    """
    return {
        "Name": QUERY_PREFIX,
        "Template": {"Type": "name_prefix_match", "Regexp": QUERY_REGEXP, "RemoveEmptyTags": True},
        "Service": {
            "Service": "${match(1)}",
            "Tags": ["${match(2)}"],
            "Failover": {"NearestN": nearest_n, "Datacenters": list(datacenters)},
            "OnlyPassing": only_passing,
            "Near": "_agent",
        },
        "DNS": {"TTL": dns_ttl},
    }


def find_template(queries: Sequence[Mapping[str, Any]]) -> str | None:
    """The ID of our template among ``GET /v1/query``'s answer, or None."""
    for query in queries:
        if query.get("Name") == QUERY_PREFIX and (query.get("Template") or {}).get("Type"):
            return str(query["ID"])
    return None


def template_differs(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether an existing template must be rewritten to become ``wanted`` (so setup writes only changes)."""
    template = existing.get("Template") or {}
    service = existing.get("Service") or {}
    failover = service.get("Failover") or {}
    want_service = wanted["Service"]
    return bool(
        template.get("Regexp") != wanted["Template"]["Regexp"]
        or bool(template.get("RemoveEmptyTags")) != wanted["Template"]["RemoveEmptyTags"]
        or service.get("Service") != want_service["Service"]
        or list(service.get("Tags") or []) != want_service["Tags"]
        or int(failover.get("NearestN") or 0) != want_service["Failover"]["NearestN"]
        or list(failover.get("Datacenters") or []) != want_service["Failover"]["Datacenters"]
        or bool(service.get("OnlyPassing")) != want_service["OnlyPassing"]
        or service.get("Near") != want_service["Near"]
        or (existing.get("DNS") or {}).get("TTL") != wanted["DNS"]["TTL"]
    )
