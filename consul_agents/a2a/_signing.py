"""Agent Card signatures through a2a-sdk's signing helpers (JWS over the RFC 8785 canonical card).

:func:`card_verifier` gives the core registry what it needs (``AgentRegistry(card_verifier=...)``): a check
of a card as JSON, done exactly as a2a-sdk verifies (the card parsed into its AgentCard type, signatures
left out, JCS-canonicalised). :func:`sign_card` signs a card given as JSON, for agents that publish one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from a2a.client.card_resolver import parse_agent_card
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.utils.signing import ProtectedHeader, create_agent_card_signer, create_signature_verifier
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWKError

from consul_agents._cards import CardVerifier

__all__ = ["card_verifier", "sign_card"]

Key = PyJWK | str | bytes


def card_verifier(
    keys: Mapping[str, Key], algorithms: Sequence[str] = ("ES256", "RS256", "EdDSA")
) -> CardVerifier:
    """A verifier accepting a card when one of its signatures verifies with the key its ``kid`` names.

    ``keys`` maps key ids to public keys (PEM text or bytes, or PyJWK); ``algorithms`` are the only ones
    accepted (no algorithm confusion). The verifier raises when the card is unsigned, names an unknown key,
    or no signature verifies.
    """
    known = dict(keys)

    def key_for(kid: str | None, jku: str | None) -> Key:
        if kid is None or kid not in known:
            raise PyJWKError(f"no configured key has id {kid!r}")
        return known[kid]

    verify = create_signature_verifier(key_for, list(algorithms))

    def check(card: Mapping[str, Any]) -> None:
        verify(parse_agent_card(copy.deepcopy(dict(card))))

    return check


def sign_card(card: Mapping[str, Any], key: Key, *, kid: str, alg: str = "ES256") -> dict[str, Any]:
    """The card (JSON) with one more signature by ``key`` (a private key), as an agent would serve it."""
    proto = parse_agent_card(copy.deepcopy(dict(card)))
    header: ProtectedHeader = {"kid": kid, "alg": alg, "jku": None, "typ": "JOSE"}
    signed = create_agent_card_signer(key, header)(proto)
    return agent_card_to_dict(signed)
