"""The public data model: what a caller registers, asks for and gets back.

These are plain pydantic models with no knowledge of Consul's JSON; `_wire` translates them. Validation here
is the first and only gate before Consul: an invalid registration never reaches the network.

Names are DNS labels so that every agent type and capability is reachable through Consul DNS:
lowercase letters, digits and '-', 1 to 63 characters, not starting or ending with '-'. Input is
lowercased before it is checked (Consul DNS is case-insensitive, so "Plan" and "plan" would collide).

Agent ids are lowercased too: Consul's catalog matches service IDs regardless of case while its local agent
keeps them apart, so ``CODER-X`` registered beside ``coder-x`` makes one of them vanish from the catalog. An
id is therefore one name whatever its case: ``CODER-X`` *is* ``coder-x``, in every call that takes an id.

Metadata is a JSON object of at most ``MAX_METADATA_BYTES`` once serialised and ``MAX_METADATA_DEPTH``
levels of nesting: deeper documents break JSON serialisers (recursion limits) in every reader.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from consul_agents._cards import CardError, CardFields, validate_card
from consul_agents._errors import InvalidAgentError
from consul_agents._frozen import FrozenDict, freeze, freeze_flat

__all__ = [
    "AGENT_ID_PATTERN",
    "CARD_META_KEYS",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_TAGS",
    "RESERVED_META_PREFIX",
    "SERVICE_PREFIX",
    "AgentInfo",
    "AgentRegistration",
    "AgentStatus",
    "DiscoveryRequest",
    "DiscoveryResult",
    "SelectionCriteria",
    "Strategy",
    "invalid_agent_error",
    "normalise_agent_id",
]

#: Every agent type T is registered as the Consul service ``agent-T``: one service name per type lets
#: Consul ACL rules grant or deny by type, and the prefix lets one rule (``service_prefix "agent-"``)
#: cover every agent and nothing else.
SERVICE_PREFIX = "agent-"
#: Meta keys this library writes for itself; user tags may not start with it (nor with Consul's "consul-").
RESERVED_META_PREFIX = "agent-"
#: The Meta keys the wire format writes for itself (see `_wire`). Consul allows 64 keys in all.
RESERVED_META_KEYS = ("agent-endpoint", "agent-load", "agent-heartbeat", "agent-ttl", "agent-metadata")
#: How many user tags fit beside the reserved keys in Consul's 64-key Meta.
MAX_TAGS = 64 - len(RESERVED_META_KEYS)
#: Metadata is any JSON object up to this size once serialised. Small metadata lives in Meta, the rest in KV.
MAX_METADATA_BYTES = 64 * 1024
#: How deeply metadata may nest: the top-level object is depth 1, ``{"a": {"b": [1]}}`` is depth 3.
MAX_METADATA_DEPTH = 32

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: What an agent id may be (use fullmatch); ids travel in URL paths, so no '/' and no leading '.'.
AGENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_REGION = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Consul's limit on one Meta value, in bytes.
MAX_META_VALUE = 512
#: No duration this library sends to Consul needs to be longer.
_MAX_DURATION = timedelta(days=30)
_MAX_TYPE_LENGTH = 63 - len(SERVICE_PREFIX)  # the service name "agent-<type>" must itself be a DNS label
#: Meta keys of an agent registered with an Agent Card (its digest and version); see `_cards`.
CARD_META_KEYS = ("agent-card-digest", "agent-card-version")
#: The card from_agent_card has just validated, for the model validator of the registration it builds.
_VALIDATED_CARD: ContextVar[CardFields | None] = ContextVar("validated_card", default=None)


class AgentStatus(StrEnum):
    """An agent's health, in Consul's own words.

    The aggregate of a service's checks follows Consul's rule: maintenance wins over everything, then
    critical, then warning; only an agent whose every check passes is passing.
    """

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"
    MAINTENANCE = "maintenance"


Strategy = Literal["round_robin", "weighted_random", "least_loaded", "power_of_two"]


def _dns_label(value: str, what: str, max_length: int = 63) -> str:
    # ASCII is checked before lowercasing: some non-ASCII letters (the Kelvin sign) lowercase to ASCII.
    lowered = value.lower() if value.isascii() else value
    if len(lowered) > max_length:
        raise ValueError(f"{what} {value!r} is longer than {max_length} characters")
    if not _DNS_LABEL.fullmatch(lowered):
        raise ValueError(
            f"{what} {value!r} is not a DNS label (letters, digits and '-', not starting or ending with '-')"
        )
    return lowered


def normalise_agent_id(value: str) -> str:
    """The one spelling of an agent id: lowercase (ids are ASCII, see AGENT_ID_PATTERN)."""
    return value.lower() if value.isascii() else value


def _metadata_depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests (a scalar is 0), counted without recursion; stops past ``limit``."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _agent_type(value: str) -> str:
    return _dns_label(value, "agent type", _MAX_TYPE_LENGTH)


def _capabilities(values: list[str]) -> list[str]:
    labels = [_dns_label(v, "capability") for v in values]
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValueError(f"capability {label!r} is listed twice")
        seen.add(label)
    return labels


def _tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{len(tags)} tags given; at most {MAX_TAGS} fit in Consul's service Meta")
    for key, value in tags.items():
        if not _META_KEY.fullmatch(key):
            raise ValueError(f"tag key {key!r} must be 1 to 128 letters, digits, '-' or '_'")
        if key.lower().startswith((RESERVED_META_PREFIX, "consul-")):
            raise ValueError(
                f"tag key {key!r} uses a reserved prefix ({RESERVED_META_PREFIX!r} or 'consul-')"
            )
        if len(value.encode()) > MAX_META_VALUE:
            raise ValueError(f"tag {key!r} has a value longer than {MAX_META_VALUE} bytes (UTF-8)")
    return tags


def _finite_unit(value: float) -> float:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{value!r} is not a number between 0 and 1")
    return value


_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: Any) -> Any:
    """Seconds as a number, a Go/Consul duration ("15s", "1m30s", "500ms"), or what pydantic parses
    (ISO 8601 "PT15S", "00:00:15"); anything else is refused in words a config file's author understands."""
    if isinstance(value, str):
        text = value.strip()
        if _GO_DURATION.match(text):
            value = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _GO_PART.findall(text))
        else:
            try:
                value = float(text)
            except ValueError:
                if not text.upper().startswith(("P", "-P")) and ":" not in text:
                    raise ValueError(
                        f"{value[:40]!r} is not a duration: give seconds (15) or a number with a unit "
                        "(500ms, 15s, 2m, 1h)"
                    ) from None
                return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > _MAX_DURATION.total_seconds():
            raise ValueError(f"{value!r} seconds is not a usable duration")
        return timedelta(seconds=value)
    return value


def _endpoint(value: str) -> str:
    if len(value.encode()) > MAX_META_VALUE:
        raise ValueError(f"endpoint is longer than {MAX_META_VALUE} bytes (Consul's Meta value limit)")
    parts = urlsplit(value)
    if not parts.scheme or "://" not in value:
        raise ValueError(f"endpoint {value!r} has no scheme (expected e.g. http://host:port)")
    if not parts.hostname:
        raise ValueError(f"endpoint {value!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"endpoint {value!r} has an invalid port") from exc
    if port is None:
        raise ValueError(f"endpoint {value!r} has no port")
    return value


AgentType = Annotated[str, AfterValidator(_agent_type)]
Capabilities = Annotated[list[str], AfterValidator(_capabilities)]
Tags = Annotated[dict[str, str], AfterValidator(_tags)]
Load = Annotated[float, AfterValidator(_finite_unit)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]


class _Model(BaseModel):
    """Raises `InvalidAgentError` naming the field, instead of pydantic's ValidationError, on bad input."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_agent_error(exc, type(self).__name__) from exc


class AgentRegistration(_Model):
    """What an agent declares when it joins the registry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_type: AgentType
    capabilities: Capabilities = Field(min_length=1)
    endpoint: Annotated[str, AfterValidator(_endpoint)]
    agent_id: str | None = None
    tags: Tags = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: Keep the metadata in Consul's KV store only, whatever its size: then only tokens with KV read on the
    #: type (discoverers, operators) can read it, not the dns token nor anyone reading service Meta. Small
    #: metadata otherwise travels in Meta, which every token that resolves the agent can read.
    private_metadata: bool = False
    weight: int = Field(default=1, ge=1, le=65535)
    load: Load = 0.0
    #: The heartbeat TTL: the agent is critical when no heartbeat arrives for this long.
    ttl: Duration = timedelta(seconds=15)
    #: How long an agent may stay critical before Consul removes it (Consul's minimum is one minute).
    deregister_after: Duration = timedelta(minutes=1)
    #: The agent's A2A Agent Card (the JSON object it serves), kept in KV beside the registration.
    card: dict[str, Any] | None = None
    _card: CardFields | None = PrivateAttr(default=None)

    @classmethod
    def from_agent_card(
        cls,
        card: Mapping[str, Any],
        *,
        agent_type: str,
        agent_id: str | None = None,
        capabilities: Sequence[str] = (),
        endpoint: str | None = None,
        **fields: Any,
    ) -> AgentRegistration:
        """A registration from an A2A Agent Card: skill ids become capabilities (see `_cards` for the
        mapping), the preferred interface's URL the endpoint (unless ``endpoint`` is given), and the card
        is kept beside the registration. ``capabilities`` adds capabilities beyond the skills; ``fields``
        are the other registration fields (tags, metadata, weight, ttl...).

        Raises InvalidAgentError naming the problem; nothing is written.
        """
        try:
            derived = validate_card(card)
        except CardError as exc:
            raise InvalidAgentError(f"invalid {exc.field}: {exc}", field=exc.field) from exc
        extra = [c.lower() for c in capabilities if c.lower() not in derived.capabilities]
        token = _VALIDATED_CARD.set(derived)  # the card was just validated: the model takes what that found
        try:
            return cls(
                agent_type=agent_type,
                agent_id=agent_id,
                capabilities=[*derived.capabilities, *extra],
                endpoint=endpoint or derived.endpoint,
                card=dict(card),
                **fields,
            )
        finally:
            _VALIDATED_CARD.reset(token)

    @model_validator(mode="after")
    def _check_card(self) -> AgentRegistration:
        if self.card is None:
            return self
        try:
            derived = _VALIDATED_CARD.get() or validate_card(self.card)
        except CardError as exc:
            raise ValueError(f"{exc.field}: {exc}") from exc
        missing = [c for c in derived.capabilities if c not in self.capabilities]
        if missing:
            raise ValueError(f"capabilities must include the card's skills; missing {missing[:5]}")
        if len(self.tags) > MAX_TAGS - len(CARD_META_KEYS):
            raise ValueError(
                f"{len(self.tags)} tags given; an agent with a card has room for "
                f"{MAX_TAGS - len(CARD_META_KEYS)} in Consul's service Meta"
            )
        self._card = derived
        return self

    @property
    def card_fields(self) -> CardFields | None:
        """The card's stored text, digest and version (None without a card)."""
        return self._card

    @field_validator("agent_id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and not AGENT_ID_PATTERN.fullmatch(value):
            raise ValueError(
                f"agent_id {value!r} must be 1 to 128 letters, digits, '-', '_', '.' or ':', "
                "starting with a letter or digit"
            )
        return None if value is None else normalise_agent_id(value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _check_metadata_depth(cls, value: Any) -> Any:
        # Before pydantic or json touch it: both recurse, and a deep enough document exhausts the stack.
        if _metadata_depth(value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not JSON-serialisable: {exc}") from exc
        if json.loads(encoded) != value:
            raise ValueError("metadata does not survive JSON unchanged (keys must be strings, no tuples)")
        if len(encoded.encode()) > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {len(encoded.encode())} bytes once serialised; at most {MAX_METADATA_BYTES}"
            )
        return value

    @field_validator("ttl")
    @classmethod
    def _check_ttl(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=24):
            raise ValueError(f"ttl {value.total_seconds()}s must be between 1 second and 24 hours")
        return value

    @field_validator("deregister_after")
    @classmethod
    def _check_deregister_after(cls, value: timedelta) -> timedelta:
        if value > _MAX_DURATION:
            raise ValueError(f"deregister_after {value.total_seconds()}s is longer than 30 days")
        if value < timedelta(minutes=1):
            raise ValueError(
                f"deregister_after {value.total_seconds()}s is below Consul's minimum of one minute "
                "(Consul would silently raise it)"
            )
        return value

    @property
    def service_name(self) -> str:
        """The Consul service name this agent is registered under."""
        return SERVICE_PREFIX + self.agent_type


class AgentInfo(BaseModel):
    """One registered agent as Consul's catalog reports it.

    Read-only throughout: the cache hands the same AgentInfo to every caller, so ``capabilities``,
    ``tags`` and ``metadata`` (at any depth) are frozen lists and dicts; copy them to change them.
    """

    model_config = ConfigDict(frozen=True)

    agent_id: str
    agent_type: str
    capabilities: Annotated[list[str], AfterValidator(freeze_flat)]
    status: AgentStatus
    endpoint: str
    #: Health from recent history (consul_agents._health_score): pass ratio over the last five minutes,
    #: lowered by status flapping and failed leases, at most 1.0 passing, 0.5 warning, 0.0 critical or in
    #: maintenance. Cached answers carry it; answers read without history (``cached=False``) carry that
    #: cap, the score of an agent steady for the whole window.
    health_score: float = Field(ge=0.0, le=1.0)
    #: The last load the agent reported that differed from the one before by the reporting threshold.
    current_load: float = Field(ge=0.0, le=1.0)
    #: When the agent last reported a change (registration, load or status); a passing status proves a
    #: heartbeat within the TTL besides. None for services registered without this library.
    last_heartbeat: datetime | None
    metadata: Annotated[dict[str, Any], AfterValidator(freeze)] = Field(default_factory=FrozenDict)
    tags: Annotated[dict[str, str], AfterValidator(freeze_flat)] = Field(default_factory=FrozenDict)
    datacenter: str = ""
    weight: int = 1
    node: str = ""
    #: How old the answer this came from may be, in seconds (see DiscoveryResult.staleness).
    staleness: float = 0.0
    #: ``sha256:<hex>`` of the agent's A2A Agent Card and the card's version; None without a card.
    card_digest: str | None = None
    card_version: str | None = None
    #: Draining: alive and heartbeating but taking no new work; never selected, absent from DNS answers.
    draining: bool = False

    @property
    def service_name(self) -> str:
        return SERVICE_PREFIX + self.agent_type


class DiscoveryRequest(_Model):
    """Which agents a caller wants. Every field given must match; an empty request matches every live agent.

    With ``status=None``, critical agents and agents in maintenance are never returned.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_type: AgentType | None = None
    #: Every capability listed must be present.
    capabilities: Capabilities = Field(default_factory=list)
    status: AgentStatus | None = None
    max_load: Load | None = None
    #: Every key=value pair must match the agent's tags.
    tags: Tags = Field(default_factory=dict)
    #: A Consul datacenter; None means the local one (with failover where the client supports it).
    region: str | None = None
    #: Also return draining agents (never selected even then).
    include_draining: bool = False

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.fullmatch(value):
            raise ValueError(f"region {value!r} is not a Consul datacenter name")
        return value


class SelectionCriteria(DiscoveryRequest):
    """A discovery request plus how to pick one agent among the matches."""

    strategy: Strategy = "least_loaded"
    #: Agent ids never to pick (for example, ones that just failed). Each id also excludes its lowercase
    #: spelling, the one every id this library registers has.
    exclude: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _dedupe_exclude(self) -> SelectionCriteria:
        spelled = [*self.exclude, *(normalise_agent_id(agent_id) for agent_id in self.exclude)]
        if len(set(spelled)) != len(self.exclude):
            object.__setattr__(self, "exclude", list(dict.fromkeys(spelled)))
        return self


def invalid_agent_error(exc: ValidationError, model: str = "") -> InvalidAgentError:
    """Turn pydantic's error into ours, naming the first offending field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or model
    message = first["msg"].removeprefix("Value error, ")
    return InvalidAgentError(f"invalid {field}: {message}", field=field)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    """What a discovery found, and where and how fresh the answer is."""

    agents: list[AgentInfo]
    #: The datacenter the agents came from (after failover, not necessarily the local one).
    datacenter: str
    #: How old the answer may be, in seconds: 0 while fresh; else the lag Consul reported (a LastContact
    #: of 1 s or more, or no known leader) plus, from the cache, the time since Consul last answered
    #: (fail-static, or a hung Consul).
    staleness: float = 0.0
    #: True when answered from the watch-fed cache, False for a direct Consul query.
    cached: bool = False
    #: Consul's X-Consul-KnownLeader and X-Consul-LastContact (ms) for the answer (stale reads).
    known_leader: bool = True
    last_contact_ms: int = 0
    #: Every datacenter asked, in order.
    datacenters_tried: tuple[str, ...] = ()
