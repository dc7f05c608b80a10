"""The REST API's handlers: parse the HTTP request into the library's models, call the caller's registry view.

Handlers raise our errors; the middleware in :mod:`consul_agents.api._app` turns them into answers.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ValidationError

from consul_agents._errors import ConsulAgentsError, InvalidAgentError
from consul_agents._metrics import fleet_exposition
from consul_agents._models import (
    AGENT_ID_PATTERN,
    AgentRegistration,
    AgentStatus,
    DiscoveryRequest,
    SelectionCriteria,
    invalid_agent_error,
)
from consul_agents._pool_ops import metrics_census
from consul_agents._registry import AgentRegistry
from consul_agents._routing import check_region
from consul_agents.api._body import read_json_object
from consul_agents.api._errors import BadRequest, error_response
from consul_agents.api._keys import OPENAPI, REGISTRY_KEY, VIEWS
from consul_agents.api._schemas import (
    DeregisterResponse,
    HealthBody,
    HeartbeatRequest,
    MaintenanceRequest,
    RegisterResponse,
)
from consul_agents.api._tokens import token_of

__all__ = ["DISCOVERY_PARAMETERS", "routes"]

log = logging.getLogger("consul_agents.api")
routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)

#: Query parameters of GET /v1/agents: name -> (DiscoveryRequest field, repeatable).
DISCOVERY_PARAMETERS = {
    "type": ("agent_type", False),
    "capability": ("capabilities", True),
    "status": ("status", False),
    "max_load": ("max_load", False),
    "tag": ("tags", True),
    "region": ("region", False),
    "draining": ("include_draining", False),
}

_STATIC = resources.files("consul_agents.api") / "static"


def _view(request: web.Request) -> AgentRegistry:
    return request.app[VIEWS].for_token(token_of(request))


def _json(model: BaseModel | list[Any], status: int = 200) -> web.Response:
    if isinstance(model, list):
        body: Any = [item.model_dump(mode="json") for item in model]
    else:
        body = model.model_dump(mode="json")
    return web.json_response(body, status=status)


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The JSON object body, bounded in size and depth before it is parsed (see :mod:`.._body`)."""
    return await read_json_object(request, optional=optional)


def _parse(model: type[M], body: dict[str, Any]) -> M:
    """Build a model from JSON; pydantic's errors become InvalidAgentError naming the field."""
    try:
        return model(**body)
    except ValidationError as exc:
        raise invalid_agent_error(exc, model.__name__) from exc


def _agent_id(request: web.Request) -> str:
    agent_id = request.match_info["agent_id"]
    if not AGENT_ID_PATTERN.match(agent_id):
        raise InvalidAgentError(
            f"invalid agent_id: {agent_id[:140]!r} is not an agent id (letters, digits, '-', '_', '.', ':')",
            field="agent_id",
        )
    return agent_id


async def _known_region(request: web.Request, region: str | None) -> None:
    """Reject a datacenter Consul does not know with 422 (Consul would answer 500 "No path to datacenter",
    which also means a WAN outage). Discover and select get this check from the registry's discovery."""
    if region is not None:
        check_region(region, await _view(request).discovery.datacenters())


def discovery_request(query: Any) -> DiscoveryRequest:
    """GET /v1/agents query parameters -> DiscoveryRequest (unknown parameters are a 400, not ignored)."""
    fields: dict[str, Any] = {}
    for name in query:
        if name not in DISCOVERY_PARAMETERS:
            raise BadRequest(
                f"unknown query parameter {name[:64]!r}; known: {', '.join(DISCOVERY_PARAMETERS)}", name[:64]
            )
    for name, (field, repeatable) in DISCOVERY_PARAMETERS.items():
        values: list[str] = query.getall(name, [])
        if not values:
            continue
        if not repeatable and len(values) > 1:
            raise BadRequest(f"query parameter {name!r} is given {len(values)} times", name)
        if name == "capability":
            fields[field] = [c.strip() for value in values for c in value.split(",") if c.strip()]
        elif name == "tag":
            tags: dict[str, str] = {}
            for value in values:
                key, sep, tag_value = value.partition("=")
                if not sep:
                    raise BadRequest(f"tag {value[:64]!r} must look like key=value", "tag")
                tags[key] = tag_value
            fields[field] = tags
        elif name == "max_load":
            try:
                fields[field] = float(values[0])
            except ValueError as exc:
                raise BadRequest(f"max_load {values[0][:64]!r} is not a number", "max_load") from exc
        else:
            fields[field] = values[0]
    return DiscoveryRequest(**fields)


# -- agents --------------------------------------------------------------------------------------------


@routes.post("/v1/agents")
async def register_agent(request: web.Request) -> web.Response:
    registration = _parse(AgentRegistration, await _body(request))
    agent_id = await _view(request).register_agent(registration)
    response = _json(RegisterResponse(agent_id=agent_id), status=201)
    response.headers["Location"] = f"/v1/agents/{agent_id}"
    return response


@routes.get("/v1/agents")
async def discover_agents(request: web.Request) -> web.Response:
    discovery = discovery_request(request.query)
    return _json(await _view(request).discover_agents(discovery))


@routes.get("/v1/census")
async def census(request: web.Request) -> web.Response:
    """Every agent of every status (draining ones too) in every datacenter the caller's token may see, each
    datacenter counted from its own answer, never from another's failover: what the web page shows."""
    return _json(await _view(request).census())


@routes.get("/v1/agents/{agent_id}")
async def get_agent(request: web.Request) -> web.Response:
    return _json(await _view(request).get_agent(_agent_id(request)))


@routes.put("/v1/agents/{agent_id}/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    agent_id = _agent_id(request)
    beat = _parse(HeartbeatRequest, await _body(request, optional=True))
    await _view(request).heartbeat(agent_id, beat.load, status=AgentStatus(beat.status), output=beat.output)
    return web.Response(status=204)


@routes.put("/v1/agents/{agent_id}/maintenance")
async def maintenance(request: web.Request) -> web.Response:
    agent_id = _agent_id(request)
    change = _parse(MaintenanceRequest, await _body(request))
    await _view(request).set_maintenance(agent_id, change.enable, change.reason)
    return web.Response(status=204)


@routes.delete("/v1/agents/{agent_id}")
async def deregister_agent(request: web.Request) -> web.Response:
    agent_id = _agent_id(request)
    if not await _view(request).deregister_agent(agent_id):
        return error_response(404, "not_found", f"agent {agent_id!r} is not registered")
    return _json(DeregisterResponse(agent_id=agent_id, deregistered=True))


@routes.post("/v1/select")
async def select_agent(request: web.Request) -> web.Response:
    criteria = _parse(SelectionCriteria, await _body(request, optional=True))
    chosen = await _view(request).select_agent(criteria)
    if chosen is None:
        return error_response(404, "no_match", "no live agent matches the criteria")
    return _json(chosen)


@routes.get("/v1/types")
async def agent_types(request: web.Request) -> web.Response:
    region = request.query.get("region")
    if region is not None:
        DiscoveryRequest(region=region)  # validates the datacenter name
    await _known_region(request, region)
    return web.json_response(await _view(request).agent_types(region))


# -- operations ----------------------------------------------------------------------------------------


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Whether this API can reach Consul and Consul has a leader (no token needed)."""
    gateway = request.app[REGISTRY_KEY].gateway
    try:
        answer = await gateway.get("check Consul's leader", "/v1/status/leader")
    except ConsulAgentsError as exc:
        body = HealthBody(status="unavailable", consul=gateway.address, message=str(exc))
        return _json(body, status=503)
    leader = answer.body if isinstance(answer.body, str) else ""
    if not leader:
        body = HealthBody(status="unavailable", consul=gateway.address, message="Consul has no leader")
        return _json(body, status=503)
    return _json(HealthBody(status="ok", consul=gateway.address, leader=leader))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; the agents gauge counts what the scraper's own token may see, each
    datacenter from its own answer."""
    view = _view(request)
    fleet = b""
    try:
        seen, pool_gauges = await metrics_census(view)
    except ConsulAgentsError as exc:
        log.info("agents gauge left out of this scrape: %s", exc)
    else:
        fleet = fleet_exposition(seen) + pool_gauges
    body = generate_latest(REGISTRY) + fleet
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return web.Response(text=(_STATIC / "index.html").read_text(), content_type="text/html")


@routes.get("/static/app.js")
async def script(request: web.Request) -> web.Response:
    return web.Response(text=(_STATIC / "app.js").read_text(), content_type="text/javascript")
