"""One health probe of one agent: an HTTP GET turned into a TTL status, a load and an output line.

The verdict is pure (:func:`verdict`) so the mapping from answers to statuses is tested without sockets;
:func:`probe` only performs the request. A probe that does not finish within the timeout is a hung agent:
critical, never passing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import aiohttp

from consul_agents._bounded_json import loads_bounded
from consul_agents._models import AgentStatus
from consul_agents.sidecar.config import AgentSpec, HealthProbe

__all__ = ["ProbeResult", "probe", "verdict"]

log = logging.getLogger("consul_agents.sidecar")

_OUTPUT_LIMIT = 200
#: The most of a health answer the probe reads when it looks for the load: a status document is small, and
#: an agent that streams megabytes does not get to make its sidecar hold them.
MAX_PROBE_BODY = 64 * 1024
#: The deepest JSON a health answer may nest (the load is at most a few dotted levels down).
MAX_PROBE_DEPTH = 32


@dataclass(frozen=True, slots=True)
class ProbeResult:
    status: AgentStatus
    #: The load read from the answer; None when the probe does not read one or the answer had none.
    load: float | None
    #: What the TTL check's output says. It depends on the outcome only, never on timings or the load,
    #: because every output change is a Consul catalog write.
    output: str
    #: What the answer's ``draining_field`` says (None: the probe does not read one, or no boolean there).
    draining: bool | None = None


def _field(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def _load_from(body: str, field: str) -> float | None:
    try:
        value = _field(loads_bounded(body, MAX_PROBE_DEPTH), field)
    except ValueError:  # not JSON, not UTF-8, or nested too deep: the agent's report is unreadable
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value) or not 0 <= value <= 1:
        return None
    return float(value)


def _draining_from(body: str, field: str | None) -> bool | None:
    if field is None:
        return None
    try:
        value = _field(loads_bounded(body, MAX_PROBE_DEPTH), field)
    except ValueError:
        return None
    return value if isinstance(value, bool) else None


def verdict(
    health: HealthProbe, url: str, http_status: int | None, body: str, error: str = ""
) -> ProbeResult:
    """The status for one probe outcome: ``http_status`` None means no answer (``error`` says why)."""
    result = _verdict(health, url, http_status, body, error)
    if http_status == health.expected_status and health.draining_field is not None:
        return ProbeResult(
            result.status, result.load, result.output, _draining_from(body, health.draining_field)
        )
    return result


def _verdict(
    health: HealthProbe, url: str, http_status: int | None, body: str, error: str = ""
) -> ProbeResult:
    if http_status is None:
        return ProbeResult(AgentStatus.CRITICAL, None, f"GET {url}: {error}"[:_OUTPUT_LIMIT])
    if http_status in health.warning_statuses:
        return ProbeResult(AgentStatus.WARNING, None, f"GET {url}: HTTP {http_status} (warning status)")
    if http_status != health.expected_status:
        return ProbeResult(
            AgentStatus.CRITICAL, None, f"GET {url}: HTTP {http_status}, expected {health.expected_status}"
        )
    if health.load_field is None:
        return ProbeResult(AgentStatus.PASSING, None, f"GET {url}: HTTP {http_status}")
    load = _load_from(body, health.load_field)
    if load is None:
        return ProbeResult(
            AgentStatus.WARNING,
            None,
            f"GET {url}: HTTP {http_status} but no number from 0 to 1 at {health.load_field!r}",
        )
    return ProbeResult(AgentStatus.PASSING, load, f"GET {url}: HTTP {http_status}")


async def _read_body(response: aiohttp.ClientResponse) -> str:
    """At most :data:`MAX_PROBE_BODY` bytes of the answer; a longer answer yields no load."""
    raw = await response.content.read(MAX_PROBE_BODY + 1)
    if len(raw) > MAX_PROBE_BODY:
        return ""
    return raw.decode("utf-8", errors="replace")


async def probe(session: aiohttp.ClientSession, spec: AgentSpec) -> ProbeResult:
    """Probe one agent once. Never raises for anything the agent does; every failure is a verdict."""
    url = spec.probe_url
    timeout = spec.health.timeout.total_seconds()
    try:
        async with asyncio.timeout(timeout):
            async with session.get(url, allow_redirects=False) as response:
                reads = spec.health.load_field or spec.health.draining_field
                body = await _read_body(response) if reads else ""
                return verdict(spec.health, url, response.status, body)
    except TimeoutError:
        return verdict(spec.health, url, None, "", f"no answer within {timeout:g}s (hung)")
    except aiohttp.ClientError as exc:
        return verdict(spec.health, url, None, "", f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return verdict(spec.health, url, None, "", f"{type(exc).__name__}: {exc.strerror or exc}")
    except Exception as exc:
        # Whatever the agent sent, a probe's outcome is a verdict: an error here must not stop the sidecar
        # (and with it every other agent of the file). Logged, since it means a case this module missed.
        log.warning("probe of %s failed unexpectedly: %s", url, type(exc).__name__, exc_info=True)
        return verdict(spec.health, url, None, "", f"probe failed: {type(exc).__name__}")
