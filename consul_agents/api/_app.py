"""The REST API application: per-token registry views, error mapping, request metrics.

Run it with ``consul-agents serve`` or host it beside other tasks with aiohttp's ``AppRunner``::

    app = create_app(consul_url="http://127.0.0.1:8500")
    web.run_app(app, port=8080)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from consul_agents._cards import CardVerifier
from consul_agents._errors import ConsulAgentsError
from consul_agents._metrics import HTTP_DURATION
from consul_agents._registry import AgentRegistry
from consul_agents.api._batch_routes import batch_routes
from consul_agents.api._body import MAX_BODY_BYTES
from consul_agents.api._card_routes import card_routes
from consul_agents.api._errors import BadRequest, error_response, response_for
from consul_agents.api._http_sd import sd_routes
from consul_agents.api._keys import OPENAPI, REGISTRY_KEY, VIEWS
from consul_agents.api._openapi import openapi_document
from consul_agents.api._pool_routes import pool_routes
from consul_agents.api._routes import routes
from consul_agents.api._tokens import TokenViews

__all__ = ["create_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed"}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a JSON body; a client mistake is never answered with a 500."""
    try:
        return await handler(request)
    except (ConsulAgentsError, BadRequest) as exc:
        return response_for(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _HTTP_KINDS.get(exc.status, "bad_request")
        response = error_response(exc.status, kind, exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


@web.middleware
async def _timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        HTTP_DURATION.labels(request.method, route, str(status)).observe(time.perf_counter() - started)


def create_app(
    consul_url: str | None = None,
    datacenter: str | None = None,
    *,
    ca_cert: str | None = None,
    verify: bool | None = None,
    timeout: float = 10.0,
    max_token_views: int = 64,
    card_verifier: CardVerifier | None = None,
    require_signed_cards: bool = False,
) -> web.Application:
    """The API for the Consul at ``consul_url`` (default: CONSUL_HTTP_ADDR, then http://127.0.0.1:8500).

    It never uses a token of its own (CONSUL_HTTP_TOKEN is ignored): every request acts with the token its
    caller sent, so the API can do nothing its caller could not do directly. ``card_verifier`` and
    ``require_signed_cards`` are AgentRegistry's: with a verifier, card reads say whether each card
    verified; requiring signed cards makes ``POST /v1/cards`` refuse unsigned or badly signed ones (422,
    field ``card.signatures``, like any invalid card).
    """
    registry = AgentRegistry(
        consul_url,
        "",
        datacenter,
        ca_cert=ca_cert,
        verify=verify,
        timeout=timeout,
        card_verifier=card_verifier,
        require_signed_cards=require_signed_cards,
    )
    app = web.Application(middlewares=[_timing, _errors], client_max_size=MAX_BODY_BYTES)
    app[OPENAPI] = openapi_document()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with registry:
            app[REGISTRY_KEY] = registry
            app[VIEWS] = views = TokenViews(registry, max_token_views)
            try:
                yield
            finally:
                await views.close()

    app.cleanup_ctx.append(lifecycle)
    app.add_routes(routes)
    app.add_routes(sd_routes)
    app.add_routes(card_routes)
    app.add_routes(batch_routes)
    app.add_routes(pool_routes)
    return app
