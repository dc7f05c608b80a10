"""REST routes for A2A agents: an agent's card (with a strong ETag), the card listing, draining.

``GET /v1/cards`` makes the registry an A2A curated registry: the cards of the live agents the caller's
token may see, filtered like discovery. The A2A specification leaves registries open; a proposed AI
Catalog (``/.well-known/ai-catalog.json``, A2A pull request 2240) is not merged and its shape still moves,
so it is not served; each entry of the listing carries the card itself plus what the catalog proposal
adds around it (where the agent runs, its health), so mapping it onto the catalog later is mechanical.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from consul_agents._card_ops import RegisteredCard
from consul_agents.api._routes import _agent_id, _body, _parse, _view, discovery_request
from consul_agents.api._schemas import DrainingRequest

__all__ = ["card_routes"]

card_routes = web.RouteTableDef()


def _quoted(digest: str) -> str:
    return f'"{digest}"'


def _not_modified(request: web.Request, etag: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2, weak comparison): ``*`` or any listed tag equal to ours."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags


def _entry(entry: RegisteredCard) -> dict[str, Any]:
    agent = entry.agent
    return {
        "agent_id": agent.agent_id,
        "agent_type": agent.agent_type,
        "datacenter": agent.datacenter,
        "status": agent.status.value,
        "draining": agent.draining,
        "endpoint": agent.endpoint,
        "card_digest": entry.digest,
        "verified": entry.verified,
        "card": entry.card,
    }


@card_routes.get("/v1/agents/{agent_id}/card")
async def get_card(request: web.Request) -> web.StreamResponse:
    """The agent's A2A Agent Card as registered; 304 when If-None-Match names its ETag."""
    found = await _view(request).get_registered_card(_agent_id(request))
    etag = _quoted(found.digest)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    return web.json_response(found.card, headers=headers)


@card_routes.get("/v1/cards")
async def list_cards(request: web.Request) -> web.StreamResponse:
    """The cards of the agents matching the discovery filters (type, capability, tag, status...)."""
    entries = await _view(request).agent_cards(discovery_request(request.query))
    listing = [_entry(entry) for entry in entries]
    identity = "\n".join(f"{e['agent_id']} {e['card_digest']} {e['status']} {e['draining']}" for e in listing)
    etag = _quoted("sha256:" + hashlib.sha256(identity.encode()).hexdigest())
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    return web.json_response({"cards": listing}, headers=headers)


@card_routes.put("/v1/agents/{agent_id}/draining")
async def set_draining(request: web.Request) -> web.Response:
    agent_id = _agent_id(request)
    change = _parse(DrainingRequest, await _body(request))
    await _view(request).set_draining(agent_id, change.draining)
    return web.Response(status=204)
