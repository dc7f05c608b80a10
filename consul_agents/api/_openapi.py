"""The OpenAPI 3.1 document of the REST API, generated from the pydantic models it speaks.

Schemas come from ``model_json_schema`` (through ``models_json_schema``, so shared definitions appear once
under ``components/schemas``); only the paths are written here. Requests use the models' validation schema,
responses their serialisation schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from consul_agents import __version__
from consul_agents._models import (
    AGENT_ID_PATTERN,
    AgentInfo,
    AgentRegistration,
    AgentStatus,
    SelectionCriteria,
)
from consul_agents._pools import PoolSettings, PoolStatus
from consul_agents.api._batch_routes import batch_paths
from consul_agents.api._schemas import (
    DeregisterResponse,
    DrainingRequest,
    ErrorBody,
    HealthBody,
    HeartbeatRequest,
    MaintenanceRequest,
    RegisterResponse,
)

__all__ = ["openapi_document"]

_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (AgentRegistration, "validation"),
    (SelectionCriteria, "validation"),
    (HeartbeatRequest, "validation"),
    (MaintenanceRequest, "validation"),
    (DrainingRequest, "validation"),
    (PoolSettings, "validation"),
    (AgentInfo, "serialization"),
    (PoolStatus, "serialization"),
    (RegisterResponse, "serialization"),
    (DeregisterResponse, "serialization"),
    (ErrorBody, "serialization"),
    (HealthBody, "serialization"),
]

_ERRORS = {
    400: "The request is malformed: not JSON, JSON nested more than 64 deep, or a query parameter that "
    "does not parse.",
    403: "Consul's ACLs refused the caller's token.",
    404: "No such agent (or, for select, no agent matches).",
    413: "The body is larger than 1 MiB.",
    422: "A value is invalid; `field` names it.",
    502: "Consul answered with an unexpected error.",
    503: "Consul cannot be reached or has no leader.",
}


#: Every operation that reaches Consul: anonymous, or the caller's token in either header.
_SECURITY: list[dict[str, list[str]]] = [{}, {"consulToken": []}, {"bearerToken": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    body_required: bool = True,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(status): answer for status, answer in ok.items()}
    for status in errors:
        responses[str(status)] = _json(_ref("ErrorBody"), _ERRORS[status])
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": responses,
        "security": _SECURITY,
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
    if schema.get("type") == "array":
        parameter.update(style="form", explode=True)
    return parameter


_AGENT_ID = {
    "name": "agent_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": AGENT_ID_PATTERN.pattern},
}

#: What a client can do next with the id a registration returns (used by stateful testers and generators).
_AGENT_LINKS = {
    name: {"operationId": operation, "parameters": {"agent_id": "$response.body#/agent_id"}}
    for name, operation in [
        ("GetAgent", "getAgent"),
        ("Heartbeat", "heartbeat"),
        ("SetMaintenance", "setMaintenance"),
        ("DeregisterAgent", "deregisterAgent"),
    ]
}

_DISCOVERY = [
    _query("type", {"type": "string"}, "agent type"),
    _query("capability", {"type": "array", "items": {"type": "string"}}, "required capability (repeatable)"),
    _query("status", {"type": "string", "enum": [s.value for s in AgentStatus]}, "only this status"),
    _query("max_load", {"type": "number", "minimum": 0, "maximum": 1}, "only agents at most this loaded"),
    _query(
        "tag",
        {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
        "key=value that must match the agent's tags (repeatable)",
    ),
    _query("region", {"type": "string"}, "Consul datacenter"),
    _query("draining", {"type": "boolean"}, "also return draining agents (flagged draining)"),
]

#: Prometheus' http_sd format: a list of {targets, labels} groups.
_HTTP_SD = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["targets", "labels"],
        "properties": {
            "targets": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}


def _card_paths(schemas: dict[str, Any]) -> dict[str, Any]:
    """A2A: an agent's card, the card listing, draining (see consul_agents.api._card_routes)."""
    card = {"type": "object", "description": "An A2A Agent Card, as registered."}
    etag = {
        "ETag": {"description": "Strong: the card's digest.", "schema": {"type": "string"}},
        "Card-Verified": {
            "description": "Whether the card's signatures verified with the API's keys (absent: no keys).",
            "schema": {"type": "string", "enum": ["true", "false"]},
        },
    }
    listing = {"type": "object", "properties": {"cards": {"type": "array", "items": {"type": "object"}}}}
    schemas["CardRegistration"] = {
        "type": "object",
        "required": ["agent_type", "card"],
        "properties": {
            "agent_type": {"type": "string"},
            "card": card,
            **{
                name: value
                for name, value in schemas["AgentRegistration"]["properties"].items()
                if name not in ("agent_type", "card", "capabilities", "endpoint")
            },
            "capabilities": {"type": "array", "items": {"type": "string"}},
            "endpoint": {"type": "string"},
        },
        "additionalProperties": False,
    }
    return {
        "/v1/agents/{agent_id}/card": {
            "get": _operation(
                "getAgentCard",
                "An agent's A2A Agent Card as registered (304 when If-None-Match names its ETag)",
                {200: {**_json(card, "The card."), "headers": etag}, 304: {"description": "Unchanged."}},
                (403, 404, 422, 502, 503),
                parameters=[_AGENT_ID],
            ),
        },
        "/v1/agents/{agent_id}/draining": {
            "put": _operation(
                "setDraining",
                "Mark an agent draining (never selected, out of DNS answers) or not",
                {204: {"description": "Done."}},
                (400, 403, 404, 422, 502, 503),
                body="DrainingRequest",
                parameters=[_AGENT_ID],
            ),
        },
        "/v1/cards": {
            "post": _operation(
                "registerFromCard",
                "Register an agent from its A2A Agent Card (its skills are the capabilities)",
                {201: _json(_ref("RegisterResponse"), "Registered.")},
                (400, 403, 422, 502, 503),
                body="CardRegistration",
            ),
            "get": _operation(
                "listCards",
                "The A2A Agent Cards of the live agents matching every filter given",
                {200: _json(listing, "Agents with their cards."), 304: {"description": "Unchanged."}},
                (400, 403, 422, 502, 503),
                parameters=_DISCOVERY,
            ),
        },
    }


def _pool_paths() -> dict[str, Any]:
    """Pools and demand (see consul_agents.api._pool_routes)."""
    agent_type = {"name": "agent_type", "in": "path", "required": True, "schema": {"type": "string"}}
    region = _query("region", {"type": "string"}, "Consul datacenter (default: the local one)")
    return {
        "/v1/pools": {
            "get": _operation(
                "listPools",
                "Every pool (agent type and datacenter) the caller's token sees, with its scaling signal",
                {200: _json({"type": "array", "items": _ref("PoolStatus")}, "Pools by datacenter and type.")},
                (400, 403, 502, 503),
            ),
        },
        "/v1/pools/{agent_type}": {
            "get": _operation(
                "getPool",
                "One pool: agents by status, capacity, load, settings and scaling signal",
                {200: _json(_ref("PoolStatus"), "The pool (empty when the type has no agent).")},
                (400, 403, 422, 502, 503),
                parameters=[agent_type, region],
            ),
            "put": _operation(
                "setPoolSettings",
                "Store the pool's settings in Consul KV (a pool-admin token)",
                {200: _json(_ref("PoolSettings"), "The settings stored.")},
                (400, 403, 413, 422, 502, 503),
                body="PoolSettings",
                parameters=[agent_type, region],
            ),
            "delete": _operation(
                "deletePoolSettings",
                "Remove the pool's settings from Consul KV (a pool-admin token)",
                {204: {"description": "Removed (or there were none)."}},
                (400, 403, 422, 502, 503),
                parameters=[agent_type, region],
            ),
        },
    }


def openapi_document() -> dict[str, Any]:
    _, top = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = top.get("$defs", {})
    agents = {"type": "array", "items": _ref("AgentInfo")}
    text = {"text/plain": {"schema": {"type": "string"}}}
    paths: dict[str, Any] = {
        "/v1/agents": {
            "post": _operation(
                "registerAgent",
                "Register an agent (or update one with the same agent_id)",
                {201: {**_json(_ref("RegisterResponse"), "Registered."), "links": _AGENT_LINKS}},
                (400, 403, 413, 422, 502, 503),
                body="AgentRegistration",
            ),
            "get": _operation(
                "discoverAgents",
                "Live agents matching every filter given (critical and maintenance only when asked)",
                {200: _json(agents, "Matching agents, sorted by type and id.")},
                (400, 403, 422, 502, 503),
                parameters=_DISCOVERY,
            ),
        },
        "/v1/census": {
            "get": _operation(
                "census",
                "Every agent of every status in every datacenter, each datacenter from its own answer",
                {200: _json(agents, "Every agent the token may see, by type and id per datacenter.")},
                (403, 502, 503),
            ),
        },
        "/v1/agents/{agent_id}": {
            "get": _operation(
                "getAgent",
                "One agent as Consul's catalog sees it",
                {200: _json(_ref("AgentInfo"), "The agent.")},
                (403, 404, 422, 502, 503),
                parameters=[_AGENT_ID],
            ),
            "delete": _operation(
                "deregisterAgent",
                "Deregister an agent",
                {200: _json(_ref("DeregisterResponse"), "Deregistered.")},
                (403, 404, 422, 502, 503),
                parameters=[_AGENT_ID],
            ),
        },
        "/v1/agents/{agent_id}/heartbeat": {
            "put": _operation(
                "heartbeat",
                "Prove an agent alive and report its load",
                {204: {"description": "Recorded."}},
                (400, 403, 404, 413, 422, 502, 503),
                body="HeartbeatRequest",
                body_required=False,
                parameters=[_AGENT_ID],
            ),
        },
        "/v1/agents/{agent_id}/maintenance": {
            "put": _operation(
                "setMaintenance",
                "Put an agent in maintenance or take it out",
                {204: {"description": "Done."}},
                (400, 403, 404, 413, 422, 502, 503),
                body="MaintenanceRequest",
                parameters=[_AGENT_ID],
            ),
        },
        "/v1/select": {
            "post": _operation(
                "selectAgent",
                "Pick one live agent matching the criteria with the chosen strategy",
                {200: _json(_ref("AgentInfo"), "The chosen agent.")},
                (400, 403, 404, 413, 422, 502, 503),
                body="SelectionCriteria",
                body_required=False,
            ),
        },
        "/v1/types": {
            "get": _operation(
                "agentTypes",
                "Every agent type with the union of its capabilities",
                {
                    200: _json(
                        {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                        "Agent type -> capabilities.",
                    )
                },
                (403, 422, 502, 503),
                parameters=[_query("region", {"type": "string"}, "Consul datacenter")],
            ),
        },
        "/v1/prometheus/sd": {
            "get": _operation(
                "prometheusTargets",
                "Prometheus HTTP service discovery: one scrape target per live agent (http_sd_configs)",
                {200: _json(_HTTP_SD, "Target groups in Prometheus' http_sd format.")},
                (400, 403, 422, 502, 503),
                parameters=[
                    *_DISCOVERY,
                    _query("metrics_path", {"type": "string"}, "path under each endpoint (default /metrics)"),
                ],
            ),
        },
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Whether the API reaches Consul and Consul has a leader",
                "responses": {
                    "200": _json(_ref("HealthBody"), "Consul is reachable and has a leader."),
                    "503": _json(_ref("HealthBody"), "Consul is unreachable or has no leader."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics; the agents gauge counts what the caller's token may see",
                "responses": {"200": {"description": "Prometheus text exposition.", "content": text}},
                "security": _SECURITY,
            }
        },
    }
    paths.update(_card_paths(schemas))
    paths.update(batch_paths(schemas, _operation, _json, _ref, _AGENT_ID))
    paths.update(_pool_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "consul-agents",
            "version": __version__,
            "description": "A registry for AI agents on HashiCorp Consul. Every request acts with the "
            "caller's own Consul ACL token (X-Consul-Token or Authorization: Bearer); the API has none.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "consulToken": {"type": "apiKey", "in": "header", "name": "X-Consul-Token"},
                "bearerToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }
