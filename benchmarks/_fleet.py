"""Fleet size sweep: register agents up to 10,000 on one Consul agent, timing registration and, at each
size, discovery of one type, of one type and capability, and of the whole fleet.

The agents get a one-hour TTL and no heartbeats: at 10,000 agents the sweep measures registration and
discovery, not heartbeating (the steady-state scenario does that at 1,000).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import aiohttp

from benchmarks._proc import cpu_seconds, rss_mb
from benchmarks._stats import percentile
from benchmarks._steady import PER_TYPE, fleet_registration
from consul_agents import AgentRegistry, DiscoveryRequest, RegistryTimeoutError
from consul_agents import _wire as wire

__all__ = ["run_fleet_sweep"]

#: Registrations in flight. Consul registers about 15 to 300 a second here (slower as the catalog grows), so
#: a deeper queue only makes each request wait longer inside Consul, past the request timeout.
CONCURRENCY = 8
#: A bulk load measures throughput, so requests may wait long; a registration that still times out is
#: sent again (registering an id again is an update, so a retry cannot duplicate) and counted.
BULK_TIMEOUT = 30.0


def _stats_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 2),
        "p90": round(percentile(ms, 90), 2),
        "p99": round(percentile(ms, 99), 2),
    }


async def _time(call: Any, samples: int) -> tuple[list[float], Any]:
    timings: list[float] = []
    value = None
    for _ in range(samples):
        started = time.perf_counter()
        value = await call()
        timings.append(time.perf_counter() - started)
    return timings, value


async def run_fleet_sweep(
    addr: str,
    consul_pid: int,
    *,
    sizes: tuple[int, ...] = (100, 1000, 3000, 10000),
    prefix: str = "fleet",
    samples: int = 100,
    whole_fleet_samples: int = 10,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """One row per fleet size; registering continues from the previous size."""
    rows: list[dict[str, Any]] = []
    registered = 0
    semaphore = asyncio.Semaphore(CONCURRENCY)
    long = {"ttl": timedelta(hours=1), "deregister_after": timedelta(hours=2)}
    async with (
        AgentRegistry(addr, cache=False, timeout=BULK_TIMEOUT) as registry,
        AgentRegistry(addr) as cached,
        aiohttp.ClientSession() as http,
    ):
        one_type = DiscoveryRequest(agent_type=f"{prefix}0")
        type_and_cap = DiscoveryRequest(agent_type=f"{prefix}0", capabilities=["plan"])
        url = f"{addr}/v1/health/service/agent-{prefix}0"
        expression = wire.filter_expression(one_type)

        async def raw() -> int:
            async with http.get(url, params={"filter": expression}) as response:
                return len(await response.json())

        retries = 0

        async def register(i: int) -> None:
            nonlocal retries
            async with semaphore:
                for attempt in range(3):
                    try:
                        await registry.register_agent(fleet_registration(prefix, i, **long))
                        return
                    except RegistryTimeoutError:
                        retries += 1
                        if attempt == 2:
                            raise

        for size in sizes:
            started, consul0 = time.monotonic(), cpu_seconds(consul_pid)
            await asyncio.gather(*(register(i) for i in range(registered, size)))
            elapsed = time.monotonic() - started
            added, registered = size - registered, size
            await _time(lambda: registry.discover_agents(one_type), 5)  # warm-up
            t_raw, n_raw = await _time(raw, samples)
            t_type, found = await _time(lambda: registry.discover_agents(one_type), samples)
            t_cap, found_cap = await _time(lambda: registry.discover_agents(type_and_cap), samples)
            t_all, found_all = await _time(registry.discover_agents, whole_fleet_samples)
            await _time(cached.discover_agents, 2)  # the first call starts the watches
            t_cached, found_cached = await _time(lambda: cached.discover_agents(one_type), samples)
            t_all_cached, found_all_cached = await _time(cached.discover_agents, samples)
            assert n_raw == len(found) == min(size, PER_TYPE), (n_raw, len(found))
            assert len(found_all) == len(found_all_cached) == size, (len(found_all), size)
            assert len(found_cached) == len(found), (len(found_cached), len(found))
            row = {
                "agents": size,
                "registered_now": added,
                "register_seconds": round(elapsed, 2),
                "registrations_per_s": round(added / elapsed, 1),
                "registration_retries_after_timeout": retries,
                "consul_cpu_s_registering": round(cpu_seconds(consul_pid) - consul0, 2),
                "consul_rss_mb": round(rss_mb(consul_pid), 1),
                "discover_one_type_consul_http_ms": _stats_ms(t_raw),
                "discover_one_type_ms": _stats_ms(t_type),
                "discover_type_and_capability_ms": _stats_ms(t_cap),
                "discover_whole_fleet_ms": _stats_ms(t_all),
                "discover_one_type_cached_ms": _stats_ms(t_cached),
                "discover_whole_fleet_cached_ms": _stats_ms(t_all_cached),
                "found": {
                    "one_type": len(found),
                    "type_and_capability": len(found_cap),
                    "all": len(found_all),
                },
            }
            rows.append(row)
            if progress:
                progress(row)
    return rows
