"""The sidecar's YAML file: which agents to register and how to probe each one's health.

A file holds a list under ``agents``. Each entry is an :class:`~consul_agents.AgentRegistration` (the same
fields, with the same validation) plus a ``health`` block for the probe. Every error names the file, the
entry and the field, because the person reading it is editing YAML, not Python::

    planner.yaml: agents[0].health.timeout: timeout 9s must be shorter than interval 5s
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consul_agents._errors import InvalidAgentError
from consul_agents._models import AgentRegistration, Duration, invalid_agent_error
from consul_agents._yaml import load_yaml
from consul_agents.sidecar.cards import WELL_KNOWN_CARD_PATH

__all__ = ["AgentSpec", "HealthProbe", "SidecarConfig", "load_config"]


class HealthProbe(BaseModel):
    """How the sidecar checks one agent: ``GET <scheme>://<host>:<port><path>`` every ``interval``.

    The answer becomes the agent's TTL status: ``expected_status`` -> passing, a status listed in
    ``warning_statuses`` -> warning, anything else, no answer or no answer within ``timeout`` -> critical.
    With ``load_field`` set, the answer must be a JSON object whose (dotted) field is the agent's load,
    a number from 0 to 1; an answer without it is a warning, since the agent is up but its report is not.
    With ``draining_field`` set, a JSON ``true`` at that (dotted) field of the answer marks the agent
    draining and ``false`` takes it out (see the README's A2A section); any other value changes nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = "/health"
    interval: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=2)
    expected_status: int = Field(default=200, ge=100, le=599)
    warning_statuses: list[int] = Field(default_factory=lambda: [429])
    load_field: str | None = None
    draining_field: str | None = None

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError(
                f"path {value!r} must start with '/' and contain no spaces or control characters"
            )
        if len(value) > 1024:
            raise ValueError(f"path of {len(value)} characters is longer than 1024")
        return value

    @field_validator("interval", "timeout")
    @classmethod
    def _check_positive(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= value <= timedelta(hours=1):
            raise ValueError(f"{value.total_seconds():g}s must be between 0.1 seconds and 1 hour")
        return value

    @field_validator("warning_statuses")
    @classmethod
    def _check_statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 100 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP status")
        return value

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthProbe:
        if self.timeout > self.interval:
            raise ValueError(
                f"timeout {self.timeout.total_seconds():g}s must not exceed "
                f"interval {self.interval.total_seconds():g}s"
            )
        if self.expected_status in self.warning_statuses:
            raise ValueError(f"expected_status {self.expected_status} is also a warning status")
        return self


class AgentSpec(BaseModel):
    """One agent of the file: its registration and its probe."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    registration: AgentRegistration
    health: HealthProbe
    #: A2A: where the agent's card is fetched every interval (URL or file path); its skills become the
    #: capabilities, added to ``extra_capabilities`` (the file's own ``capabilities``, if any).
    card: str | None = None
    extra_capabilities: list[str] = Field(default_factory=list)
    #: False for a card agent without a ``health.path``: fetching its card is then its health probe.
    probe_health: bool = True

    @property
    def agent_id(self) -> str:
        # The sidecar always sets an id (see _entry), so restarts of the sidecar reuse the same service.
        assert self.registration.agent_id is not None
        return self.registration.agent_id

    @property
    def probe_url(self) -> str:
        parts = urlsplit(self.registration.endpoint)
        return f"{parts.scheme}://{parts.netloc}{self.health.path}"


class SidecarConfig(BaseModel):
    """A whole file: the agents one sidecar process looks after."""

    model_config = ConfigDict(frozen=True)

    path: Path
    agents: list[AgentSpec]


def _default_id(registration: AgentRegistration) -> str:
    """A stable id, so that a restarted sidecar re-registers the same service rather than a duplicate."""
    parts = urlsplit(registration.endpoint)
    return f"{registration.agent_type}-{parts.hostname}-{parts.port}"


def _located(path: Path, where: str, error: InvalidAgentError) -> InvalidAgentError:
    """``error`` (``invalid <field>: <message>``) as ``<path>: <where>.<field>: <message>``."""
    field = f"{where}.{error.field}" if error.field else where
    message = str(error).removeprefix(f"invalid {error.field}: ")
    return InvalidAgentError(f"{path}: {field}: {message}", field=field)


def _entry(path: Path, index: int, entry: Any) -> AgentSpec:
    where = f"agents[{index}]"
    if not isinstance(entry, Mapping):
        raise InvalidAgentError(f"{path}: {where}: expected a mapping of agent fields", field=where)
    fields = {str(key): value for key, value in entry.items()}
    health = fields.pop("health", None) or {}
    if not isinstance(health, Mapping):
        raise InvalidAgentError(f"{path}: {where}.health: expected a mapping", field=f"{where}.health")
    health = {str(key): value for key, value in health.items()}
    card = fields.pop("card", None)
    extra: list[str] = []
    if card is not None and card is not False:
        if card is not True and (not isinstance(card, str) or not card.strip()):
            raise InvalidAgentError(
                f"{path}: {where}.card: expected true (the agent's /.well-known/agent-card.json), a URL or "
                "a file path",
                field=f"{where}.card",
            )
        # The card gives the capabilities; the file's own, if any, are added to its skills.
        extra = list(fields.get("capabilities") or [])
        fields["capabilities"] = extra or ["card"]
    try:
        registration = AgentRegistration(**fields)
    except InvalidAgentError as exc:
        raise _located(path, where, exc) from exc
    try:
        probe = HealthProbe(**health)
    except ValidationError as exc:
        raise _located(path, f"{where}.health", invalid_agent_error(exc)) from exc
    if registration.agent_id is None:
        registration = registration.model_copy(update={"agent_id": _default_id(registration)})
    if probe.interval + probe.timeout > registration.ttl:
        raise InvalidAgentError(
            f"{path}: {where}.ttl: ttl {registration.ttl.total_seconds():g}s must exceed the probe's "
            f"interval plus timeout ({(probe.interval + probe.timeout).total_seconds():g}s), "
            "or the agent would turn critical between two probes",
            field=f"{where}.ttl",
        )
    if card is None or card is False:
        return AgentSpec(registration=registration, health=probe)
    endpoint = urlsplit(registration.endpoint)
    source = f"{endpoint.scheme}://{endpoint.netloc}{WELL_KNOWN_CARD_PATH}" if card is True else str(card)
    if not source.startswith(("http://", "https://")) and not Path(source).is_absolute():
        source = str(path.parent / source)
    return AgentSpec(
        registration=registration,
        health=probe,
        card=source,
        extra_capabilities=registration.capabilities if extra else [],
        probe_health="path" in health,
    )


def parse_config(path: Path, document: Any) -> SidecarConfig:
    """Validate a parsed YAML document (a mapping with a non-empty ``agents`` list)."""
    if not isinstance(document, Mapping):
        raise InvalidAgentError(
            f"{path}: agents: expected a mapping whose 'agents' key lists the agents", field="agents"
        )
    unknown = sorted({str(key) for key in document} - {"agents"})
    if unknown:
        raise InvalidAgentError(f"{path}: {unknown[0]}: unknown top-level key", field=str(unknown[0]))
    entries = document.get("agents")
    if not isinstance(entries, list) or not entries:
        raise InvalidAgentError(f"{path}: agents: expected a non-empty list", field="agents")
    specs = [_entry(path, index, entry) for index, entry in enumerate(entries)]
    seen: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.agent_id in seen:
            raise InvalidAgentError(
                f"{path}: agents[{index}].agent_id: {spec.agent_id!r} is already used by "
                f"agents[{seen[spec.agent_id]}]",
                field=f"agents[{index}].agent_id",
            )
        seen[spec.agent_id] = index
    return SidecarConfig(path=path, agents=specs)


def load_config(path: Path | str) -> SidecarConfig:
    """Read and validate a sidecar file; InvalidAgentError names the file, field, line and problem.

    The file is read by the project's bounded YAML loader (:mod:`consul_agents._yaml`): a file too large,
    too deep or whose aliases expand too far is refused before it is walked.
    """
    document = load_yaml(path)
    try:
        return parse_config(document.path, document.data)
    except InvalidAgentError as exc:
        raise document.locate(exc) from exc
