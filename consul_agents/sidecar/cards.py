"""The sidecar's A2A side: fetch an agent's card (``card: true`` or ``card: <URL or path>``) every interval.

A URL is fetched with ``If-None-Match`` (the ETag of the last answer), so an unchanged card costs the agent
a 304; a path is read from disk. The body is bounded (:data:`consul_agents._cards.MAX_CARD_BYTES`) and
validated like every card; what the sidecar registers comes from :meth:`AgentRegistration.from_agent_card`.
Failures are results, never exceptions: an agent that stops serving a valid card is critical.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from consul_agents._cards import MAX_CARD_BYTES
from consul_agents._models import AgentRegistration

__all__ = ["WELL_KNOWN_CARD_PATH", "CardFetch", "fetch_card", "registration_from_card"]

#: Where an A2A agent serves its card (a2a.utils.constants.AGENT_CARD_WELL_KNOWN_PATH).
WELL_KNOWN_CARD_PATH = "/.well-known/agent-card.json"


@dataclass(frozen=True, slots=True)
class CardFetch:
    """One fetch: ``card`` when a card came back, ``unchanged`` on 304, else ``error`` says what failed."""

    card: dict[str, Any] | None = None
    etag: str | None = None
    unchanged: bool = False
    error: str = ""


def _decode(body: bytes, where: str) -> CardFetch:
    if len(body) > MAX_CARD_BYTES:
        return CardFetch(error=f"{where}: the card is larger than {MAX_CARD_BYTES} bytes")
    try:
        card = json.loads(body)
    except (ValueError, RecursionError):
        return CardFetch(error=f"{where}: the answer is not JSON")
    if not isinstance(card, dict):
        return CardFetch(error=f"{where}: the card is not a JSON object")
    return CardFetch(card=card)


async def fetch_card(
    session: aiohttp.ClientSession, source: str, etag: str | None, timeout: float
) -> CardFetch:
    """Fetch the card at ``source`` (an http(s) URL or a file path), conditionally on ``etag``."""
    if not source.startswith(("http://", "https://")):
        try:
            text = await asyncio.to_thread(_read_bounded, Path(source))
        except OSError as exc:
            return CardFetch(error=f"{source}: cannot read: {exc.strerror or exc}")
        return _decode(text, source)
    headers = {"Accept": "application/json"}
    if etag:
        headers["If-None-Match"] = etag
    try:
        async with asyncio.timeout(timeout):
            async with session.get(source, headers=headers, allow_redirects=False) as response:
                if response.status == 304:
                    return CardFetch(etag=etag, unchanged=True)
                if response.status != 200:
                    return CardFetch(error=f"GET {source}: HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_CARD_BYTES:
                        break  # _decode names the problem; the rest is never read
                fetched = _decode(bytes(body), f"GET {source}")
                return CardFetch(fetched.card, response.headers.get("ETag"), error=fetched.error)
    except TimeoutError:
        return CardFetch(error=f"GET {source}: no answer within {timeout:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return CardFetch(error=f"GET {source}: {type(exc).__name__}: {exc}"[:200])


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_CARD_BYTES + 1)


def registration_from_card(
    template: AgentRegistration, card: dict[str, Any], extra: list[str]
) -> AgentRegistration:
    """The registration for a fetched card: the file's fields (id, type, endpoint, tags, ttl...) with the
    card's skills as capabilities plus ``extra``. Raises InvalidAgentError naming the card's problem."""
    fields = template.model_dump(exclude={"capabilities", "card", "agent_type", "agent_id", "endpoint"})
    return AgentRegistration.from_agent_card(
        card,
        agent_type=template.agent_type,
        agent_id=template.agent_id,
        capabilities=extra,
        endpoint=template.endpoint,
        **fields,
    )
