"""Prometheus metrics of the library and the REST API, in prometheus-client's default registry.

Living in the default registry means a program that already exposes its own metrics (``start_http_server``,
an ASGI app) exposes ours too; the REST API serves the same registry at ``/metrics``. Labels are bounded:
operation names, outcomes, agent types, statuses and datacenters. Never an agent id, never a token.

Everything here is recorded through small hooks (:func:`record_operation`, :func:`record_cache`,
:func:`observe_watch_lag`) so instrumented code never touches metric objects itself. The agents gauge is
built for each scrape by :func:`fleet_exposition`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from consul_agents._accumulate import FastCounter, FastHistogram
from consul_agents._errors import (
    AgentNotFoundError,
    InvalidAgentError,
    PermissionDeniedError,
    RegistryTimeoutError,
    RegistryUnavailableError,
)
from consul_agents._models import AgentInfo
from consul_agents._tracing import annotate, tracing_enabled
from consul_agents._wire_read import SKIP_REASONS, Skipped

__all__ = [
    "CACHE_HIT_RATIO",
    "CACHE_REQUESTS",
    "ENTRIES_SKIPPED",
    "HTTP_DURATION",
    "OPERATIONS",
    "OPERATION_DURATION",
    "REGISTRATION_CONFLICTS",
    "WATCH_LAG",
    "fleet_exposition",
    "observe_watch_lag",
    "outcome_of",
    "record_cache",
    "record_conflict",
    "record_operation",
    "record_skipped",
]

log = logging.getLogger("consul_agents.discovery")

# Registry operations take from well under a millisecond (cached) to seconds (a Consul outage and retries).
_LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

# The three updated on every registry call, cached hits included, are plain accumulators folded into the
# exposition when scraped (see consul_agents._accumulate): prometheus-client's own cost as much as the hit.
OPERATION_DURATION = FastHistogram(
    "consul_agents_operation_duration_seconds",
    "Latency of registry operations (register, heartbeat, discover, select, ...), whatever their outcome.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
OPERATIONS = FastCounter(
    "consul_agents_operations",
    "Registry operations by outcome: ok, invalid, not_found, denied, unavailable, timeout, error.",
    ["operation", "outcome"],
)
CACHE_REQUESTS = FastCounter(
    "consul_agents_cache_requests",
    "Discovery questions answered from the in-process cache (hit) or from Consul (miss).",
    ["result"],
)
CACHE_HIT_RATIO = Gauge(
    "consul_agents_cache_hit_ratio",
    "Share of discovery questions answered from the cache since the process started (0 before any).",
)
WATCH_LAG = Histogram(
    "consul_agents_watch_lag_seconds",
    "How far behind Consul a watched view was when a change reached it: the answering server's "
    "last contact with the leader plus the time to apply the change.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_DURATION = Histogram(
    "consul_agents_http_request_duration_seconds",
    "Latency of REST API requests by route template and status code.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
)
REGISTRATION_CONFLICTS = Counter(
    "consul_agents_registration_conflicts",
    "Agents this client registered whose catalog entry was found no longer matching what it registered "
    "(another service name, address or port: overwritten behind its back).",
    ["agent_type"],
)

ENTRIES_SKIPPED = Counter(
    "consul_agents_entries_skipped",
    "Entries read from Consul that are not agents as this library writes them, skipped by reason: "
    + ", ".join(SKIP_REASONS)
    + ". Counted once per entry and reason, not per read.",
    ["reason"],
)
for _reason in SKIP_REASONS:
    ENTRIES_SKIPPED.labels(_reason)

#: The two label children, looked up once.
_CACHE_HIT = CACHE_REQUESTS.labels("hit")
_CACHE_MISS = CACHE_REQUESTS.labels("miss")


def _hit_ratio() -> float:
    hits, misses = _CACHE_HIT.value, _CACHE_MISS.value
    return hits / (hits + misses) if hits + misses else 0.0


CACHE_HIT_RATIO.set_function(_hit_ratio)


#: Outcome labels by error class, first match wins (a timeout is also an unavailable).
_OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (InvalidAgentError, "invalid"),
    (AgentNotFoundError, "not_found"),
    (PermissionDeniedError, "denied"),
    (RegistryTimeoutError, "timeout"),
    (RegistryUnavailableError, "unavailable"),
)


def outcome_of(exc: BaseException | None) -> str:
    """The outcome label for an operation that raised ``exc`` (None: it succeeded)."""
    if exc is None:
        return "ok"
    for kind, outcome in _OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return "error" if isinstance(exc, Exception) else "cancelled"


def record_operation(operation: str, seconds: float, outcome: str) -> None:
    OPERATION_DURATION.labels(operation).observe(seconds)
    OPERATIONS.labels(operation, outcome).inc()


def record_cache(hit: bool) -> None:
    """Count one discovery question answered from the cache (``hit``) or from Consul, and say so on the
    current span (``cache.hit``)."""
    if tracing_enabled():
        annotate({"cache.hit": hit})
    (_CACHE_HIT if hit else _CACHE_MISS).inc()


def record_conflict(agent_type: str) -> None:
    REGISTRATION_CONFLICTS.labels(agent_type).inc()


def observe_watch_lag(seconds: float) -> None:
    WATCH_LAG.observe(max(seconds, 0.0))


def fleet_exposition(agents: Iterable[AgentInfo]) -> bytes:
    """The ``consul_agents_agents`` gauge (agents by datacenter, type and status) for these agents only.

    It is built per scrape in a registry of its own, never kept in the shared one: what one token saw must
    not be served to the next scraper, whose token may see less.
    """
    counts: dict[tuple[str, str, str], int] = {}
    for agent in agents:
        key = (agent.datacenter, agent.agent_type, agent.status.value)
        counts[key] = counts.get(key, 0) + 1
    registry = CollectorRegistry(auto_describe=False)
    gauge = Gauge(
        "consul_agents_agents",
        "Agents by datacenter, type and status, as the scraping caller's token sees them.",
        ["datacenter", "agent_type", "status"],
        registry=registry,
    )
    for (datacenter, agent_type, status), count in sorted(counts.items()):
        gauge.labels(datacenter, agent_type, status).set(count)
    return generate_latest(registry)


#: The (datacenter, service, agent id, reason) already counted and logged: each is reported once, not on
#: every read. Bounded: an entry forgotten among more recent ones is reported again.
_skipped_seen: LRUCache[tuple[str, str, str, str], None] = LRUCache(maxsize=1024)


def record_skipped(skipped: Skipped, datacenter: str = "") -> None:
    """Count an entry skipped as untrusted input and log it at WARNING, once per entry and reason."""
    key = (datacenter, skipped.service, skipped.agent_id, skipped.reason)
    if key in _skipped_seen:
        return
    _skipped_seen[key] = None
    ENTRIES_SKIPPED.labels(skipped.reason).inc()
    log.warning("%s%s", skipped, f" (datacenter {datacenter})" if datacenter else "")
