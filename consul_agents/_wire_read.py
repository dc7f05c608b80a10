"""Consul's answers read back as agents: every entry and every KV value is untrusted input. Pure.

Whoever holds a registrar token for one agent type can put anything into its own entries and KV metadata,
and Consul holds entries nobody wrote through this library (``consul services register``, Connect proxies,
catalog-only registrations made with ``/v1/catalog/register``, which Consul counts passing forever). None
of that may break an answer about other agents, other types or other readers, and none of it may be
selected as if it were a healthy agent. The rule, applied alike to cached and direct discovery:

An entry of a service ``agent-<type>`` is an agent only when it is something this library could have
written. Otherwise it is *skipped*, with one of :data:`SKIP_REASONS` (counted and logged once by the
caller, see :func:`consul_agents._metrics.record_skipped`); it is never shown with guessed fields:

``malformed``         not shaped like a Consul health entry (a field of the wrong JSON type)
``bad_id``            an id this library refuses to register (``/``, dot segments, over 128 characters...)
``no_check``          no check ``service:<id>``: registered without this library, or straight into the
                      catalog, so nothing proves the agent alive
``bad_endpoint``      Meta ``agent-endpoint`` missing or not a URL with scheme, host and port
``bad_load``          Meta ``agent-load`` missing or not a number from 0 to 1
``bad_heartbeat``     Meta ``agent-heartbeat`` missing or not an ISO 8601 time with a UTC offset
``bad_capabilities``  a tag that is not a lowercase DNS label, a repeated one, or none at all
``bad_tags``          a Meta key of the reserved ``agent-``/``consul-`` prefixes that is not ours, or an
                      invalid key or value
``bad_weight``        ``Weights.Passing`` not an integer from 1 to 65535
``bad_metadata``      the metadata (Meta or KV) is not a JSON object, or is not UTF-8, larger than
                      :data:`~consul_agents._models.MAX_METADATA_BYTES` or nested deeper than
                      :data:`MAX_READ_DEPTH`

Metadata that Meta says lives in KV but that KV does not hold (yet) reads as ``{}``: registration writes
KV before the service, so this is the short window of a deregistration, or a sidecar file whose
``consul kv put`` has not run yet.

Status: Consul's own rule over *every* check of the entry (maintenance wins, then the worst). A check this
library did not register (an HTTP or alias check added through raw Consul, a node check) can only lower an
agent's status, never raise it: the agent's own check must exist and pass for the agent to be passing, and
the answer agrees with Consul DNS, which counts every check too. One check is not health: the agent's own
``draining:<id>`` (always critical, so Consul DNS leaves the agent out) reads as ``draining`` instead.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from consul_agents._bounded_json import nests_deeper_than
from consul_agents._models import (
    AGENT_ID_PATTERN,
    CARD_META_KEYS,
    MAX_METADATA_BYTES,
    RESERVED_META_KEYS,
    RESERVED_META_PREFIX,
    SERVICE_PREFIX,
    AgentInfo,
)
from consul_agents._wire import (
    HEALTH_SCORES,
    META_CARD_DIGEST,
    META_CARD_VERSION,
    META_ENDPOINT,
    META_HEARTBEAT,
    META_LOAD,
    META_METADATA,
    METADATA_IN_KV,
    aggregate_status,
    check_id,
    is_agent_service,
    is_draining,
)

__all__ = [
    "MAX_READ_DEPTH",
    "SKIP_REASONS",
    "Skipped",
    "clipped",
    "decode_metadata",
    "entry_to_info",
    "infos_only",
    "kv_metadata_wanted",
    "read_entries",
    "read_entry",
]

SKIP_REASONS = (
    "malformed",
    "bad_id",
    "no_check",
    "bad_endpoint",
    "bad_load",
    "bad_heartbeat",
    "bad_capabilities",
    "bad_tags",
    "bad_weight",
    "bad_metadata",
)
#: Metadata read back may nest at most this deep (the object itself is depth 1; each object or array inside
#: adds one). Deeper JSON is refused before it is parsed, so no reader can hit Python's recursion limit.
#: Above what a registration may hold, so that everything once accepted is read back.
MAX_READ_DEPTH = 64

_OWN_META = frozenset((*RESERVED_META_KEYS, *CARD_META_KEYS))
#: What Meta may say of an A2A Agent Card; anything else reads as "no card" (see _cards).
_CARD_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_RESERVED = (RESERVED_META_PREFIX, "consul-")
_SHOWN = 80


def clipped(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "..." when cut (a string read from Consul may
    be of any length)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: object) -> str:
    """A value from Consul as it may appear in a message: repr (so control characters are escaped), cut."""
    return clipped(repr(value), _SHOWN)


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry that is not an agent as this library writes one, and why."""

    reason: str
    service: str
    agent_id: str
    detail: str

    def __str__(self) -> str:
        return (
            f"skipped entry {_shown(self.agent_id)} of service {_shown(self.service)} "
            f"({self.reason}): {self.detail}"
        )


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: json.loads with keyword arguments builds a decoder per call; this one is built once.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def decode_metadata(raw: str | bytes) -> dict[str, Any]:
    """Metadata JSON as read from Meta or KV; ValueError naming the problem when it is not metadata this
    library could have written (not UTF-8, too large, too deep, not a JSON object, NaN or Infinity)."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if len(data) > MAX_METADATA_BYTES:
        raise ValueError(f"{len(data)} bytes, more than {MAX_METADATA_BYTES}")
    try:
        text = data.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    # Fewer opening brackets than the bound cannot nest past it: the scan is skipped in the common case.
    if data.count(b"[") + data.count(b"{") > MAX_READ_DEPTH and nests_deeper_than(data, MAX_READ_DEPTH):
        raise ValueError(f"nested deeper than {MAX_READ_DEPTH}")
    try:
        decoded = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {_shown(str(exc))}") from exc
    if not isinstance(decoded, dict):
        raise ValueError(f"a JSON {type(decoded).__name__}, not an object")
    return decoded


def _meta(service: dict[str, Any]) -> dict[str, str]:
    meta = service.get("Meta") or {}
    if not isinstance(meta, dict):
        raise _Refused("malformed", "Meta is not a map")
    return meta


@functools.lru_cache(maxsize=4096)
def _is_endpoint(value: str) -> bool:
    """Whether the model would accept ``value`` as an endpoint (a URL with scheme, host and port)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return False
    return bool(parts.scheme) and "://" in value and bool(parts.hostname) and port is not None


def _endpoint(meta: dict[str, str]) -> str:
    value = meta.get(META_ENDPOINT)
    if not value:
        raise _Refused("bad_endpoint", f"no Meta {META_ENDPOINT}")
    if not _is_endpoint(value):
        raise _Refused("bad_endpoint", f"{_shown(value)} is not a URL with scheme, host and port")
    return value


def _load(meta: dict[str, str]) -> float:
    text = meta.get(META_LOAD)
    try:
        load = float(text) if text is not None else math.nan
    except ValueError:
        load = math.nan
    if not 0.0 <= load <= 1.0:
        raise _Refused("bad_load", f"Meta {META_LOAD} {_shown(text)} is not a number from 0 to 1")
    return load


def _heartbeat(meta: dict[str, str]) -> datetime:
    text = meta.get(META_HEARTBEAT)
    try:
        parsed = datetime.fromisoformat(text) if text else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _Refused("bad_heartbeat", f"Meta {META_HEARTBEAT} {_shown(text)} is not a time with an offset")
    return parsed


def _capabilities(service: dict[str, Any]) -> list[str]:
    tags = service.get("Tags") or []
    if not isinstance(tags, list) or not tags:
        raise _Refused("bad_capabilities", "no capabilities")
    for tag in tags:
        if not isinstance(tag, str) or not _DNS_LABEL.fullmatch(tag):
            raise _Refused("bad_capabilities", f"tag {_shown(tag)} is not a lowercase DNS label")
    if len(set(tags)) != len(tags):
        raise _Refused("bad_capabilities", "a capability is listed twice")
    return tags


def _tags(meta: dict[str, str]) -> dict[str, str]:
    # Consul itself limits Meta to 64 keys of [A-Za-z0-9_-] (128 at most) with values of 512 characters.
    tags = {k: v for k, v in meta.items() if k not in _OWN_META}
    for key in tags:
        if key.lower().startswith(_RESERVED) or not _META_KEY.fullmatch(key):
            raise _Refused("bad_tags", f"Meta key {_shown(key)} is not a tag this library writes")
    return tags


def _weight(service: dict[str, Any]) -> int:
    weights = service.get("Weights") or {}
    weight = weights.get("Passing", 1) if isinstance(weights, dict) else None
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 65535:
        raise _Refused("bad_weight", f"Weights.Passing {_shown(weight)} is not an integer from 1 to 65535")
    return weight


def _metadata(meta: dict[str, str], kv_metadata: str | bytes | None) -> dict[str, Any]:
    value = meta.get(META_METADATA)
    raw = kv_metadata if value == METADATA_IN_KV else value
    if raw is None:
        return {}
    try:
        return decode_metadata(raw)
    except ValueError as exc:
        where = "KV metadata" if value == METADATA_IN_KV else f"Meta {META_METADATA}"
        raise _Refused("bad_metadata", f"{where} is {exc}") from exc


def _card(meta: dict[str, str]) -> tuple[str | None, str | None]:
    """(digest, version) of the agent's card from Meta; (None, None) when Meta names no valid digest."""
    digest, version = meta.get(META_CARD_DIGEST), meta.get(META_CARD_VERSION)
    if not isinstance(digest, str) or not _CARD_DIGEST.fullmatch(digest):
        return None, None
    return digest, version if isinstance(version, str) and version.isprintable() else None


def _service_of(entry: Any) -> tuple[dict[str, Any], str, str] | None:
    """(Service, its name, its ID) of an entry; None when the entry has no such fields."""
    service = entry.get("Service") if isinstance(entry, dict) else None
    if not isinstance(service, dict):
        return None
    name, agent_id = service.get("Service"), service.get("ID")
    if not isinstance(name, str) or not isinstance(agent_id, str):
        return None
    return service, name, agent_id


def _raw_id(entry: Any) -> str:
    """The Service ID of an entry too malformed to read, when it has one as a string (else "")."""
    service = entry.get("Service") if isinstance(entry, dict) else None
    agent_id = service.get("ID") if isinstance(service, dict) else None
    return agent_id[:200] if isinstance(agent_id, str) else ""


def kv_metadata_wanted(entry: Any) -> tuple[str, str] | None:
    """(agent type, agent id) of an agent entry whose metadata lives in KV, when its id is one this library
    registers (so its KV key is safe to read); None otherwise."""
    found = _service_of(entry)
    if found is None:
        return None
    service, name, agent_id = found
    meta = service.get("Meta")
    if not is_agent_service(name) or not isinstance(meta, dict):
        return None
    if meta.get(META_METADATA) != METADATA_IN_KV or not AGENT_ID_PATTERN.fullmatch(agent_id):
        return None
    return name.removeprefix(SERVICE_PREFIX), agent_id


def _has_own_check(checks: list[Any], agent_id: str) -> bool:
    own = check_id(agent_id)
    return any(check.get("CheckID") == own for check in checks)


def read_entry(
    entry: Any, *, kv_metadata: str | bytes | None = None, staleness: float = 0.0, queried: str = ""
) -> AgentInfo | Skipped | None:
    """One ``/v1/health/service`` entry as an AgentInfo; Skipped when it is an agent service's entry this
    library could not have written; None when it is not an agent service at all. Never raises.

    ``queried`` is the service queried: an entry too malformed to name its own service is reported under
    it (with its ID, when it has one), so that such entries of different services are told apart.
    """
    found = _service_of(entry)
    if found is None:
        return Skipped(
            "malformed", queried, _raw_id(entry), "the entry has no Service with a Service name and an ID"
        )
    service, name, agent_id = found
    if not is_agent_service(name):
        return None
    try:
        if not AGENT_ID_PATTERN.fullmatch(agent_id):
            raise _Refused("bad_id", "not an agent id this library registers")
        node = entry.get("Node") or {}
        checks = entry.get("Checks") or []
        if not isinstance(node, dict) or not isinstance(checks, list):
            raise _Refused("malformed", "Node or Checks of the wrong type")
        if not _has_own_check(checks, agent_id):
            raise _Refused("no_check", f"no check {check_id(agent_id)!r}: nothing proves it alive")
        meta = _meta(service)
        status = aggregate_status(checks)
        card_digest, card_version = _card(meta)
        return AgentInfo(
            agent_id=agent_id,
            agent_type=name.removeprefix(SERVICE_PREFIX),
            capabilities=_capabilities(service),
            status=status,
            endpoint=_endpoint(meta),
            health_score=HEALTH_SCORES[status],
            current_load=_load(meta),
            last_heartbeat=_heartbeat(meta),
            metadata=_metadata(meta, kv_metadata),
            tags=_tags(meta),
            datacenter=str(node.get("Datacenter", "")),
            weight=_weight(service),
            node=str(node.get("Node", "")),
            staleness=staleness,
            card_digest=card_digest,
            card_version=card_version,
            draining=is_draining(checks),
        )
    except _Refused as exc:
        return Skipped(exc.reason, name, agent_id, exc.detail)
    except (ValidationError, TypeError, AttributeError) as exc:
        # A value of the wrong JSON type somewhere (Consul never writes one; another answer might).
        return Skipped("malformed", name, agent_id, _shown(f"{type(exc).__name__}: {exc}"))


def read_entries(
    entries: Iterable[Any],
    *,
    kv_metadata: Mapping[str, str | bytes] | None = None,
    staleness: float = 0.0,
    queried: str = "",
) -> list[AgentInfo | Skipped | None]:
    """:func:`read_entry` of each entry of an answer about the service ``queried``, in order, with the KV
    metadata of each agent id given."""
    if not kv_metadata:
        return [read_entry(entry, staleness=staleness, queried=queried) for entry in entries]
    results: list[AgentInfo | Skipped | None] = []
    for entry in entries:
        found = _service_of(entry)
        value = kv_metadata.get(found[2]) if found is not None else None
        results.append(read_entry(entry, kv_metadata=value, staleness=staleness, queried=queried))
    return results


def entry_to_info(
    entry: Mapping[str, Any], *, kv_metadata: str | bytes | None = None, staleness: float = 0.0
) -> AgentInfo:
    """One entry as an AgentInfo; ValueError naming the problem when it is not an agent this library
    could have written."""
    result = read_entry(entry, kv_metadata=kv_metadata, staleness=staleness)
    if not isinstance(result, AgentInfo):
        raise ValueError(str(result) if result is not None else "not an agent service")
    return result


def infos_only(results: Sequence[AgentInfo | Skipped | None]) -> list[AgentInfo]:
    """The agents among :func:`read_entries` results."""
    return [result for result in results if isinstance(result, AgentInfo)]
