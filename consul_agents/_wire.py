"""Consul's wire format: the only module that knows Consul's JSON. Pure: no I/O, no clock, no randomness.

The encoding, chosen so that plain Consul tools, Consul ACLs and Consul DNS all see something meaningful:

* An agent of type ``T`` is the Consul service ``agent-T`` with service ID = agent id. ACL rules work on
  service names, so ``service "agent-T" { policy = "write" }`` lets a token register type T only, and
  ``service_prefix "agent-" { policy = "read" }`` lets it read every agent and nothing else.
* Capabilities are the service's tags, verbatim. Each is a DNS label, so ``plan.agent-T.service.consul``
  (or ``_agent-T._plan.service.consul``) resolves the agents of type T that can plan. Nothing else is put
  in Tags, so there is no tag prefix to inject.
* User tags are Meta entries, verbatim. This library's own Meta keys start with ``agent-``:
  ``agent-endpoint`` (the full URL; Address and Port carry host and port for DNS), ``agent-load``,
  ``agent-heartbeat`` (ISO 8601, UTC), ``agent-ttl`` and ``agent-metadata`` (the metadata as JSON when it fits
  in a 512-character Meta value; otherwise the value is ``kv`` and the JSON lives in the KV store under
  :func:`metadata_key`, ``consul-agents/metadata/<type>/<agent id>``, so that ACL rules can scope it by type).
* Liveness is one check per agent, ``service:<agent id>`` (Consul's own naming for a service's check),
  registered passing, with DeregisterCriticalServiceAfter so that crashed agents are reaped. An agent kept
  alive by its process (``liveness="process"``, see :mod:`consul_agents._liveness`) has a second one,
  ``alive:<agent id>``, an alias of its process's *anchor*: the service ``consul-agents-liveness-<type>``,
  whose one TTL check the process heartbeats; its own check then has a TTL of a year and changes only when
  the agent's status does. With ``liveness="http"`` (see :mod:`consul_agents._liveness_http`) that second
  check is instead a Consul HTTP check of its process's health server.
* Load travels in Meta, not in the check output: Consul defers syncing an output-only change for
  check_update_interval (5 minutes by default), while a Meta change reaches the catalog at once. A re-
  registration with unchanged content costs Consul nothing (its index does not move), so only real load
  changes cost a Raft write.

Filtering: everything Consul's filter expressions can test (capabilities, tags, status) is sent to Consul;
only ``max_load`` (a number kept as a string in Meta) is tested here. :func:`matches` is the full predicate,
used by the cache and to re-check Consul's answers, so cached and uncached answers agree.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from consul_agents._models import (
    AGENT_ID_PATTERN,
    CARD_META_KEYS,
    MAX_META_VALUE,
    RESERVED_META_KEYS,
    SERVICE_PREFIX,
    AgentInfo,
    AgentRegistration,
    AgentStatus,
    DiscoveryRequest,
)

__all__ = [
    "ANCHOR_PREFIX",
    "HEALTH_SCORES",
    "KV_PREFIX",
    "METADATA_IN_KV",
    "META_CARD_DIGEST",
    "META_CARD_VERSION",
    "META_ENDPOINT",
    "META_HEARTBEAT",
    "META_LOAD",
    "META_METADATA",
    "META_TTL",
    "HttpAlive",
    "agent_node_name",
    "agent_type_of",
    "aggregate_status",
    "alias_check_id",
    "anchor_check_id",
    "anchor_definition",
    "anchor_service_name",
    "card_digests",
    "card_key",
    "card_keys",
    "card_prefix",
    "check_id",
    "check_node",
    "datacenters",
    "draining_check",
    "draining_check_id",
    "entries_to_infos",
    "entry_to_info",
    "filter_expression",
    "format_duration",
    "health_entries",
    "health_entry",
    "id_filter",
    "id_holders",
    "ids_using_kv",
    "is_agent_service",
    "kv_metadata_text",
    "kv_modify_index",
    "kv_values_under",
    "local_agent_type",
    "local_card_digest",
    "local_datacenter",
    "local_service_name",
    "matches",
    "metadata_key",
    "metadata_keys",
    "metadata_prefix",
    "quote",
    "registration_mismatch",
    "reported_load",
    "service_definition",
    "service_names_for",
    "split_health_entries",
    "ttl_update",
    "txn_get_service",
    "txn_service_id",
    "txn_service_name",
    "with_load",
]

META_ENDPOINT, META_LOAD, META_HEARTBEAT, META_TTL, META_METADATA = RESERVED_META_KEYS
META_CARD_DIGEST, META_CARD_VERSION = CARD_META_KEYS
#: The value of ``agent-metadata`` when the metadata is too large for Meta and lives in KV.
METADATA_IN_KV = "kv"
_OWN_META = frozenset((*RESERVED_META_KEYS, *CARD_META_KEYS))
#: Every KV key this library writes starts with this prefix.
KV_PREFIX = "consul-agents/metadata/"

HEALTH_SCORES: Mapping[AgentStatus, float] = {
    AgentStatus.PASSING: 1.0,
    AgentStatus.WARNING: 0.5,
    AgentStatus.CRITICAL: 0.0,
    AgentStatus.MAINTENANCE: 0.0,
}
_MAINTENANCE_CHECKS = ("_service_maintenance:", "_node_maintenance")
#: A draining agent carries one extra check, ``draining:<agent id>``, always critical: Consul DNS then
#: leaves the agent out of its answers, while discovery reads it as the ``draining`` flag, not as health.
_DRAINING_CHECK = "draining:"
_SEVERITY = {"passing": 0, "warning": 1, "critical": 2}


def check_id(agent_id: str) -> str:
    """The ID of an agent's TTL check."""
    return f"service:{agent_id}"


#: Anchors (one TTL check per process and agent type) are the services ``consul-agents-liveness-<type>``:
#: outside ``agent-``, so no discovery, DNS name of a type, census or http_sd ever lists one as an agent.
ANCHOR_PREFIX = "consul-agents-liveness-"
#: The own check of an agent kept alive by its anchor: set only when the agent's status changes.
_STATE_TTL = "8760h"
_ALIAS_CHECK = "alive:"


def anchor_service_name(agent_type: str) -> str:
    """The Consul service of the anchors of ``agent_type`` (an ACL rule can scope it to the type)."""
    return ANCHOR_PREFIX + agent_type


def anchor_check_id(anchor_id: str) -> str:
    """The ID of an anchor's TTL check."""
    return f"service:{anchor_id}"


@dataclass(frozen=True, slots=True)
class HttpAlive:
    """An agent kept alive by a Consul HTTP check of its process's health server (see _liveness_http)."""

    url: str
    interval: timedelta
    timeout: timedelta = timedelta(seconds=1)


def alias_check_id(agent_id: str) -> str:
    """The ID of an agent's alias of its process's anchor."""
    return _ALIAS_CHECK + agent_id


def anchor_definition(
    agent_type: str, anchor_id: str, *, ttl: timedelta, deregister_after: timedelta
) -> dict[str, Any]:
    """The body of ``PUT /v1/agent/service/register`` for an anchor: no address, no port, one TTL check.

    Consul reaps it ``deregister_after`` after its TTL expires: callers give more than their agents', since
    an alias of a service that is gone turns passing ("No checks found", measured on Consul 1.8.7), so the
    agents must be reaped first."""
    return {
        "ID": anchor_id,
        "Name": anchor_service_name(agent_type),
        "Meta": {"anchor": "consul-agents liveness: not an agent; the agents of its process alias it"},
        "Check": {
            "CheckID": anchor_check_id(anchor_id),
            "Name": "process heartbeat",
            "Notes": f"consul-agents process heartbeat; critical after {format_duration(ttl)}",
            "TTL": format_duration(ttl),
            "Status": "passing",
            "DeregisterCriticalServiceAfter": format_duration(deregister_after),
        },
    }


def draining_check_id(agent_id: str) -> str:
    """The ID of the check that marks an agent draining."""
    return _DRAINING_CHECK + agent_id


def draining_check(agent_id: str) -> dict[str, Any]:
    """The body of ``PUT /v1/agent/check/register`` that marks an agent draining.

    A TTL check created critical and never updated stays critical (its TTL expiring changes nothing), and
    has no DeregisterCriticalServiceAfter, so Consul never reaps the agent for it. Re-registering the
    service (a load report) keeps it (measured on Consul 1.8.7).
    """
    return {
        "ID": draining_check_id(agent_id),
        "Name": "draining",
        "ServiceID": agent_id,
        "Notes": "consul-agents: the agent is draining (alive, taking no new work); critical to leave DNS",
        "TTL": "8760h",
        "Status": "critical",
    }


def card_prefix(agent_type: str, agent_id: str) -> str:
    """The KV folder of an agent's A2A Agent Cards: under the type's metadata prefix, so the same ACL rules
    cover it, and after a ``/``, which no agent id contains, so it never meets another agent's keys."""
    return f"{metadata_prefix(agent_type)}{agent_id}/card/"


def card_key(agent_type: str, agent_id: str, digest: str) -> str:
    """The KV key of one card, named by its digest (``sha256:<hex>`` -> ``.../card/<hex>``): a card is
    never overwritten in place, so a reader always finds the card its Meta names, even mid-update."""
    return card_prefix(agent_type, agent_id) + digest.removeprefix("sha256:")


def metadata_prefix(agent_type: str) -> str:
    """The KV prefix of every agent of one type: ACL rules grant KV access per type with it."""
    return f"{KV_PREFIX}{agent_type}/"


def metadata_key(agent_type: str, agent_id: str) -> str:
    """The KV key holding an agent's metadata when it is too large for Meta."""
    return metadata_prefix(agent_type) + agent_id


def format_duration(value: timedelta) -> str:
    """A Go duration string, as Consul expects ("15s", "1.5s")."""
    text = f"{value.total_seconds():.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def encode_metadata(metadata: Mapping[str, Any], *, private: bool = False) -> tuple[str | None, str | None]:
    """Split metadata into (Meta value, KV value): small JSON goes in Meta, larger (or ``private``) JSON in
    KV, with Meta saying ``kv``."""
    if not metadata:
        return None, None
    encoded = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
    if len(encoded) <= MAX_META_VALUE and not private:
        return encoded, None
    return METADATA_IN_KV, encoded


def _format_load(load: float) -> str:
    return f"{load:.4g}"


def service_definition(
    registration: AgentRegistration,
    agent_id: str,
    *,
    load: float,
    heartbeat: datetime,
    status: AgentStatus = AgentStatus.PASSING,
    anchor: str | HttpAlive | None = None,
) -> dict[str, Any]:
    """The body of ``PUT /v1/agent/service/register`` for a registration.

    ``status`` is the TTL check's status when Consul creates it (an existing check keeps its own): a
    sidecar that has not yet seen its agent answer registers it critical rather than passing. With an
    ``anchor`` (its service ID) the agent's own check only holds the status the client sets, and an alias
    check of the anchor turns critical when the process stops heartbeating it; with an :class:`HttpAlive`
    that second check is a Consul HTTP check of the process's health server instead.
    """
    endpoint = urlsplit(registration.endpoint)
    meta: dict[str, str] = dict(registration.tags)
    meta[META_ENDPOINT] = registration.endpoint
    meta[META_LOAD] = _format_load(load)
    meta[META_HEARTBEAT] = heartbeat.isoformat(timespec="milliseconds")
    meta[META_TTL] = format_duration(registration.ttl)
    meta_value, _ = encode_metadata(registration.metadata, private=registration.private_metadata)
    if meta_value is not None:
        meta[META_METADATA] = meta_value
    card = registration.card_fields
    if card is not None:
        meta[META_CARD_DIGEST] = card.digest
        meta[META_CARD_VERSION] = card.version
    return {
        "ID": agent_id,
        "Name": registration.service_name,
        "Tags": list(registration.capabilities),
        "Address": endpoint.hostname,
        "Port": endpoint.port,
        "Meta": meta,
        "Weights": {"Passing": registration.weight, "Warning": 1},
        "EnableTagOverride": False,
        **_checks(registration, agent_id, status, anchor),
    }


def _checks(
    registration: AgentRegistration, agent_id: str, status: AgentStatus, anchor: str | HttpAlive | None
) -> dict[str, Any]:
    reap_after = format_duration(registration.deregister_after)
    if anchor is None:
        ttl = format_duration(registration.ttl)
        notes = f"TTL heartbeat from consul-agents; critical after {ttl}"
    else:
        ttl, notes = _STATE_TTL, "consul-agents: the agent's own status, set when it changes"
    own = {
        "CheckID": check_id(agent_id),
        "Name": "heartbeat",
        "Notes": notes,
        "TTL": ttl,
        "Status": status.value,
        "DeregisterCriticalServiceAfter": reap_after,
    }
    if anchor is None:
        return {"Check": own}
    if isinstance(anchor, HttpAlive):
        return {"Checks": [own, _http_check(agent_id, anchor, reap_after)]}
    alias = {
        "CheckID": alias_check_id(agent_id),
        "Name": "process alive",
        "Notes": f"consul-agents: alias of the anchor {anchor} its process heartbeats",
        "AliasService": anchor,
        # Created passing like its anchor: a new check is critical until Consul first syncs the alias.
        "Status": "passing",
        "DeregisterCriticalServiceAfter": reap_after,
    }
    return {"Checks": [own, alias]}


def _http_check(agent_id: str, alive: HttpAlive, reap_after: str) -> dict[str, Any]:
    return {
        "CheckID": alias_check_id(agent_id),
        "Name": "process alive",
        "Notes": "consul-agents: its process's health server answers 200 while the process keeps it alive",
        "HTTP": alive.url,
        "Method": "GET",
        "Interval": format_duration(alive.interval),
        "Timeout": format_duration(alive.timeout),
        # Created passing: a new check is critical until its first run, up to an interval later.
        "Status": "passing",
        "DeregisterCriticalServiceAfter": reap_after,
    }


def with_load(agent_service: Mapping[str, Any], *, load: float, heartbeat: datetime) -> dict[str, Any]:
    """Re-registration body from ``GET /v1/agent/service/:id``, with a new load and heartbeat stamp.

    It carries no Check: re-registering without one keeps the existing TTL check and its status.
    """
    meta = dict(agent_service.get("Meta") or {})
    meta[META_LOAD] = _format_load(load)
    meta[META_HEARTBEAT] = heartbeat.isoformat(timespec="milliseconds")
    body: dict[str, Any] = {
        "ID": agent_service["ID"],
        "Name": agent_service["Service"],
        "Tags": list(agent_service.get("Tags") or []),
        "Address": agent_service.get("Address", ""),
        "Port": agent_service.get("Port", 0),
        "Meta": meta,
        "EnableTagOverride": bool(agent_service.get("EnableTagOverride", False)),
    }
    if agent_service.get("Weights"):
        body["Weights"] = agent_service["Weights"]
    return body


def ttl_update(status: AgentStatus, output: str | None = None) -> dict[str, str]:
    """The body of ``PUT /v1/agent/check/update/:id``.

    The output depends on the status alone (unless the caller gives one), never on the load: an output-only
    change is synced to the catalog later (check_update_interval) and would cost a Raft write. Same status,
    same body: Consul writes nothing. Every face writes one format, ``<status>: <what shows it>``:
    ``passing: heartbeat`` from the library, the REST API and the plugins, ``critical: GET http://...: HTTP
    503, expected 200`` from the sidecar's probe, ``warning: <text>`` when a caller gives the text.
    """
    return {"Status": status.value, "Output": f"{status.value}: {output or 'heartbeat'}"}


#: An agent type as the model accepts it: a lowercase DNS label that leaves "agent-<type>" one too.
_AGENT_TYPE = re.compile(rf"[a-z0-9](?:[a-z0-9-]{{0,{61 - len(SERVICE_PREFIX)}}}[a-z0-9])?")


def is_agent_service(service_name: str) -> bool:
    """Whether a Consul service name is ``agent-<type>`` for a type this library registers; any other
    service (``web``, ``agent-Foo_Bar``) is not an agent, whoever registered it."""
    return service_name.startswith(SERVICE_PREFIX) and bool(
        _AGENT_TYPE.fullmatch(service_name, len(SERVICE_PREFIX))
    )


def agent_type_of(service_name: str) -> str:
    return service_name.removeprefix(SERVICE_PREFIX)


def aggregate_status(checks: Iterable[Mapping[str, Any]]) -> AgentStatus:
    """Consul's rule: any maintenance check wins; otherwise the worst check status (critical > warning)."""
    worst = 0
    for check in checks:
        if str(check.get("CheckID", "")).startswith(_MAINTENANCE_CHECKS):
            return AgentStatus.MAINTENANCE
        if _is_draining_check(check):
            continue  # the draining flag, not health (see is_draining)
        worst = max(worst, _SEVERITY.get(str(check.get("Status", "critical")), 2))
    return (AgentStatus.PASSING, AgentStatus.WARNING, AgentStatus.CRITICAL)[worst]


def _is_draining_check(check: Mapping[str, Any]) -> bool:
    """The draining mark of the check's own service (a node check or another service's never counts)."""
    service_id = check.get("ServiceID")
    return bool(service_id) and check.get("CheckID") == _DRAINING_CHECK + str(service_id)


def is_draining(checks: Iterable[Mapping[str, Any]]) -> bool:
    """Whether an agent carries the draining check (whatever its status: it is the mark itself)."""
    return any(_is_draining_check(check) for check in checks)


def _parse_load(text: str | None) -> float:
    try:
        load = float(text) if text is not None else 0.0
    except ValueError:
        return 0.0
    return 0.0 if math.isnan(load) else min(max(load, 0.0), 1.0)


def reported_load(agent_service: Mapping[str, Any]) -> float:
    """The load last published in a service's Meta (0 when absent or unreadable)."""
    return _parse_load((agent_service.get("Meta") or {}).get(META_LOAD))


def kv_metadata_text(value: Any) -> str | None:
    """The metadata JSON read back from KV (``?raw``), whether the transport decoded it or not."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


def entry_to_info(entry: Any, *, kv_metadata: str | bytes | None = None, staleness: float = 0.0) -> AgentInfo:
    """One health entry as an AgentInfo (ValueError when it is not an agent): see :mod:`._wire_read`."""
    from consul_agents import _wire_read  # the read side imports this module

    return _wire_read.entry_to_info(entry, kv_metadata=kv_metadata, staleness=staleness)


def entries_to_infos(
    entries: Iterable[Any], *, kv_metadata: Mapping[str, str | bytes] | None = None, staleness: float = 0.0
) -> list[AgentInfo]:
    """The agents among health entries, entries that are not agents left out: see :mod:`._wire_read`."""
    from consul_agents import _wire_read

    return _wire_read.infos_only(
        _wire_read.read_entries(entries, kv_metadata=kv_metadata, staleness=staleness)
    )


def needs_kv_metadata(entry: Any) -> bool:
    """Whether an agent entry's metadata is in KV, under a key safe to read (see :mod:`._wire_read`)."""
    from consul_agents import _wire_read

    return _wire_read.kv_metadata_wanted(entry) is not None


def quote(value: str) -> str:
    """A string literal for Consul's filter expressions (go-bexpr).

    go-bexpr in Consul 1.8 rejects ``\\"`` inside a double-quoted string but accepts ``\\u`` escapes, so
    every character that could end or bend the literal is written as ``\\uXXXX``. Whatever a caller puts in
    a value, it stays one string literal: no filter injection.
    """
    out = []
    for char in value:
        if char in '"\\`' or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_NOT_CRITICAL = 'not ("critical" in Checks.Status)'
_IN_MAINTENANCE = 'Checks.CheckID matches "^_(service|node)_maintenance"'
# go-bexpr 0.1 (Consul 1.8) evaluates `"x" not in Checks.Status` wrongly; `not ("x" in ...)` is right.
_STATUS_FILTERS: Mapping[AgentStatus | None, str] = {
    None: _NOT_CRITICAL,
    AgentStatus.PASSING: f'{_NOT_CRITICAL} and not ("warning" in Checks.Status)',
    AgentStatus.WARNING: f'{_NOT_CRITICAL} and "warning" in Checks.Status',
    AgentStatus.CRITICAL: f'"critical" in Checks.Status and not ({_IN_MAINTENANCE})',
    AgentStatus.MAINTENANCE: _IN_MAINTENANCE,
}


def filter_expression(request: DiscoveryRequest) -> str:
    """The ``filter`` for ``/v1/health/service/:name``: everything of the request Consul can test."""
    clauses = [f"{quote(capability)} in Service.Tags" for capability in request.capabilities]
    clauses += [
        f"Service.Meta[{quote(key)}] == {quote(value)}" for key, value in sorted(request.tags.items())
    ]
    if request.include_draining and request.status not in (AgentStatus.CRITICAL, AgentStatus.MAINTENANCE):
        # A draining agent has a critical check and Consul 1.8's filters cannot tell which check is
        # critical, so the status is tested in Python instead (matches), on every agent asked about.
        clauses.append('Service.ID != ""')
    else:
        clauses.append(_STATUS_FILTERS[request.status])
    return " and ".join(clauses)


def status_matches(wanted: AgentStatus | None, status: AgentStatus) -> bool:
    if wanted is None:
        return status in (AgentStatus.PASSING, AgentStatus.WARNING)
    return status == wanted


def matches(request: DiscoveryRequest, info: AgentInfo) -> bool:
    """The whole request as a Python predicate; agrees with :func:`filter_expression` plus max_load."""
    if request.agent_type is not None and info.agent_type != request.agent_type:
        return False
    if request.region is not None and info.datacenter and info.datacenter != request.region:
        return False
    if not status_matches(request.status, info.status):
        return False
    if info.draining and not request.include_draining:
        return False
    if request.max_load is not None and info.current_load > request.max_load:
        return False
    if any(capability not in info.capabilities for capability in request.capabilities):
        return False
    return all(info.tags.get(key) == value for key, value in request.tags.items())


def service_names_for(request: DiscoveryRequest, catalog_services: Mapping[str, Sequence[str]]) -> list[str]:
    """The agent services that may hold matches, from ``/v1/catalog/services`` (name -> union of tags)."""
    if request.agent_type is not None:
        name = SERVICE_PREFIX + request.agent_type
        return [name] if name in catalog_services else []
    wanted = set(request.capabilities)
    return sorted(
        name
        for name, tags in catalog_services.items()
        if is_agent_service(name) and wanted.issubset(tags or ())
    )


class _HealthNode(TypedDict, total=False):
    Node: str
    Address: str
    Datacenter: str
    ModifyIndex: int


class _HealthWeights(TypedDict, total=False):
    Passing: int


class _HealthService(TypedDict, total=False):
    ID: str
    Service: str
    Tags: list[str] | None
    Address: str
    Port: int
    Meta: dict[str, str] | None
    Weights: _HealthWeights | None
    ModifyIndex: int


class _HealthCheck(TypedDict, total=False):
    CheckID: str
    ServiceID: str
    Status: str
    ModifyIndex: int


class _HealthEntry(TypedDict, total=False):
    Node: _HealthNode | None
    Service: _HealthService
    Checks: list[_HealthCheck] | None


_HEALTH_ENTRIES: TypeAdapter[list[_HealthEntry]] = TypeAdapter(list[_HealthEntry])
_HEALTH_ENTRY: TypeAdapter[_HealthEntry] = TypeAdapter(_HealthEntry)

#: How Consul lays out a ``/v1/health/service`` answer: (text before the first entry's node, text between
#: two entries, text after the last), compact as Go's json.Marshal writes it, and indented as Consul writes
#: every answer in ``-dev`` mode (json.MarshalIndent, four spaces).
_ENTRY_LAYOUTS = (
    ('[{"Node":{', '},{"Node":{', "}]"),
    ('[\n    {\n        "Node": {', '\n    },\n    {\n        "Node": {', "\n    }\n]\n"),
)
_PIECE_HEAD = '{"Node":{'


def health_entries(text: str | bytes) -> Any:
    """Decode a ``/v1/health/service`` answer keeping only the fields this module reads.

    Each entry of Consul's answer is 1.4 KB of JSON (proxy, connect, tagged addresses, check definitions...),
    of which a few fields matter here. Parsing in pydantic-core straight to those fields takes about two
    thirds of the time of ``json.loads`` and builds a third of the objects. An answer of another shape is
    decoded in full, so nothing is lost, only the speed.
    """
    if not text:
        return None
    try:
        return _HEALTH_ENTRIES.validate_json(text)
    except ValidationError:
        pass
    try:
        return json.loads(text)
    except RecursionError:
        # An entry nests deeper than Python's parser goes (a Connect proxy's Config holds any JSON its
        # registrar sends, and Consul accepts thousands of levels): decode entry by entry instead; the entry
        # that does not decode is None (read as malformed), and the others stand.
        pieces = split_health_entries(text) if isinstance(text, str) else None
        return text if pieces is None else [health_entry(piece) for piece in pieces]
    except ValueError:
        return text


def split_health_entries(text: str) -> list[str] | None:
    """The entries of a ``/v1/health/service`` answer as pieces of its text, found without parsing it;
    None when the answer is not laid out as Consul writes it (decode it whole with :func:`health_entries`).

    A watch re-reads every instance of a service on each change (Consul 1.8 has no streaming), and almost
    all of them are unchanged. Equal pieces are equal entries, so a reader keeps what it built from each
    piece and parses only the new ones, with :func:`health_entry`.

    Why the split is safe: a boundary holds quotes, and inside a JSON string every quote is escaped, so a
    boundary is always structure. The only objects Consul writes whose first member is ``"Node"`` with an
    object value are the entries themselves; arbitrary JSON (a Connect proxy's Config) could hold such an
    object inside an array, but then the piece starting at that entry's real beginning ends with the array
    still open, so it does not decode, and the caller must then decode the whole answer.
    """
    if len(text) <= 8 and text.strip() in ("", "[]", "null"):
        return []
    for head, boundary, tail in _ENTRY_LAYOUTS:
        if text.startswith(head) and text.endswith(tail):
            return text[len(head) : len(text) - len(tail)].split(boundary)
    return None


def health_entry(piece: str) -> Any:
    """One piece from :func:`split_health_entries` decoded like :func:`health_entries` decodes an entry;
    None when it is not a whole entry."""
    try:
        return _HEALTH_ENTRY.validate_json(_PIECE_HEAD + piece + "}")
    except ValidationError:
        return None


def datacenters(body: Any) -> list[str]:
    """``/v1/catalog/datacenters``: the datacenter names, nearest (by Consul's round-trip estimate) first."""
    return [str(name) for name in body or [] if isinstance(name, str)]


def local_datacenter(agent_self: Any) -> str:
    """The datacenter of the Consul agent answering ``/v1/agent/self``."""
    config = (agent_self or {}).get("Config") or {}
    return str(config.get("Datacenter", ""))


# -- reads of the client layer (KV metadata, the local agent's service, checks) ---------------------------


def kv_metadata_values(body: Any, agent_type: str) -> dict[str, bytes]:
    """``/v1/kv/<metadata prefix of agent_type>?recurse``: each agent's metadata value, by agent id, as the
    bytes KV holds (checked when the agent is read, see ``_wire_read``).

    Entries that are not under the prefix, name a nested key, hold no value or a value that is not
    base64 are left out (read as "no metadata"), as a 404 (no key under the prefix) is.
    """
    return kv_values_under(body, metadata_prefix(agent_type))


def kv_values_under(body: Any, prefix: str) -> dict[str, bytes]:
    """``/v1/kv/<prefix>?recurse``: the bytes of each key directly under ``prefix``, by the rest of its name.

    Entries that are not under the prefix, name a nested key, hold no value or a value that is not base64
    are left out, as a 404 (no key under the prefix) is.
    """
    values: dict[str, bytes] = {}
    for item in body if isinstance(body, list) else []:
        if not isinstance(item, dict):
            continue
        key, value = item.get("Key"), item.get("Value")
        if not isinstance(key, str) or not key.startswith(prefix) or not isinstance(value, str):
            continue
        name = key[len(prefix) :]
        if not name or "/" in name:
            continue
        try:
            values[name] = base64.b64decode(value, validate=True)
        except ValueError:
            continue
    return values


def local_has_card(agent_service: Any) -> bool:
    """``/v1/agent/service/<id>``: whether the agent's Meta names an A2A Agent Card."""
    return local_card_digest(agent_service) is not None


def local_card_digest(agent_service: Any) -> str | None:
    """``/v1/agent/service/<id>``: the digest of the A2A Agent Card the agent's Meta names, if any."""
    meta = agent_service.get("Meta") if isinstance(agent_service, dict) else None
    digest = meta.get(META_CARD_DIGEST) if isinstance(meta, dict) else None
    return digest if isinstance(digest, str) and digest else None


def local_metadata_key(agent_service: Any) -> str | None:
    """``/v1/agent/service/<id>``: the KV key of the agent's metadata when it is kept there, else None."""
    if not isinstance(agent_service, dict):
        return None
    meta = agent_service.get("Meta")
    name, agent_id = agent_service.get("Service"), agent_service.get("ID")
    if not isinstance(meta, dict) or meta.get(META_METADATA) != METADATA_IN_KV:
        return None
    if not isinstance(name, str) or not isinstance(agent_id, str) or not is_agent_service(name):
        return None
    return metadata_key(agent_type_of(name), agent_id)


def agent_service_of_checks(body: Any) -> str | None:
    """``/v1/health/state/any?filter=ServiceID==...``: the agent service the checks belong to, if any."""
    for check in body if isinstance(body, list) else []:
        name = check.get("ServiceName") if isinstance(check, dict) else None
        if isinstance(name, str) and is_agent_service(name):
            return name
    return None


def agent_services(body: Any) -> dict[str, list[str]]:
    """``/v1/catalog/services``: the agent services with their tags (anything else, or any value of
    another shape, left out)."""
    if not isinstance(body, dict):
        return {}
    return {
        name: [tag for tag in tags if isinstance(tag, str)] if isinstance(tags, list) else []
        for name, tags in body.items()
        if isinstance(name, str) and is_agent_service(name)
    }


def acl_text(item: Any, field: str) -> str:
    """A text field (``ID``, ``AccessorID``, ``SecretID``, ``Name``, ``Description``) of an ACL object
    Consul returned; "" when it is missing or not text."""
    value = item.get(field) if isinstance(item, dict) else None
    return value if isinstance(value, str) else ""


# -- identity and integrity of this library's own writes ----------------------------------------------------


def id_filter(agent_id: str, field: str) -> str:
    """A filter matching ``field`` equal to ``agent_id`` whatever the case, as Consul's catalog matches IDs.

    Agent ids hold only letters, digits and ``-_.:`` (see AGENT_ID_PATTERN), of which only ``.`` means
    something in a regular expression.
    """
    pattern = "(?i)^" + agent_id.replace(".", "[.]") + "$"
    return f"{field} matches {quote(pattern)}"


def id_holders(body: Any, name_field: str, id_field: str) -> dict[str, str]:
    """From a list (``/v1/health/state/any``) or map (``/v1/agent/services``) of Consul objects: the
    service name holding each service ID found."""
    items = body.values() if isinstance(body, Mapping) else body if isinstance(body, list) else []
    holders: dict[str, str] = {}
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get(id_field), str) and item.get(id_field):
            holders[item[id_field]] = str(item.get(name_field) or "")
    return holders


def check_node(body: Any) -> str | None:
    """The node of the first check in a ``/v1/agent/checks`` answer (the local Consul agent's node)."""
    for check in (body or {}).values() if isinstance(body, Mapping) else []:
        if isinstance(check, Mapping) and isinstance(check.get("Node"), str) and check["Node"]:
            return str(check["Node"])
    return None


def txn_get_service(node: str, agent_id: str) -> list[dict[str, Any]]:
    """The body of a read-only ``PUT /v1/txn`` fetching one service of one node from the catalog.

    Unlike ``/v1/catalog`` and ``/v1/health``, a transaction's read needs no ``node:read``: a registrar,
    whose token reads only its own types, sees its agent's catalog entry this way (or nothing, when the entry
    now belongs to a service its token cannot read).
    """
    return [{"Service": {"Verb": "get", "Node": node, "Service": {"ID": agent_id}}}]


def _txn_service(txn_body: Any) -> Mapping[str, Any] | None:
    results = txn_body.get("Results") if isinstance(txn_body, Mapping) else None
    service = None
    for result in results if isinstance(results, list) else []:
        if isinstance(result, Mapping) and isinstance(result.get("Service"), Mapping):
            service = result["Service"]
    return service


def txn_service_id(txn_body: Any) -> tuple[str, str] | None:
    """(service ID, service name) of the catalog entry in a :func:`txn_get_service` answer, if any."""
    service = _txn_service(txn_body)
    if service is None or not isinstance(service.get("ID"), str):
        return None
    name = service.get("Service")
    return service["ID"], name if isinstance(name, str) else ""


def agent_node_name(agent_self: Any) -> str | None:
    """The node name in a ``/v1/agent/self`` answer."""
    config = agent_self.get("Config") if isinstance(agent_self, Mapping) else None
    name = config.get("NodeName") if isinstance(config, Mapping) else None
    return name if isinstance(name, str) and name else None


def txn_service_name(txn_body: Any) -> str | None:
    """The service name of the catalog entry in a :func:`txn_get_service` answer (None: no entry seen)."""
    service = _txn_service(txn_body)
    name = None if service is None else service.get("Service")
    return name if isinstance(name, str) else None


def registration_mismatch(txn_body: Any, expected: Mapping[str, Any]) -> str | None:
    """How the catalog's entry (a :func:`txn_get_service` answer) differs from the service definition this
    client registered; None when name, address and port all match."""
    service = _txn_service(txn_body)
    if service is None:
        return "its catalog entry is gone or now belongs to a service this token cannot read"
    for field, registered, what in (
        ("Service", "Name", "service name"),
        ("Address", "Address", "address"),
        ("Port", "Port", "port"),
    ):
        found, wanted = service.get(field), expected.get(registered)
        if found != wanted:
            return f"its catalog entry has {what} {found!r}, registered {wanted!r}"
    return None


def local_service_name(agent_service: Any) -> str | None:
    """The service name in a ``GET /v1/agent/service/:id`` answer."""
    name = agent_service.get("Service") if isinstance(agent_service, Mapping) else None
    return name if isinstance(name, str) else None


def local_agent_type(agent_service: Any) -> tuple[str | None, bool]:
    """From ``GET /v1/agent/service/:id``: the agent type (None when the service is not an agent) and
    whether its Meta says the metadata lives in KV."""
    if not isinstance(agent_service, Mapping):
        return None, False
    name = agent_service.get("Service")
    meta = agent_service.get("Meta")
    in_kv = isinstance(meta, Mapping) and meta.get(META_METADATA) == METADATA_IN_KV
    if not isinstance(name, str) or not is_agent_service(name):
        return None, in_kv
    return agent_type_of(name), in_kv


#: An agent type as the model accepts it (a DNS label short enough for "agent-<type>" to be one too).
_AGENT_TYPE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,55}[a-z0-9])?")


def metadata_keys(keys: Any) -> list[tuple[str, str, str]]:
    """(key, agent type, agent id) of each metadata entry in a ``?keys`` listing under :data:`KV_PREFIX`.

    Only keys this library could have written count: a type and an id it accepts. Anything else under the
    prefix (``../``, ``?``, nested paths) is someone else's and is neither read nor deleted: it would end up
    in request paths.
    """
    found = []
    for key in keys if isinstance(keys, list) else []:
        if not isinstance(key, str) or not key.startswith(KV_PREFIX):
            continue
        agent_type, _, agent_id = key.removeprefix(KV_PREFIX).partition("/")
        if _AGENT_TYPE.fullmatch(agent_type) and AGENT_ID_PATTERN.fullmatch(agent_id):
            found.append((key, agent_type, agent_id))
    return found


_CARD_KEY = re.compile(r"card/([0-9a-f]{64})")


def card_keys(keys: Any) -> list[tuple[str, str, str, str]]:
    """(key, agent type, agent id, card digest) of each card in a ``?keys`` listing under :data:`KV_PREFIX`
    (keys :func:`card_key` writes); anything else is left out, as in :func:`metadata_keys`."""
    found = []
    for key in keys if isinstance(keys, list) else []:
        if not isinstance(key, str) or not key.startswith(KV_PREFIX):
            continue
        agent_type, _, rest = key.removeprefix(KV_PREFIX).partition("/")
        agent_id, _, card = rest.partition("/")
        matched = _CARD_KEY.fullmatch(card)
        if matched and _AGENT_TYPE.fullmatch(agent_type) and AGENT_ID_PATTERN.fullmatch(agent_id):
            found.append((key, agent_type, agent_id, f"sha256:{matched.group(1)}"))
    return found


def card_digests(entries: Any) -> set[tuple[str, str]]:
    """(service ID, card digest) of each ``/v1/health/service`` entry whose Meta names an A2A Agent Card."""
    used: set[tuple[str, str]] = set()
    for entry in entries if isinstance(entries, list) else []:
        service = entry.get("Service") if isinstance(entry, Mapping) else None
        digest = local_card_digest(service)
        if digest is not None and isinstance(service, dict) and isinstance(service.get("ID"), str):
            used.add((service["ID"], digest))
    return used


def ids_using_kv(entries: Any) -> set[str]:
    """The service IDs of ``/v1/health/service`` entries whose metadata lives in KV."""
    ids: set[str] = set()
    for entry in entries or []:
        service = entry.get("Service") if isinstance(entry, Mapping) else None
        if isinstance(service, Mapping) and (service.get("Meta") or {}).get(META_METADATA) == METADATA_IN_KV:
            ids.add(str(service.get("ID", "")))
    return ids


def kv_modify_index(body: Any) -> int | None:
    """The ModifyIndex of a ``GET /v1/kv/:key`` answer (a list of one entry), None when absent."""
    if isinstance(body, list) and body and isinstance(body[0], Mapping):
        index = body[0].get("ModifyIndex")
        return index if isinstance(index, int) else None
    return None
