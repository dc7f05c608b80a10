"""Pools and demand: per agent type and datacenter, what serves (agents, capacity, load), what was asked and
not served (unmet selections), the operator's settings, and the scaling signal built from them. Pure, apart
from the process-wide metrics it records (the I/O lives in :mod:`consul_agents._pool_ops`).

A *pool* is every agent of one type in one datacenter. Its settings live in Consul KV, one JSON object per
type under ``consul-agents/pools/<type>`` in each datacenter's own KV (Consul does not replicate KV across
datacenters), read as untrusted input: a value that is not a valid :class:`PoolSettings` spoils its own pool
only (``settings_error``, the ``consul_agents_pool_settings_invalid`` gauge, one log line), never a scrape.

The scaling signal (``desired_agents``), the HPA way::

    desired = ceil(passing * load_mean / target_load)        # 0 when no agent passes
    desired = max(desired, passing + 1)                      # if a selection went unmet in the last window
    desired = min(max(desired, min_agents), max_agents)      # clamped to the pool's bounds

where ``passing`` counts passing agents that are not draining and ``load_mean`` is their mean reported load.
``desired_agents`` set in the settings replaces the computed value (still clamped): a pool pinned by hand.
A pool whose settings cannot be read publishes no signal (an autoscaler then keeps the current count).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from consul_agents._bounded_json import loads_bounded
from consul_agents._models import AgentInfo, AgentStatus, _agent_type, _Model

__all__ = [
    "LEASES_IN_FLIGHT",
    "MAX_LABEL_SETS",
    "MAX_POOL_AGENTS",
    "MAX_SETTINGS_BYTES",
    "POOL_PREFIX",
    "SELECTIONS_UNMET",
    "UNMET_REASONS",
    "UNMET_WINDOW",
    "PoolSettings",
    "PoolSettingsError",
    "PoolStatus",
    "UnmetReason",
    "build_pools",
    "desired_agents",
    "lease_ended",
    "lease_started",
    "leases_in_flight",
    "log_bad_settings",
    "parse_settings",
    "pool_exposition",
    "pool_key",
    "pool_type_of",
    "recent_unmet",
    "record_unmet",
    "settings_error",
]

log = logging.getLogger("consul_agents.pools")

#: Every pool's settings live under this KV prefix: ``consul-agents/pools/<agent type>``.
POOL_PREFIX = "consul-agents/pools/"
#: A settings value larger than this is refused unread (a few hundred bytes is all a valid one needs).
MAX_SETTINGS_BYTES = 4096
#: Bounds of the counts a pool may name.
MAX_POOL_AGENTS = 100_000
#: How long an unmet selection raises the signal of its pool, in seconds.
UNMET_WINDOW = 60.0
#: Label sets the unmet counter and the leases gauge keep at most; beyond, agent_type is ``_other``.
MAX_LABEL_SETS = 1024

UnmetReason = Literal["none_registered", "none_passing", "over_max_load", "all_excluded", "unknown"]
#: Why a selection found no usable agent. ``unknown``: Consul failed the follow-up question that tells.
UNMET_REASONS: tuple[UnmetReason, ...] = (
    "none_registered",
    "none_passing",
    "over_max_load",
    "all_excluded",
    "unknown",
)

SELECTIONS_UNMET = Counter(
    "consul_agents_selections_unmet",
    "Selections (select_agent, lease, POST /v1/select) by this process that found no usable agent, by "
    "reason: none_registered (no agent of any status matches), none_passing (matches exist, none passing or "
    "warning), over_max_load (every live match is over max_load), all_excluded (every live match was "
    "excluded by the caller, draining or ejected), unknown (Consul failed the question that tells). "
    "agent_type is empty for a selection that named no type.",
    ["agent_type", "datacenter", "reason"],
)
LEASES_IN_FLIGHT = Gauge(
    "consul_agents_pool_leases_in_flight",
    "Leases this process holds now (registry.lease blocks still running), by agent type and datacenter: "
    "this process's only, not the fleet's.",
    ["agent_type", "datacenter"],
)

_labelled: LRUCache[tuple[str, str], None] = LRUCache(maxsize=MAX_LABEL_SETS)
_leases: dict[tuple[str, str], int] = {}
#: Recent unmet selections per (agent type, datacenter): their monotonic times, bounded both ways.
_unmet: LRUCache[tuple[str, str], deque[float]] = LRUCache(maxsize=MAX_LABEL_SETS)


def _label_type(agent_type: str, datacenter: str) -> str:
    """``agent_type``, or ``_other`` once the process has labelled MAX_LABEL_SETS other pools: any caller
    of POST /v1/select may name types at will, and each label set is a series kept for ever."""
    key = (agent_type, datacenter)
    if key in _labelled or len(_labelled) < MAX_LABEL_SETS:
        _labelled[key] = None
        return agent_type
    return "_other"


def record_unmet(agent_type: str, datacenter: str, reason: UnmetReason, *, now: float | None = None) -> None:
    """Count one selection that found nobody, and remember it for the pool's scaling signal."""
    SELECTIONS_UNMET.labels(_label_type(agent_type, datacenter), datacenter, reason).inc()
    times = _unmet.get((agent_type, datacenter))
    if times is None:
        times = _unmet[(agent_type, datacenter)] = deque(maxlen=256)
    times.append(time.monotonic() if now is None else now)


def recent_unmet(
    agent_type: str, datacenter: str, *, window: float = UNMET_WINDOW, now: float | None = None
) -> int:
    """Unmet selections of the pool within the last ``window`` seconds (at most 256 are remembered)."""
    times = _unmet.get((agent_type, datacenter))
    if not times:
        return 0
    since = (time.monotonic() if now is None else now) - window
    return sum(1 for at in times if at >= since)


def lease_started(agent: AgentInfo) -> None:
    key = (agent.agent_type, agent.datacenter)
    _leases[key] = _leases.get(key, 0) + 1
    LEASES_IN_FLIGHT.labels(_label_type(*key), agent.datacenter).inc()


def lease_ended(agent: AgentInfo) -> None:
    key = (agent.agent_type, agent.datacenter)
    count = _leases.get(key, 0) - 1
    if count > 0:
        _leases[key] = count
    else:
        _leases.pop(key, None)
    LEASES_IN_FLIGHT.labels(_label_type(*key), agent.datacenter).dec()


def leases_in_flight(agent_type: str, datacenter: str) -> int:
    """Leases of the pool this process holds now."""
    return _leases.get((agent_type, datacenter), 0)


def pool_key(agent_type: str) -> str:
    """The KV key of a pool's settings (the type is a validated DNS label: nothing to escape)."""
    return POOL_PREFIX + _agent_type(agent_type)


def pool_type_of(name: str) -> str | None:
    """The agent type a key under :data:`POOL_PREFIX` names, or None when it names no valid type (exactly:
    ``Planner`` is not the pool of ``planner``)."""
    try:
        agent_type = _agent_type(name)
    except ValueError:
        return None
    return agent_type if agent_type == name else None


class PoolSettingsError(ValueError):
    """A pool's settings as read from KV are not usable; the message says why (never the whole value)."""


class PoolSettings(_Model):
    """An operator's settings for one pool, kept in KV as JSON. Every field is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    #: The signal never goes below this.
    min_agents: int = Field(default=0, ge=0, le=MAX_POOL_AGENTS)
    #: The signal never goes above this (None: no bound of ours; the autoscaler's own applies).
    max_agents: int | None = Field(default=None, ge=0, le=MAX_POOL_AGENTS)
    #: When set, the signal publishes this (clamped) instead of the computed count: a pool pinned by hand.
    desired_agents: int | None = Field(default=None, ge=0, le=MAX_POOL_AGENTS)
    #: The mean load the signal aims for (the HPA's target value).
    target_load: float = Field(default=0.7, gt=0.0, le=1.0)
    #: What one agent costs per hour, in the operator's currency; published as is, for cost dashboards.
    cost_per_agent_hour: float | None = Field(default=None, ge=0.0, le=1e9)

    @model_validator(mode="after")
    def _bounds(self) -> PoolSettings:
        if self.max_agents is not None and self.max_agents < self.min_agents:
            raise ValueError(f"max_agents {self.max_agents} is below min_agents {self.min_agents}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(exclude_defaults=True)


def settings_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_settings(raw: bytes) -> PoolSettings:
    """A pool's settings from the bytes KV holds; PoolSettingsError naming the problem otherwise."""
    if len(raw) > MAX_SETTINGS_BYTES:
        raise PoolSettingsError(f"the value is {len(raw)} bytes; at most {MAX_SETTINGS_BYTES}")
    try:
        text = raw.decode("utf-8")
        data = loads_bounded(text, 2)
    except UnicodeDecodeError as exc:
        raise PoolSettingsError("the value is not UTF-8") from exc
    except ValueError as exc:
        raise PoolSettingsError(f"the value is not JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise PoolSettingsError(f"the value is a JSON {type(data).__name__}, not an object")
    try:
        return PoolSettings.model_validate(data)
    except ValidationError as exc:
        # an unknown field's name comes from the value itself: escaped (no control character reaches a log
        # or a terminal) and cut, like any input
        problem = json.dumps(settings_error(exc).removeprefix("invalid "))[1:-1]
        raise PoolSettingsError(problem[:200]) from exc


def desired_agents(passing: int, load_mean: float | None, settings: PoolSettings, unmet_recent: int) -> int:
    """The scaling signal (see the module docstring for the formula)."""
    if settings.desired_agents is not None:
        wanted = settings.desired_agents
    else:
        # rounded first, so 3 agents at exactly the target (0.7 * 3 / 0.7 = 3.0000000000000004) stay 3
        wanted = math.ceil(round(passing * (load_mean or 0.0) / settings.target_load, 9)) if passing else 0
        if unmet_recent:
            wanted = max(wanted, passing + 1)
    wanted = max(wanted, settings.min_agents)
    if settings.max_agents is not None:
        wanted = min(wanted, settings.max_agents)
    return wanted


class PoolStatus(BaseModel):
    """One pool as this client's token sees it: its agents, their load, its settings and its signal."""

    model_config = ConfigDict(frozen=True)

    agent_type: str
    datacenter: str
    #: Agents by status, draining ones included (every status present, 0 when none).
    agents: dict[str, int]
    #: Passing agents that are not draining: what takes new work.
    passing: int
    draining: int
    #: Sum of the Consul weights of the passing agents that are not draining.
    capacity: int
    #: Mean and max reported load of those agents (None when there is none).
    load_mean: float | None
    load_max: float | None
    #: Leases of this pool held by this process (not the fleet's).
    leases_in_flight: int
    #: Selections of this pool by this process that found nobody within the last UNMET_WINDOW seconds.
    unmet_recent: int
    #: The scaling signal; None when the pool's settings could not be read.
    desired_agents: int | None
    settings: PoolSettings | None
    #: Why the settings in KV could not be used; None when they could (or there are none).
    settings_error: str | None = None


_STATUSES = tuple(AgentStatus)
#: Status -> position in a tally's counts, by identity (an enum member's hash is a Python-level call).
_STATUS_AT = {id(status): position for position, status in enumerate(_STATUSES)}


class _Tally:
    __slots__ = ("capacity", "counts", "draining", "load_max", "load_sum", "passing")

    def __init__(self) -> None:
        self.counts = [0] * len(_STATUSES)
        self.passing = self.draining = self.capacity = 0
        self.load_sum = 0.0
        self.load_max: float | None = None


def build_pools(
    agents: Iterable[AgentInfo],
    settings: Mapping[tuple[str, str], PoolSettings | PoolSettingsError],
    *,
    include: Iterable[tuple[str, str]] = (),
    now: float | None = None,
) -> list[PoolStatus]:
    """Every pool of these agents, of every (agent type, datacenter) with settings and of ``include``,
    sorted by (datacenter, type)."""
    tallies: dict[tuple[str, str], _Tally] = {}
    passing, at = AgentStatus.PASSING, _STATUS_AT
    for agent in agents:
        key = (agent.agent_type, agent.datacenter)
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally()
        status = agent.status
        tally.counts[at[id(status)]] += 1
        if agent.draining:
            tally.draining += 1
        elif status is passing:
            load = agent.current_load
            tally.passing += 1
            tally.capacity += agent.weight
            tally.load_sum += load
            if tally.load_max is None or load > tally.load_max:
                tally.load_max = load
    pools = []
    for key in sorted(tallies.keys() | settings.keys() | set(include), key=lambda k: (k[1], k[0])):
        agent_type, datacenter = key
        tally = tallies.get(key) or _Tally()
        found = settings.get(key)
        error = str(found) if isinstance(found, PoolSettingsError) else None
        usable = found if isinstance(found, PoolSettings) else None
        mean = tally.load_sum / tally.passing if tally.passing else None
        unmet = recent_unmet(agent_type, datacenter, now=now)
        pools.append(
            PoolStatus(
                agent_type=agent_type,
                datacenter=datacenter,
                agents={status.value: count for status, count in zip(_STATUSES, tally.counts, strict=True)},
                passing=tally.passing,
                draining=tally.draining,
                capacity=tally.capacity,
                load_mean=mean,
                load_max=tally.load_max,
                leases_in_flight=leases_in_flight(agent_type, datacenter),
                unmet_recent=unmet,
                desired_agents=None
                if error
                else desired_agents(tally.passing, mean, usable or PoolSettings(), unmet),
                settings=usable,
                settings_error=error,
            )
        )
    return pools


_POOL_GAUGES = {
    "capacity": "Sum of the Consul weights of the passing agents that are not draining.",
    "load_mean": "Mean reported load (0..1) of the passing agents that are not draining.",
    "load_max": "Highest reported load (0..1) of the passing agents that are not draining.",
    "desired_agents": "The scaling signal: ceil(passing * load_mean / target_load), raised to passing + 1 "
    "after an unmet selection within 60 s, clamped to min_agents..max_agents (docs/autoscaling.md).",
    "min_agents": "min_agents of the pool's settings in Consul KV.",
    "max_agents": "max_agents of the pool's settings in Consul KV (absent: no bound).",
    "target_load": "target_load of the pool's settings in Consul KV (0.7 when none).",
    "cost_per_agent_hour": "cost_per_agent_hour of the pool's settings in Consul KV.",
    "settings_invalid": "1 when the pool's settings in Consul KV cannot be used (see the log), else 0.",
}


class _PoolCollector:
    """The per-pool gauges of one scrape, as metric families (cheaper than Gauge children: no locks, no
    label validation per series)."""

    def __init__(self, pools: Iterable[PoolStatus]) -> None:
        self.pools = list(pools)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["agent_type", "datacenter"]
        by_status = GaugeMetricFamily(
            "consul_agents_pool_agents",
            "Agents of the pool by status (draining ones included), as the scraping token sees them.",
            labels=[*labels, "status"],
        )
        families = {
            name: GaugeMetricFamily(f"consul_agents_pool_{name}", text, labels=labels)
            for name, text in _POOL_GAUGES.items()
        }
        for pool in self.pools:
            key = [pool.agent_type, pool.datacenter]
            for status, count in pool.agents.items():
                by_status.add_metric([*key, status], count)
            settings = pool.settings or PoolSettings()
            spoiled = pool.settings_error is not None
            values: dict[str, float | None] = {
                "capacity": pool.capacity,
                "load_mean": pool.load_mean,
                "load_max": pool.load_max,
                "desired_agents": pool.desired_agents,
                "min_agents": None if spoiled else settings.min_agents,
                "max_agents": None if spoiled else settings.max_agents,
                "target_load": None if spoiled else settings.target_load,
                "cost_per_agent_hour": settings.cost_per_agent_hour,
                "settings_invalid": 1 if spoiled else 0,
            }
            for name, value in values.items():
                if value is not None:
                    families[name].add_metric(key, value)
        yield by_status
        yield from families.values()


def pool_exposition(pools: Iterable[PoolStatus]) -> bytes:
    """The per-pool gauges for these pools only, built per scrape in a registry of their own (like
    ``consul_agents_agents``): what one token saw is never served to another scraper."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_PoolCollector(pools))
    return generate_latest(registry)


#: The (datacenter, agent type, problem) already logged: each bad value is logged once, not every scrape.
_logged: LRUCache[tuple[str, str, str], None] = LRUCache(maxsize=1024)


def log_bad_settings(datacenter: str, agent_type: str, problem: str) -> None:
    key = (datacenter, agent_type, problem)
    if key not in _logged:
        _logged[key] = None
        log.warning(
            "pool settings %s%s in datacenter %s left unused: %s",
            POOL_PREFIX,
            json.dumps(agent_type)[1:-1][:80],
            datacenter,
            problem,
        )
