"""REST routes for pools: ``GET /v1/pools``, ``GET/PUT/DELETE /v1/pools/{agent_type}``.

Each acts with the caller's token: a pool shows only the agents and the settings that token may read, and
only a token with write on the pool's key (a pool-admin or operator token) may change its settings.
"""

from __future__ import annotations

from aiohttp import web

from consul_agents._models import DiscoveryRequest
from consul_agents._pools import PoolSettings
from consul_agents.api._errors import BadRequest
from consul_agents.api._routes import _body, _json, _parse, _view

__all__ = ["pool_routes"]

pool_routes = web.RouteTableDef()


def _region(request: web.Request) -> str | None:
    """The optional ``region`` query parameter (validated as a datacenter name); nothing else is accepted."""
    unknown = [name for name in request.query if name != "region"]
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0][:64]!r}; known: region", unknown[0][:64])
    region = request.query.get("region")
    if region is not None:
        DiscoveryRequest(region=region)
    return region


@pool_routes.get("/v1/pools")
async def list_pools(request: web.Request) -> web.Response:
    """Every pool the caller's token sees, in every datacenter."""
    if request.query:
        raise BadRequest("GET /v1/pools takes no query parameters", next(iter(request.query))[:64])
    return _json(await _view(request).pools())


@pool_routes.get("/v1/pools/{agent_type}")
async def get_pool(request: web.Request) -> web.Response:
    return _json(await _view(request).pool(request.match_info["agent_type"], _region(request)))


@pool_routes.put("/v1/pools/{agent_type}")
async def put_pool(request: web.Request) -> web.Response:
    """Store the pool's settings (the whole object: fields left out take their defaults)."""
    region = _region(request)
    settings = _parse(PoolSettings, await _body(request))
    await _view(request).set_pool_settings(request.match_info["agent_type"], settings, region)
    return _json(settings)


@pool_routes.delete("/v1/pools/{agent_type}")
async def delete_pool(request: web.Request) -> web.Response:
    await _view(request).set_pool_settings(request.match_info["agent_type"], None, _region(request))
    return web.Response(status=204)
