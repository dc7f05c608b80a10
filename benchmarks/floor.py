"""Floor benchmark: select_agent and cached hits against the floor they are built on, in one run.

Run with ``python -m benchmarks.floor [--consul-addr URL] [--output PATH]``. Without an address it starts a
single Consul server as Consul is deployed (``server: true``, state on disk). Writes reports/bench-floor.json.

What is measured, every pair timed in interleaved blocks so that drift on a shared machine hits both alike,
with the machine's load average recorded before and after each section:

* select: ``select_agent`` per strategy among 1,000 cached candidates against ``discover`` of the same
  candidates from the cache (the same request, so the same cached view): the ratio of medians is what
  choosing one agent adds to finding them all (target: at most 2). Also least_loaded while the client
  holds ten leases on candidates (their in-flight requests count in their loads).
* cached hit: ``discover_agents`` answered from the cache (10 agents) against a hit in a cachetools
  ``TTLCache`` holding the same answer, awaited from a coroutine as the registry call is (target: at
  most 3x), with no tracer provider installed and nobody scraping the metrics.
* the same cached hit and a select with a tracer provider installed (OpenTelemetry SDK, every span
  sampled, no exporter): what instrumentation costs per call when somebody listens.
* selection evenness (pure, benchmarks/client.py's closed loop): must stay max/mean 1.000 for round_robin,
  weighted_random and least_loaded, capacity shares within 10% for the load-aware strategies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from cachetools import TTLCache

from benchmarks._stats import benchmark_parser, consul_address, write_report
from benchmarks.client import _evenness, _timed, _us
from benchmarks.core import _fill
from consul_agents import AgentRegistry, DiscoveryRequest, SelectionCriteria
from consul_agents._selection import STRATEGIES

REPORT = Path("reports/bench-floor.json")
TARGET_SELECT_OVER_DISCOVER = 2.0
TARGET_HIT_OVER_TTLCACHE = 3.0
FLEET_TTL = timedelta(days=1)
BLOCKS = 20


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def _pair(
    ours: Callable[[], Awaitable[Any]], floor: Callable[[], Awaitable[Any]], rounds: int
) -> dict[str, Any]:
    """Medians of ``ours`` and ``floor`` timed in alternating blocks, and their ratio."""
    ours_s: list[float] = []
    floor_s: list[float] = []
    for _ in range(BLOCKS):
        ours_s += await _timed(ours, rounds)
        floor_s += await _timed(floor, rounds)
    a, b = _us(ours_s), _us(floor_s)
    return {"ours": a, "floor": b, "ratio_median": round(a["median_us"] / b["median_us"], 2)}


async def _section(run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    before = _load()
    rows = await run()
    return {"load_average_before": before, "load_average_after": _load(), "rows": rows}


async def _select_rows(registry: AgentRegistry, agent_type: str) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for strategy in STRATEGIES:
        criteria = SelectionCriteria(agent_type=agent_type, strategy=strategy)
        await registry.select_agent(criteria)
        await registry.discover(criteria)
        rows[strategy] = await _pair(
            partial(registry.select_agent, criteria), partial(registry.discover, criteria), 100
        )
    # least_loaded while this client holds leases (requests in flight) on ten of the candidates
    criteria = SelectionCriteria(agent_type=agent_type, strategy="least_loaded")
    async with contextlib.AsyncExitStack() as leases:
        for _ in range(10):
            await leases.enter_async_context(registry.lease(criteria))
        rows["least_loaded_10_leases_held"] = await _pair(
            partial(registry.select_agent, criteria), partial(registry.discover, criteria), 100
        )
    return rows


async def _hit_rows(registry: AgentRegistry, agent_type: str) -> dict[str, Any]:
    request = DiscoveryRequest(agent_type=agent_type, capabilities=["rare"])
    answer = await registry.discover_agents(request)
    ttl_cache: TTLCache[tuple[Any, ...], list[Any]] = TTLCache(maxsize=1024, ttl=60)

    def key(r: DiscoveryRequest) -> tuple[Any, ...]:
        return (r.agent_type, tuple(r.capabilities), r.status, r.max_load)

    ttl_cache[key(request)] = answer

    async def ttl_hit() -> list[Any]:
        return list(ttl_cache[key(request)])

    return {
        f"cached_hit_{len(answer)}_agents": await _pair(
            partial(registry.discover_agents, request), ttl_hit, 200
        )
    }


def _install_tracer_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())


def _cost(off: dict[str, Any], on: dict[str, Any]) -> dict[str, float]:
    """Microseconds per call that a tracer provider adds (medians, same rows)."""
    return {name: round(on[name]["ours"]["median_us"] - off[name]["ours"]["median_us"], 2) for name in on}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, iterations=None)
    args = parser.parse_args(argv)

    async def run(addr: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as bare:
            await _fill(bare, addr, "floor1000", 1000, ttl=FLEET_TTL)
            await _fill(bare, addr, "floor100", 100, ttl=FLEET_TTL)
        async with AgentRegistry(addr) as registry:
            for agent_type, size in (("floor1000", 1000), ("floor100", 100)):
                request = DiscoveryRequest(agent_type=agent_type)
                deadline = asyncio.get_running_loop().time() + 120
                while len(await registry.discover_agents(request)) != size:
                    assert asyncio.get_running_loop().time() < deadline, "the fleet did not reach the cache"
                    await registry.discovery.cache.wait_changed(0.5)
            off = {
                "select_among_1000": await _section(partial(_select_rows, registry, "floor1000")),
                "cached_hit": await _section(partial(_hit_rows, registry, "floor100")),
            }
            _install_tracer_provider()
            on = {
                "select_among_1000": await _section(partial(_select_rows, registry, "floor1000")),
                "cached_hit": await _section(partial(_hit_rows, registry, "floor100")),
            }
        return {
            "tracing_off": off,
            "tracing_on": on,
            "tracing_cost_us_per_call": {
                section: _cost(off[section]["rows"], on[section]["rows"]) for section in off
            },
        }

    with consul_address(args.consul_addr, dev_mode=False) as addr:
        results = asyncio.run(run(addr))
    results["evenness"] = _evenness()
    off = results["tracing_off"]
    met = {
        **{
            f"select_{strategy}_within_{TARGET_SELECT_OVER_DISCOVER}x_discover": row["ratio_median"]
            <= TARGET_SELECT_OVER_DISCOVER
            for strategy, row in off["select_among_1000"]["rows"].items()
        },
        **{
            f"{name}_within_{TARGET_HIT_OVER_TTLCACHE}x_ttlcache": row["ratio_median"]
            <= TARGET_HIT_OVER_TTLCACHE
            for name, row in off["cached_hit"]["rows"].items()
        },
    }
    where = args.consul_addr or "single server (server mode, state on disk) started by the benchmark"
    write_report(args.output, results, consul=where, targets={"met": met})
    for mode in ("tracing_off", "tracing_on"):
        for section, body in results[mode].items():
            for name, row in body["rows"].items():
                print(
                    f"{mode:11} {section:18} {name:24} ours {row['ours']['median_us']:8.2f} us"
                    f"  floor {row['floor']['median_us']:8.2f} us  x{row['ratio_median']}"
                    f"  load {body['load_average_before']}"
                )
    print("tracing cost (us/call):", results["tracing_cost_us_per_call"])
    print(f"targets: {met} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
