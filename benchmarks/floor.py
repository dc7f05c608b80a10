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
* uncached discovery: ``discover_agents(..., cached=False)`` of 10 and of 100 agents against the floor the
  issue names, a bare GET of ``/v1/health/service/<type>`` plus ``json.loads`` on one reused aiohttp
  session (its default headers: Consul gzips the answer), and against the strongest floor, the same GET
  asking for the plain answer (``Accept-Encoding: identity``, as the library does on loopback): wall
  median and client CPU per call (``time.process_time`` over each block), each ratio in the same run
  (targets: at most 1.2x the wall, 1.5x the CPU of the bare GET).
* with a tracer provider installed (OpenTelemetry SDK, every span sampled, no exporter): the cached hit,
  the selects and one uncached discovery again, and what one scrape of the metrics costs (the per-call
  counters are folded into the exposition then, see consul_agents/_accumulate.py).
* selection evenness (pure, benchmarks/client.py's closed loop): must stay max/mean 1.000 for round_robin,
  weighted_random and least_loaded, capacity shares within 10% for the load-aware strategies.

Every section records the machine's load average before and after it: a figure taken on a loaded machine
says so beside itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from cachetools import TTLCache
from prometheus_client import REGISTRY, generate_latest

from benchmarks._stats import benchmark_parser, consul_address, load_average, write_report
from benchmarks.client import _evenness, _timed, _us
from benchmarks.core import _fill
from consul_agents import AgentRegistry, DiscoveryRequest, SelectionCriteria
from consul_agents._selection import STRATEGIES

REPORT = Path("reports/bench-floor.json")
TARGET_SELECT_OVER_DISCOVER = 2.0
TARGET_HIT_OVER_TTLCACHE = 3.0
TARGET_UNCACHED_WALL = 1.2
TARGET_UNCACHED_CPU = 1.5
FLEET_TTL = timedelta(days=1)
BLOCKS = 20


async def _pair(
    ours: Callable[[], Awaitable[Any]],
    floor: Callable[[], Awaitable[Any]],
    rounds: int,
    blocks: int = BLOCKS,
) -> dict[str, Any]:
    """Medians of ``ours`` and ``floor`` timed in ``blocks`` alternating blocks, and their ratio."""
    ours_s: list[float] = []
    floor_s: list[float] = []
    for _ in range(blocks):
        # A call answered from memory never yields to the event loop: let the watches' reads in between
        # blocks, as any program doing I/O does (a loop starved for a minute makes every answer stale).
        await asyncio.sleep(0)
        ours_s += await _timed(ours, rounds)
        floor_s += await _timed(floor, rounds)
    a, b = _us(ours_s), _us(floor_s)
    return {"ours": a, "floor": b, "ratio_median": round(a["median_us"] / b["median_us"], 2)}


async def _timed_cpu(fn: Callable[[], Awaitable[Any]], rounds: int) -> tuple[list[float], float]:
    """Wall seconds of each of ``rounds`` calls, and the process CPU seconds of all of them."""
    cpu = time.process_time()
    samples = await _timed(fn, rounds)
    return samples, time.process_time() - cpu


async def _against_floors(
    ours: Callable[[], Awaitable[Any]], floors: dict[str, Callable[[], Awaitable[Any]]], rounds: int
) -> dict[str, Any]:
    """Wall medians and CPU per call of ``ours`` and of each floor, timed in alternating blocks; the
    ratios of ours to each."""
    names = ["ours", *floors]
    calls = {"ours": ours, **floors}
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    for block in range(BLOCKS):
        order = names if block % 2 == 0 else names[::-1]
        for name in order:
            samples, spent = await _timed_cpu(calls[name], rounds)
            wall[name] += samples
            cpu[name] += spent
    row: dict[str, Any] = {}
    for name in names:
        row[name] = {**_us(wall[name]), "cpu_us_per_call": round(cpu[name] / len(wall[name]) * 1e6, 2)}
    for name in floors:
        row[f"wall_ratio_to_{name}"] = round(row["ours"]["median_us"] / row[name]["median_us"], 2)
        row[f"cpu_ratio_to_{name}"] = round(row["ours"]["cpu_us_per_call"] / row[name]["cpu_us_per_call"], 2)
    return row


async def _uncached_rows(addr: str, sizes: tuple[int, ...]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    async with (
        AgentRegistry(addr, cache=False) as registry,
        aiohttp.ClientSession() as bare,
        aiohttp.ClientSession(headers={"Accept-Encoding": "identity"}) as plain,
    ):
        for size in sizes:
            request = DiscoveryRequest(agent_type=f"floor{size}")
            url = f"{addr}/v1/health/service/agent-floor{size}"
            assert len(await registry.discover_agents(request)) == size

            async def bare_get(session: aiohttp.ClientSession = bare, url: str = url) -> Any:
                async with session.get(url) as response:
                    return json.loads(await response.read())

            floors: dict[str, Callable[[], Awaitable[Any]]] = {
                "bare_get": bare_get,
                "bare_get_identity": partial(bare_get, plain),
            }
            ours: Callable[[], Awaitable[Any]] = partial(registry.discover_agents, request)
            for call in (ours, *floors.values()):
                for _ in range(20):
                    await call()  # warm: connections open, entries judged once
            rows[f"uncached_{size}_agents"] = await _against_floors(ours, floors, 10 if size >= 100 else 25)
    return rows


def _scrape_rows() -> dict[str, Any]:
    """What one scrape of the default registry costs (where the per-call counters are folded in)."""
    samples = []
    for _ in range(200):
        started = time.perf_counter()
        generate_latest(REGISTRY)
        samples.append(time.perf_counter() - started)
    return {"scrape_default_registry": _us(samples)}


async def _section(run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    before = load_average()
    rows = await run()
    return {"load_average_before": before, "load_average_after": load_average(), "rows": rows}


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
    """Microseconds per call that a tracer provider adds (medians, rows measured both ways)."""
    return {
        name: round(on[name]["ours"]["median_us"] - off[name]["ours"]["median_us"], 2)
        for name in on
        if name in off
    }


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, iterations=None)
    args = parser.parse_args(argv)

    async def run(addr: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as bare:
            await _fill(bare, addr, "floor1000", 1000, ttl=FLEET_TTL)
            await _fill(bare, addr, "floor100", 100, ttl=FLEET_TTL)
            await _fill(bare, addr, "floor10", 10, ttl=FLEET_TTL)
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
                "uncached": await _section(partial(_uncached_rows, addr, (10, 100))),
            }
            _install_tracer_provider()
            on = {
                "select_among_1000": await _section(partial(_select_rows, registry, "floor1000")),
                "cached_hit": await _section(partial(_hit_rows, registry, "floor100")),
                "uncached": await _section(partial(_uncached_rows, addr, (10,))),
                "scrape": await _section(partial(asyncio.to_thread, _scrape_rows)),
            }
        return {
            "tracing_off": off,
            "tracing_on": on,
            "tracing_cost_us_per_call": {
                section: _cost(off[section]["rows"], on[section]["rows"]) for section in off if section in on
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
        **{
            f"{name}_within_{TARGET_UNCACHED_WALL}x_wall_{TARGET_UNCACHED_CPU}x_cpu_of_bare_get": (
                row["wall_ratio_to_bare_get"] <= TARGET_UNCACHED_WALL
                and row["cpu_ratio_to_bare_get"] <= TARGET_UNCACHED_CPU
            )
            for name, row in off["uncached"]["rows"].items()
        },
    }
    where = args.consul_addr or "single server (server mode, state on disk) started by the benchmark"
    write_report(args.output, results, consul=where, targets={"met": met})
    for mode in ("tracing_off", "tracing_on"):
        for section, body in results[mode].items():
            for name, row in body["rows"].items():
                if "ratio_median" not in row:
                    shown = json.dumps(row)
                    print(f"{mode:11} {section:18} {name:24} {shown}  load {body['load_average_before']}")
                    continue
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
