"""Steady state: a fleet heartbeating from one process while many discoverers query, on one Consul agent.

Measures errors (heartbeat and discovery), our process's and Consul's CPU, Consul's Raft index movement
(all writes, and the index of our own services: ideally still when nothing changes) and discovery latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks._leader_loss import fleet_sessions
from benchmarks._proc import cpu_seconds, rss_mb
from benchmarks._stats import percentile
from consul_agents import AgentRegistration, AgentRegistry, ConsulAgentsError, DiscoveryRequest

__all__ = ["CAPABILITIES", "SteadyResult", "fleet_registration", "run_steady"]

CAPABILITIES = ("plan", "code", "search", "summarize")
PER_TYPE = 100


def fleet_registration(prefix: str, i: int, **overrides: Any) -> AgentRegistration:
    """Agent ``i`` of a fleet: 100 agents per type, each with one of four capabilities."""
    fields: dict[str, Any] = {
        "agent_type": f"{prefix}{i // PER_TYPE}",
        "capabilities": [CAPABILITIES[i % len(CAPABILITIES)]],
        "endpoint": f"http://127.0.0.1:{10000 + i % 50000}",
        "tags": {"zone": f"z{i % 3}"},
        "metadata": {"model": "m1", "i": i},
        "agent_id": f"{prefix}-{i}",
    }
    fields.update(overrides)
    return AgentRegistration(**fields)


class _CountFailures(logging.Handler):
    """Counts the failed heartbeats that AgentSession logs, by exception class."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first = ""
        self.kinds: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if "heartbeat of agent" in record.getMessage():
            self.count += 1
            self.first = self.first or record.getMessage()
            kind = type(record.args[1]).__name__ if isinstance(record.args, tuple) else "?"
            self.kinds[kind] = self.kinds.get(kind, 0) + 1


@dataclass
class SteadyResult:
    agents: int
    discoverers: int
    seconds: float
    cache: bool = False
    discoveries: int = 0
    discovery_errors: int = 0
    heartbeat_failures: int = 0
    heartbeats: int = 0
    passing_at_end: int = 0
    latencies_s: list[float] = field(default_factory=list)
    own_cpu_s: float = 0.0
    consul_cpu_s: float = 0.0
    idle_consul_cpu_s: float = 0.0
    idle_seconds: float = 0.0
    raft_writes: int = 0
    idle_raft_writes: int = 0
    service_index_changes: int = 0
    consul_rss_mb: float = 0.0
    own_rss_mb: float = 0.0
    first_error: str = ""
    first_heartbeat_error: str = ""
    heartbeat_failure_kinds: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ms = [s * 1000 for s in self.latencies_s] or [0.0]
        return {
            "agents": self.agents,
            "discoverers": self.discoverers,
            "cache": self.cache,
            "seconds": round(self.seconds, 1),
            "discoveries": self.discoveries,
            "discoveries_per_s": round(self.discoveries / self.seconds, 1),
            "discovery_errors": self.discovery_errors,
            "heartbeats": self.heartbeats,
            "heartbeats_per_s": round(self.heartbeats / self.seconds, 1),
            "heartbeat_failures": self.heartbeat_failures,
            "passing_at_end": self.passing_at_end,
            "discovery_latency_ms": {
                "p50": round(percentile(ms, 50), 2),
                "p90": round(percentile(ms, 90), 2),
                "p99": round(percentile(ms, 99), 2),
                "max": round(max(ms), 2),
            },
            "own_cpu_percent_of_one_core": round(100 * self.own_cpu_s / self.seconds, 1),
            "consul_cpu_percent_of_one_core": round(100 * self.consul_cpu_s / self.seconds, 1),
            "consul_idle_cpu_percent_of_one_core": round(100 * self.idle_consul_cpu_s / self.idle_seconds, 1)
            if self.idle_seconds
            else None,
            "raft_writes_per_s": round(self.raft_writes / self.seconds, 2),
            "raft_writes_per_s_idle_before_fleet": round(self.idle_raft_writes / self.idle_seconds, 2)
            if self.idle_seconds
            else None,
            "fleet_service_index_changes": self.service_index_changes,
            "consul_rss_mb": round(self.consul_rss_mb, 1),
            "own_rss_mb": round(self.own_rss_mb, 1),
            "first_discovery_error": self.first_error,
            "first_heartbeat_error": self.first_heartbeat_error,
            "heartbeat_failure_kinds": self.heartbeat_failure_kinds,
            # (percent, ms) pairs: enough to redraw the latency distribution without every sample.
            "latency_quantiles_ms": [[q / 2, round(percentile(ms, q / 2), 3)] for q in range(201)],
        }


async def _raft_applied(http: aiohttp.ClientSession, addr: str) -> int:
    async with http.get(f"{addr}/v1/agent/self") as response:
        body = await response.json()
    return int(body["Stats"]["raft"]["applied_index"])


async def _service_index(http: aiohttp.ClientSession, addr: str, service: str) -> int:
    async with http.get(f"{addr}/v1/health/service/{service}") as response:
        await response.read()
        return int(response.headers["X-Consul-Index"])


async def run_steady(  # noqa: PLR0915 (one scenario, read top to bottom)
    addr: str,
    consul_pid: int,
    *,
    prefix: str = "steady",
    agents: int = 1000,
    discoverers: int = 100,
    seconds: float = 60.0,
    think: float = 0.25,
    idle_seconds: float = 10.0,
    cache: bool = False,
    rng: random.Random | None = None,
) -> SteadyResult:
    """``agents`` sessions (default TTL 15 s, a heartbeat every 5 s) and ``discoverers`` tasks that each
    discover one type and capability, then pause ``think`` seconds, for ``seconds``.

    With ``cache=False`` every discovery is a query to Consul (the load this scenario is about); with
    ``cache=True`` the discoverers read the library's watch-fed cache, the default, which costs Consul
    one blocking query per type however many discoveries there are."""
    rng = rng or random.Random(7)
    result = SteadyResult(agents, discoverers, seconds, cache)
    failures = _CountFailures()
    logging.getLogger("consul_agents.registry").addHandler(failures)
    types = max(1, agents // PER_TYPE)
    async with (
        aiohttp.ClientSession() as http,
        # One registry for the whole process, as an application would have: two registries, each with up
        # to 128 connections, can exceed Consul's 200 connections per client address (the report's first
        # run did, and lost heartbeats to refused connections).
        AgentRegistry(addr, cache=cache) as registry,
    ):
        raft0 = await _raft_applied(http, addr)
        cpu0 = cpu_seconds(consul_pid)
        await asyncio.sleep(idle_seconds)
        result.idle_seconds = idle_seconds
        result.idle_raft_writes = await _raft_applied(http, addr) - raft0
        result.idle_consul_cpu_s = cpu_seconds(consul_pid) - cpu0

        fleet = [fleet_registration(prefix, i) for i in range(agents)]
        async with fleet_sessions(registry, fleet) as sessions:
            await asyncio.sleep(5)  # let the registrations' own index changes and first heartbeats pass
            stop = asyncio.Event()

            async def discover() -> None:
                while not stop.is_set():
                    request = DiscoveryRequest(
                        agent_type=f"{prefix}{rng.randrange(types)}", capabilities=[rng.choice(CAPABILITIES)]
                    )
                    started = time.perf_counter()
                    try:
                        found = await registry.discover_agents(request)
                    except ConsulAgentsError as exc:
                        result.discovery_errors += 1
                        result.first_error = result.first_error or str(exc)
                    else:
                        result.latencies_s.append(time.perf_counter() - started)
                        if len(found) != PER_TYPE // len(CAPABILITIES):
                            result.discovery_errors += 1
                            result.first_error = result.first_error or f"{len(found)} agents found"
                    result.discoveries += 1
                    await asyncio.sleep(think * rng.uniform(0.5, 1.5))

            services = [f"agent-{prefix}{t}" for t in range(types)]
            indexes = {name: await _service_index(http, addr, name) for name in services}

            async def watch_indexes() -> None:
                """Every second, count the fleet's services whose X-Consul-Index moved."""
                while not stop.is_set():
                    await asyncio.sleep(1)
                    for name in services:
                        index = await _service_index(http, addr, name)
                        if index != indexes[name]:
                            result.service_index_changes += 1
                            indexes[name] = index

            raft0 = await _raft_applied(http, addr)
            beats0 = sum(s.heartbeats for s in sessions)
            failures0 = failures.count
            own0, consul0 = cpu_seconds(), cpu_seconds(consul_pid)
            started = time.monotonic()
            tasks = [asyncio.create_task(discover()) for _ in range(discoverers)]
            tasks.append(asyncio.create_task(watch_indexes()))
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks)
            result.seconds = time.monotonic() - started
            result.own_cpu_s = cpu_seconds() - own0
            result.consul_cpu_s = cpu_seconds(consul_pid) - consul0
            result.raft_writes = await _raft_applied(http, addr) - raft0
            result.heartbeats = sum(s.heartbeats for s in sessions) - beats0
            result.heartbeat_failures = failures.count - failures0
            result.first_heartbeat_error = failures.first
            result.heartbeat_failure_kinds = dict(failures.kinds)
            result.consul_rss_mb = rss_mb(consul_pid)
            result.own_rss_mb = rss_mb()
            for t in range(types):
                with contextlib.suppress(ConsulAgentsError):
                    found = await registry.discover_agents(DiscoveryRequest(agent_type=f"{prefix}{t}"))
                    result.passing_at_end += sum(1 for a in found if a.status.value == "passing")
    logging.getLogger("consul_agents.registry").removeHandler(failures)
    return result
