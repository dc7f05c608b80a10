"""A2A Agent Cards: validation, skills as capabilities, digests. Pure: no I/O, and no a2a-sdk import.

An Agent Card (A2A specification 1.0) is the JSON object an agent serves at
``/.well-known/agent-card.json``. The registry keeps the whole card beside the registration and derives
from it what Consul needs:

* each skill id becomes a capability (a Consul service tag, so a DNS label): lowercased, and every run of
  characters other than ASCII letters and digits replaced by one ``-``, with ``-`` trimmed at both ends
  (``hello_world`` -> ``hello-world``, ``Summarize.V2`` -> ``summarize-v2``). A skill whose id maps to
  nothing, to more than 63 characters, or holds non-ASCII letters is refused, naming the skill; so are two
  skills whose ids map to the same label;
* the first entry of ``supportedInterfaces`` (the agent's preferred one) gives the endpoint; a URL without
  a port gets its scheme's default port (Consul DNS answers with a port);
* the card's SHA-256 digest (of :func:`card_text`, the card serialised with sorted keys) and its
  ``version`` go in service Meta, so readers see a change without fetching the card.

Everything about a card is bounded before anything is written: its serialised size, its nesting depth,
the number of skills and interfaces, and every string must be encodable as UTF-8 (Consul's clients
decode strictly). Cards read back from Consul are checked the same way and against the digest in Meta.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MAX_CARD_BYTES",
    "MAX_CARD_DEPTH",
    "MAX_SKILLS",
    "CardFields",
    "CardPolicy",
    "CardVerifier",
    "card_digest",
    "card_text",
    "parse_card_text",
    "skill_capability",
    "validate_card",
]

#: Largest card accepted, serialised (Consul's KV limit is 512 KB; real cards are a few KB).
MAX_CARD_BYTES = 128 * 1024
#: Deepest nesting of objects and arrays accepted (extension params may nest; real cards stay under 8).
MAX_CARD_DEPTH = 32
#: Most skills a card may declare: each becomes a service tag.
MAX_SKILLS = 64
_MAX_INTERFACES = 16
#: The card's version travels in a Meta value; it is short in every real card.
_MAX_VERSION = 128

_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9]+")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_URL_SCHEMES = {"http": 80, "https": 443, "grpc": 443, "grpcs": 443}


class CardError(ValueError):
    """A card that cannot be registered; ``field`` names where in the card the problem is."""

    def __init__(self, message: str, field: str = "card") -> None:
        super().__init__(message)
        self.field = field


def card_text(card: Mapping[str, Any]) -> str:
    """The card as stored in KV and digested: compact JSON with sorted keys, non-ASCII kept as is."""
    return json.dumps(card, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def card_digest(text: str) -> str:
    """``sha256:<hex>`` of a card's :func:`card_text`: a strong ETag and the Meta change marker."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def skill_capability(skill_id: str) -> str:
    """The capability (DNS label) a skill id maps to; CardError naming the skill when there is none."""
    if not skill_id.isascii():
        raise CardError(f"skill {skill_id[:80]!r}: its id is not ASCII, so it maps to no DNS label")
    label = _NOT_LABEL_CHARS.sub("-", skill_id.lower()).strip("-")
    if not label:
        raise CardError(f"skill {skill_id[:80]!r}: its id has no letter or digit, so it maps to no DNS label")
    if not _DNS_LABEL.fullmatch(label):
        raise CardError(f"skill {skill_id[:80]!r}: its id maps to {label[:80]!r}, longer than 63 characters")
    return label


def _shape_ok(card: Mapping[str, Any]) -> bool:
    """The fast check, without recursion: plain dicts with string keys and lists, nested at most
    MAX_CARD_DEPTH deep. JSON types, finite numbers and valid text are checked by serialising the card."""
    stack: list[tuple[Any, int]] = [(card, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        if depth > MAX_CARD_DEPTH:
            return False
        children: Iterable[Any]
        if type(value) is dict:
            for key in value:
                if type(key) is not str:
                    return False
            children = value.values()
        elif type(value) is list:
            children = value
        else:
            return False  # another Mapping or sequence type: the slow walk names it
        for item in children:
            kind = type(item)
            if kind is dict or kind is list:
                push((item, depth + 1))
    return True


def _check_value(value: Any, path: str, depth: int) -> None:
    """The slow walk that names where a card is wrong: JSON types only, finite numbers, UTF-8-encodable
    strings, containers nested at most MAX_CARD_DEPTH deep."""
    if depth > MAX_CARD_DEPTH and isinstance(value, Mapping | list):
        raise CardError(f"card nests deeper than {MAX_CARD_DEPTH} levels (at {path})", path)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CardError(f"card has a non-string key at {path}", path)
            _check_value(key, path, depth)
            _check_value(item, f"{path}.{key[:40]}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise CardError(f"card text at {path} is not valid Unicode (lone surrogate)", path) from exc
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CardError(f"card number at {path} is not finite", path)
    elif value is not None and not isinstance(value, bool | int):
        raise CardError(f"card value at {path} is a {type(value).__name__}, not JSON", path)


def _string(card: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str:
    value = card.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise CardError(f"card {path}{key} must be a non-empty string", f"card.{path}{key}")
    return value


def _interface_url(url: str, index: int) -> str:
    where = f"card.supportedInterfaces[{index}].url"
    if len(url.encode()) > 512 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise CardError(
            f"{where} {url[:80]!r} is not a URL (too long, or holds spaces/control characters)", where
        )
    parts = urlsplit(url)
    default_port = _URL_SCHEMES.get(parts.scheme.lower())
    if default_port is None or not parts.hostname:
        raise CardError(f"{where} {url[:80]!r} is not an http(s) or grpc URL with a host", where)
    try:
        port = parts.port
    except ValueError as exc:
        raise CardError(f"{where} {url[:80]!r} has an invalid port", where) from exc
    if port is None:
        netloc = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{netloc}:{default_port}")
    return urlunsplit(parts)


class CardFields:
    """What a valid card gives a registration: its text, digest, version, capabilities and endpoint."""

    __slots__ = ("capabilities", "digest", "endpoint", "text", "version")

    def __init__(self, text: str, digest: str, version: str, capabilities: list[str], endpoint: str) -> None:
        self.text = text
        self.digest = digest
        self.version = version
        self.capabilities = capabilities
        self.endpoint = endpoint


def validate_card(card: Any) -> CardFields:
    """Check a card (the JSON object an agent serves) and derive what the registry needs from it.

    Raises CardError naming the problem: not an object, too large, too deep, a required field missing
    (``name``, ``description``, ``version``, ``supportedInterfaces``, ``skills``), a skill without an
    id or whose id maps to no capability, an interface URL that is not one.
    """
    if not isinstance(card, Mapping):
        raise CardError(f"an Agent Card must be a JSON object, not {type(card).__name__}")
    try:
        if not _shape_ok(card):
            raise ValueError("shape")
        text = card_text(card)
        size = len(text.encode())
    except (TypeError, ValueError, RecursionError) as exc:
        _check_value(card, "card", 1)  # raises, naming the place
        raise CardError(f"card is not JSON-serialisable: {str(exc)[:120]}") from exc
    if size > MAX_CARD_BYTES:
        raise CardError(f"card is {size} bytes once serialised; at most {MAX_CARD_BYTES}")
    _string(card, "name", "")
    _string(card, "description", "")
    version = _string(card, "version", "")
    if len(version) > _MAX_VERSION or not version.isprintable():
        raise CardError(
            f"card version {version[:80]!r} must be printable and at most {_MAX_VERSION} characters",
            "card.version",
        )
    interfaces = card.get("supportedInterfaces")
    if not isinstance(interfaces, list) or not interfaces:
        raise CardError("card supportedInterfaces must be a non-empty list", "card.supportedInterfaces")
    if len(interfaces) > _MAX_INTERFACES:
        raise CardError(f"card lists {len(interfaces)} interfaces; at most {_MAX_INTERFACES}")
    for index, interface in enumerate(interfaces):
        if not isinstance(interface, Mapping):
            raise CardError(
                f"card supportedInterfaces[{index}] must be an object", "card.supportedInterfaces"
            )
        _string(interface, "url", f"supportedInterfaces[{index}].")
        _string(interface, "protocolBinding", f"supportedInterfaces[{index}].")
    endpoint = _interface_url(interfaces[0]["url"], 0)
    skills = card.get("skills")
    if not isinstance(skills, list) or not skills:
        raise CardError("card skills must be a non-empty list (skills become capabilities)", "card.skills")
    if len(skills) > MAX_SKILLS:
        raise CardError(f"card declares {len(skills)} skills; at most {MAX_SKILLS}", "card.skills")
    capabilities: dict[str, str] = {}
    for index, skill in enumerate(skills):
        if not isinstance(skill, Mapping):
            raise CardError(f"card skills[{index}] must be an object", "card.skills")
        skill_id = _string(skill, "id", f"skills[{index}].")
        _string(skill, "name", f"skills[{index}].")
        try:
            label = skill_capability(skill_id)
        except CardError as exc:
            raise CardError(str(exc), f"card.skills[{index}].id") from exc
        if label in capabilities:
            raise CardError(
                f"skills {capabilities[label][:80]!r} and {skill_id[:80]!r} both map to capability {label!r}",
                f"card.skills[{index}].id",
            )
        capabilities[label] = skill_id
    return CardFields(text, card_digest(text), version, list(capabilities), endpoint)


#: Checks a card's signatures (JWS over the JCS-canonical card): returns when one verifies against a
#: configured key, raises otherwise. ``consul_agents.a2a.card_verifier`` builds one on a2a-sdk's signing.
CardVerifier = Callable[[Mapping[str, Any]], None]


class CardPolicy:
    """What a registry does with card signatures: verify them with ``verifier`` (None: no keys), and with
    ``require_signed`` refuse to register a card that is unsigned or whose signatures do not verify."""

    __slots__ = ("require_signed", "verifier")

    def __init__(self, verifier: CardVerifier | None = None, require_signed: bool = False) -> None:
        if require_signed and verifier is None:
            raise CardError("require_signed_cards needs a card_verifier (the keys to verify with)")
        self.verifier = verifier
        self.require_signed = require_signed

    def check(self, card: Mapping[str, Any]) -> tuple[bool | None, str]:
        """(verified, why not): verified is None when no verifier is configured."""
        if self.verifier is None:
            return None, "no keys are configured to verify card signatures"
        if not card.get("signatures"):
            return False, "the card is not signed"
        try:
            self.verifier(card)
        except Exception as exc:  # the verifier's own errors: any failure means "not verified"
            return False, f"its signatures do not verify against the configured keys ({type(exc).__name__})"
        return True, ""


def parse_card_text(text: str, expected_digest: str) -> dict[str, Any]:
    """A card read back from Consul: size-bounded, JSON, a valid card, and the one Meta's digest names.

    Raises CardError naming the problem (what Consul holds is untrusted: another writer may have put
    anything under the key).
    """
    if len(text.encode()) > MAX_CARD_BYTES:
        raise CardError(f"the stored card is larger than {MAX_CARD_BYTES} bytes")
    try:
        card = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CardError("the stored card is not JSON") from exc
    fields = validate_card(card)
    if fields.digest != expected_digest:
        raise CardError("the stored card does not match the digest in the agent's Meta (changed or tampered)")
    return dict(card)
