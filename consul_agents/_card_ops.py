"""The registry's A2A operations: store and read Agent Cards, list them, mark agents draining.

Client layer (like `_registry`): Consul I/O goes through the registry's gateway, Consul's JSON through
`_wire`, card rules through `_cards`. A card lives in KV under :func:`consul_agents._wire.card_key`, beside
the agent's metadata and under the same ACL rules; its digest and version live in the service's Meta, so a
reader knows which card to expect and refuses any other (KV is untrusted: anyone with write on the key
could have replaced it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from consul_agents import _wire as wire
from consul_agents._cards import CardError, CardPolicy, parse_card_text
from consul_agents._errors import (
    AgentNotFoundError,
    ConsulRequestError,
    InvalidAgentError,
    PermissionDeniedError,
)
from consul_agents._models import AGENT_ID_PATTERN, AgentInfo, AgentRegistration, DiscoveryRequest

if TYPE_CHECKING:
    from consul_agents._gateway import ConsulGateway
    from consul_agents._registry import AgentRegistry

__all__ = [
    "CardCache",
    "RegisteredCard",
    "delete_cards",
    "drop_replaced_card",
    "list_cards",
    "read_card",
    "set_draining",
    "write_card",
]

#: Bytes of card text one registry (one token) keeps in memory, keyed by digest.
CARD_CACHE_BYTES = 32 * 1024 * 1024
#: Cards read from KV at once while listing.
_LIST_CONCURRENCY = 32
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class RegisteredCard:
    """An agent's A2A Agent Card as registered, with its agent and its digest (a strong ETag)."""

    agent: AgentInfo
    card: dict[str, Any]
    digest: str
    #: Whether the card's signatures verified against the reader's keys (None: the reader has none).
    verified: bool | None = None


class CardCache:
    """Cards by digest, bounded in bytes. A digest names one content, so an entry is never stale; each
    registry view (one token) has its own, so a card is only served to a token that could read it."""

    def __init__(self, policy: CardPolicy | None = None, max_bytes: int = CARD_CACHE_BYTES) -> None:
        self.policy = policy or CardPolicy()
        self._cards: LRUCache[str, tuple[dict[str, Any], bool | None, int]] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda value: value[2]
        )

    def get(self, digest: str) -> tuple[dict[str, Any], bool | None] | None:
        found = self._cards.get(digest)
        return None if found is None else (found[0], found[1])

    def put(self, digest: str, card: dict[str, Any], size: int) -> bool | None:
        """Keep a card read from Consul; returns whether it verified (its signatures checked once)."""
        verified, _ = self.policy.check(card)
        if size <= self._cards.maxsize:
            self._cards[digest] = (card, verified, size)
        return verified


def check_signatures(policy: CardPolicy, registration: AgentRegistration) -> None:
    """Under a require-signed policy, refuse (InvalidAgentError) a card unsigned or not verifying."""
    if registration.card is None or not policy.require_signed:
        return
    verified, problem = policy.check(registration.card)
    if not verified:
        raise InvalidAgentError(f"invalid card.signatures: {problem}", field="card.signatures")


async def write_card(
    gateway: ConsulGateway,
    operation: str,
    registration: AgentRegistration,
    agent_id: str,
    *,
    replacing: AgentRegistration | None = None,
) -> None:
    """Store the registration's card in KV under its digest (a card key is never overwritten with another
    card: see wire.card_key). Called before the service write, so that a reader never sees a digest in
    Meta without its card, and again after it, in case another client's deregistration or a reap removed
    it between the two (the write moves the key's index, so a check-and-set deletion read before it fails).

    Before the service write, ``replacing`` is this client's registration of the id that the new one
    replaces: when it names the same card, Meta names that card already and the write after the service
    is enough, so re-registering an unchanged card costs one KV write (a Raft write, on disk), not two.
    """
    card = registration.card_fields
    if card is None or _key(replacing, agent_id) == _key(registration, agent_id):
        return
    await gateway.put(
        operation, f"/v1/kv/{wire.card_key(registration.agent_type, agent_id, card.digest)}", card.text
    )


def _key(registration: AgentRegistration | None, agent_id: str) -> str | None:
    if registration is None or registration.card_fields is None:
        return None
    return wire.card_key(registration.agent_type, agent_id, registration.card_fields.digest)


async def drop_replaced_card(
    gateway: ConsulGateway,
    operation: str,
    registration: AgentRegistration,
    previous: AgentRegistration | None,
    agent_id: str,
) -> None:
    """After a registration: remove the card of the previous registration if this one replaced it."""
    old = _key(previous, agent_id)
    if old is not None and old != _key(registration, agent_id):
        await gateway.delete(operation, f"/v1/kv/{old}")


async def delete_cards(gateway: ConsulGateway, operation: str, agent_type: str, agent_id: str) -> None:
    """Remove every card stored for an agent (deregistration)."""
    await gateway.delete(
        operation, f"/v1/kv/{wire.card_prefix(agent_type, agent_id)}", params={"recurse": ""}
    )


async def _card_for(
    registry: AgentRegistry, cache: CardCache, info: AgentInfo
) -> tuple[dict[str, Any], bool | None]:
    digest = info.card_digest
    if digest is None:
        raise AgentNotFoundError(info.agent_id, "it was registered without an A2A Agent Card")
    if not _DIGEST.fullmatch(digest) or not AGENT_ID_PATTERN.fullmatch(info.agent_id):
        # Both come from Consul and make the KV path: never let them point anywhere else.
        raise ConsulRequestError(
            f"read the card of agent {info.agent_id[:80]!r}", 200, "Meta names no card digest"
        )
    cached = cache.get(digest)
    if cached is not None:
        return cached
    operation = f"read the card of agent {info.agent_id!r}"
    try:
        response = await registry.gateway.get(
            operation,
            f"/v1/kv/{wire.card_key(info.agent_type, info.agent_id, digest)}",
            params={"raw": ""},
            datacenter=info.datacenter or None,
            allow_404=True,
            decode=lambda text: text,
        )
    except UnicodeDecodeError as exc:  # py-consul decodes every body as strict UTF-8
        raise ConsulRequestError(operation, 200, "the stored card is not UTF-8 text") from exc
    if response.status == 404 or response.body is None:
        raise AgentNotFoundError(info.agent_id, "its A2A Agent Card is missing from Consul's KV store")
    text = response.body if isinstance(response.body, str) else str(response.body)
    try:
        card = parse_card_text(text, digest)
    except CardError as exc:
        raise ConsulRequestError(operation, 200, str(exc)) from exc
    return card, cache.put(digest, card, len(text))


async def read_card(registry: AgentRegistry, cache: CardCache, agent_id: str) -> RegisteredCard:
    """The agent's card as registered (AgentNotFoundError when the agent is unknown or has no card)."""
    info = await registry.get_agent(agent_id)
    card, verified = await _card_for(registry, cache, info)
    assert info.card_digest is not None
    return RegisteredCard(info, card, info.card_digest, verified)


async def list_cards(
    registry: AgentRegistry, cache: CardCache, request: DiscoveryRequest, *, cached: bool | None = None
) -> list[RegisteredCard]:
    """The cards of every agent matching ``request`` that has one, in discovery order. Agents whose card
    cannot be read (removed meanwhile, not matching its digest, or not readable with this token) are left
    out."""
    agents = await registry.discover_agents(request, cached=cached)
    found: list[RegisteredCard | None] = []
    missing: list[tuple[int, AgentInfo]] = []
    for info in agents:
        if info.card_digest is None:
            continue
        hit = cache.get(info.card_digest)
        if hit is None:
            missing.append((len(found), info))
            found.append(None)
        else:
            found.append(RegisteredCard(info, hit[0], info.card_digest, hit[1]))
    if missing:
        limit = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def one(info: AgentInfo) -> RegisteredCard | None:
            async with limit:
                try:
                    card, verified = await _card_for(registry, cache, info)
                except (AgentNotFoundError, ConsulRequestError, PermissionDeniedError):
                    return None
            assert info.card_digest is not None
            return RegisteredCard(info, card, info.card_digest, verified)

        read: Sequence[RegisteredCard | None] = await asyncio.gather(*(one(info) for _, info in missing))
        for (position, _), entry in zip(missing, read, strict=True):
            found[position] = entry
    return [entry for entry in found if entry is not None]


async def set_draining(registry: AgentRegistry, agent_id: str, draining: bool) -> None:
    """Mark an agent draining (or not) through the local Consul agent, which holds its checks."""
    gateway = registry.gateway
    operation = f"{'drain' if draining else 'undrain'} agent {agent_id!r}"
    local = await gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
    if local.status == 404:
        raise AgentNotFoundError(agent_id, "not registered with the local Consul agent")
    if draining:
        await gateway.put(operation, "/v1/agent/check/register", wire.draining_check(agent_id))
        return
    checks = await gateway.get(
        operation,
        "/v1/agent/checks",
        params={"filter": f"CheckID == {wire.quote(wire.draining_check_id(agent_id))}"},
    )
    if checks.body:
        await gateway.put(operation, f"/v1/agent/check/deregister/{wire.draining_check_id(agent_id)}")
