"""REST routes for A2A agents: an agent's card (with a strong ETag), the card listing, draining.

``GET /v1/cards`` makes the registry an A2A curated registry: the cards of the live agents the caller's
token may see, filtered like discovery. The A2A specification leaves registries open; a proposed AI
Catalog (``/.well-known/ai-catalog.json``, A2A pull request 2240) is not merged and its shape still moves,
so it is not served; each entry of the listing carries the card itself plus what the catalog proposal
adds around it (where the agent runs, its health), so mapping it onto the catalog later is mechanical.

Whether a card's signatures verified is in each listing entry (``verified``) and, for one card, in the
``Card-Verified`` header (``true`` or ``false``): both only when the API was given keys (``create_app(
card_verifier=...)``, ``consul-agents serve --card-keys``); without keys ``verified`` is null and the header
is absent.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from consul_agents._card_ops import RegisteredCard
from consul_agents._errors import InvalidAgentError
from consul_agents._models import AgentRegistration
from consul_agents.api._routes import _agent_id, _body, _parse, _view, discovery_request
from consul_agents.api._schemas import DrainingRequest

__all__ = ["VERIFIED_HEADER", "card_routes"]

card_routes = web.RouteTableDef()

#: Whether the card's signatures verified against the API's keys (absent when it has none).
VERIFIED_HEADER = "Card-Verified"


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


@card_routes.post("/v1/cards")
async def register_from_card(request: web.Request) -> web.Response:
    """Register an agent from its A2A Agent Card: ``{"agent_type": ..., "card": {...}}`` plus any other
    registration field; the capabilities are the card's skills (and ``capabilities``, if given)."""
    body = await _body(request)
    agent_type, card = body.pop("agent_type", None), body.pop("card", None)
    if not isinstance(agent_type, str):
        raise InvalidAgentError("invalid agent_type: a string is required", field="agent_type")
    if not isinstance(card, dict):
        raise InvalidAgentError("invalid card: the Agent Card must be a JSON object", field="card")
    unknown = sorted(set(body) - set(AgentRegistration.model_fields))
    if unknown:
        raise InvalidAgentError(f"invalid {unknown[0][:64]}: not a registration field", field=unknown[0][:64])
    registration = AgentRegistration.from_agent_card(card, agent_type=agent_type, **body)
    agent_id = await _view(request).register_agent(registration)
    response = web.json_response({"agent_id": agent_id}, status=201)
    response.headers["Location"] = f"/v1/agents/{agent_id}"
    return response


@card_routes.get("/v1/agents/{agent_id}/card")
async def get_card(request: web.Request) -> web.StreamResponse:
    """The agent's A2A Agent Card as registered; 304 when If-None-Match names its ETag."""
    found = await _view(request).get_registered_card(_agent_id(request))
    etag = _quoted(found.digest)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if found.verified is not None:
        headers[VERIFIED_HEADER] = "true" if found.verified else "false"
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
