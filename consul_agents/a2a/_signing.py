"""Agent Card signatures through a2a-sdk's signing helpers (JWS over the RFC 8785 canonical card).

:func:`card_verifier` gives the core registry what it needs (``AgentRegistry(card_verifier=...)``): a check
of a card as JSON, done exactly as a2a-sdk verifies (the card parsed into its AgentCard type, signatures
left out, JCS-canonicalised). :func:`jwks_keys` reads the public keys of a JWK Set (RFC 7517), as a
deployed API takes them (``consul-agents serve --card-keys FILE``). :func:`sign_card` signs a card given as
JSON, for agents that publish one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from a2a.client.card_resolver import parse_agent_card
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.utils.signing import ProtectedHeader, create_agent_card_signer, create_signature_verifier
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from consul_agents._cards import CardVerifier
from consul_agents._errors import InvalidAgentError

__all__ = ["card_verifier", "jwks_keys", "jwks_verifier", "sign_card"]

Key = PyJWK | str | bytes

#: A JWK Set file larger than this is refused (a set of a hundred RSA-4096 keys is about 100 KB).
MAX_JWKS_BYTES = 1024 * 1024
#: Most keys a JWK Set may hold.
MAX_JWKS_KEYS = 256
#: JWK members that only a private or symmetric key has: a verifier takes public keys only.
_SECRET_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


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


def _refused(source: str, problem: str) -> InvalidAgentError:
    return InvalidAgentError(f"invalid card_keys: {source}: {problem}", field="card_keys")


def jwks_keys(text: str | bytes, source: str = "JWK Set") -> dict[str, PyJWK]:
    """The public keys of a JWK Set (``{"keys": [...]}``, RFC 7517) by key id, for :func:`card_verifier`.

    Raises InvalidAgentError (``field="card_keys"``) naming ``source`` and the problem: larger than
    :data:`MAX_JWKS_BYTES`, not JSON, no ``keys`` list, more than :data:`MAX_JWKS_KEYS` keys, a key without a
    ``kid`` or with one used twice, a private or symmetric key (a verifier needs public keys only, and a
    symmetric key would let whoever holds it forge signatures), or a key PyJWT cannot use.
    """
    if len(text) > MAX_JWKS_BYTES:
        raise _refused(source, f"larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _refused(source, "not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise _refused(source, 'not a JWK Set: it needs a non-empty "keys" list')
    if len(entries) > MAX_JWKS_KEYS:
        raise _refused(source, f"{len(entries)} keys; at most {MAX_JWKS_KEYS}")
    keys: dict[str, PyJWK] = {}
    for index, entry in enumerate(entries):
        where = f"keys[{index}]"
        if not isinstance(entry, dict):
            raise _refused(source, f"{where} is not a JSON object")
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refused(source, f'{where} has no "kid" (cards name their key by kid)')
        where = f"key {kid[:80]!r}"
        if kid in keys:
            raise _refused(source, f"{where} appears twice")
        secret = [member for member in _SECRET_MEMBERS if member in entry]
        if secret:
            raise _refused(source, f"{where} is a private or symmetric key ({secret[0]!r}): give public keys")
        try:
            keys[kid] = PyJWK(entry)
        except (PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise _refused(source, f"{where} is not a usable public key ({str(exc)[:120]})") from exc
    return keys


def jwks_verifier(path: str | Path) -> CardVerifier:
    """:func:`card_verifier` with the public keys of the JWK Set file at ``path`` (see :func:`jwks_keys`)."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise _refused(source, f"cannot be read ({exc.strerror or type(exc).__name__})") from exc
    return card_verifier(jwks_keys(text, source))
