"""Client-layer benchmark: cached vs direct discovery, select_agent, change propagation, selection evenness.

Run with ``make bench-client`` (part of ``make bench``), or ``python -m benchmarks.client [--consul-addr URL]
[--large] [--output PATH]``. Without an address it starts its own dev Consul. ``--large`` adds the
10,000-agent size: registering 10,000 services takes Consul itself about 3 minutes on this machine, so it is
off by default. Writes reports/bench-client.json and prints a summary.

What is measured:

* discover: the same request through ``discover_agents`` answered from the watch-fed cache and by a direct
  Consul query (``cached=False``), at each fleet size, timed alternately; plus the bare cache lookup (without
  the registry's span and metrics wrapper) to show where the cached time goes.
* select_agent: the median of a cached selection per strategy at 1,000 agents.
* change propagation at 1,000 agents, as one type of 1,000 and as ten types of 100 (one watch per type): a
  second client (no cache) registers, reports a load, fails a check or deregisters; the time from Consul
  acknowledging the write until the cached reader's answer shows it. Beside it, what Consul alone takes to
  serve all 1,000 instances of one service, which every wake of that service's watch costs (Consul 1.8 has
  no streaming), plain and gzipped. ``python -m benchmarks.propagation`` measures the same at 1,000 agents
  of one type beside a baseline tree and Consul's filtered blocking query, for selective questions too.

Consul: unless ``--consul-addr`` is given, everything runs on a single server started as Consul is
deployed (``server: true``, state on disk). One type of 1,000 is also measured on a ``-dev`` agent, which
indents every answer it writes, so each wake there moves twice the bytes (2.9 MB instead of 1.4 MB).
* selection evenness (pure, no Consul, see ``_closed_loop`` for the model): 100 equal agents, 100,000
  picks, max/mean picks per agent; and with capacities 1 to 4, each agent's share against its
  capacity-proportional share, with demand at 1x and 2x the total capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._stats import benchmark_parser, consul_address, percentile, summary, write_report
from benchmarks.core import _fill
from consul_agents import AgentRegistration, AgentRegistry, AgentStatus, DiscoveryRequest, SelectionCriteria
from consul_agents._models import AgentInfo
from consul_agents._selection import STRATEGIES, SelectionState, select

REPORT = Path("reports/bench-client.json")
TARGET_CACHED_MEDIAN_US_AT_1000 = 50.0
TARGET_SPEEDUP_AT_1000 = 50.0
TARGET_PROPAGATION_P99_MS = 100.0
TARGET_EVENNESS = 1.05
TARGET_SHARE_ERROR = 0.10
PROPAGATION_SHAPES = ("one_type_of_1000", "ten_types_of_100", "one_type_of_1000_dev_agent")
#: The TTL of the fleets registered directly (nobody heartbeats them): a day, so that none turns critical
#: while the benchmark runs; the fleet stays exactly as registered, and every question keeps the same answer.
FLEET_TTL = timedelta(days=1)


async def _timed(fn: Callable[[], Awaitable[Any]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


def _us(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "median_us": round(statistics.median(samples) * 1e6, 2),
        "p99_us": round(percentile(samples, 99) * 1e6, 2),
    }


async def _discover(addr: str, sizes: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession() as bare, AgentRegistry(addr) as registry:
        for size in sizes:
            agent_type = f"client{size}"
            started = time.monotonic()
            await _fill(bare, addr, agent_type, size, ttl=FLEET_TTL)
            fill_s = time.monotonic() - started
            for label, request in (
                ("filtered", DiscoveryRequest(agent_type=agent_type, capabilities=["rare"])),
                ("all", DiscoveryRequest(agent_type=agent_type)),
            ):
                expected = size // 10 if label == "filtered" else size
                deadline = time.monotonic() + 120
                while len(await registry.discover_agents(request, cached=False)) != expected:
                    assert time.monotonic() < deadline, "the fleet did not reach Consul's catalog"
                    await asyncio.sleep(0.5)
                found = await registry.discover_agents(request)
                while found != await registry.discover_agents(request, cached=False):
                    assert time.monotonic() < deadline, "the cache disagrees with Consul"
                    await registry.discovery.cache.wait_changed(0.5)
                    found = await registry.discover_agents(request)
                direct_rounds = max(20, min(300, 30_000 // size))
                cached_s: list[float] = []
                direct_s: list[float] = []
                for _ in range(direct_rounds // 10):
                    # interleaved blocks, so drift on a noisy machine hits both alike
                    cached_s += await _timed(partial(registry.discover_agents, request), 200)
                    direct_s += await _timed(partial(registry.discover_agents, request, cached=False), 10)
                lookup_s = await _timed(partial(registry.discovery.cache.query, request, ""), 2000)
                cached, direct = _us(cached_s), _us(direct_s)
                results[f"discover_{size}_{label}"] = {
                    "agents": size,
                    "answer_size": len(found),
                    "cached": cached,
                    "direct": direct,
                    "cache_lookup_only": _us(lookup_s),
                    "speedup_median": round(direct["median_us"] / cached["median_us"], 1),
                    "fill_seconds": round(fill_s, 1),
                }
    return results


async def _select(addr: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with AgentRegistry(addr) as registry:
        for strategy in STRATEGIES:
            criteria = SelectionCriteria(agent_type="client1000", strategy=strategy)
            await registry.select_agent(criteria)
            results[strategy] = _us(await _timed(partial(registry.select_agent, criteria), 2000))
    return results


async def _propagation(addr: str, agent_type: str, events_per_kind: int) -> dict[str, Any]:
    """Write with one client, read with another (cached); time from write acknowledged to change seen."""
    request = DiscoveryRequest(agent_type=agent_type)
    critical = DiscoveryRequest(agent_type=agent_type, status=AgentStatus.CRITICAL)
    samples: dict[str, list[float]] = {"register": [], "load": [], "critical": [], "deregister": []}
    async with AgentRegistry(addr, cache=False) as writer, AgentRegistry(addr) as reader:
        watched = len(await reader.discover_agents(request))
        await reader.discover_agents(critical)
        cache = reader.discovery.cache

        async def seen(check: Callable[[], Awaitable[bool]], acknowledged: float) -> float:
            deadline = acknowledged + 5
            while True:
                # Taken before the check: a change landing between the check and the wait wakes the wait
                # (waiting on an event taken after the check added up to 50 ms to some samples).
                changed = cache._changed
                if await check():
                    return time.perf_counter() - acknowledged
                if time.perf_counter() > deadline:
                    raise TimeoutError("change not seen within 5 s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 0.05)

        for i in range(events_per_kind):
            registration = AgentRegistration(
                agent_type=agent_type,
                capabilities=["plan"],
                endpoint="http://127.0.0.1:9000",
                agent_id=f"{agent_type}-probe-{i}",
                ttl=600,
            )
            agent_id = registration.agent_id
            assert agent_id is not None

            async def present(a: str = agent_id, load: float | None = None) -> bool:
                for info in await reader.discover_agents(request):
                    if info.agent_id == a:
                        return load is None or info.current_load == load
                return False

            async def absent(a: str = agent_id) -> bool:
                return not await present(a) and not await is_critical(a)

            async def is_critical(a: str = agent_id) -> bool:
                return any(info.agent_id == a for info in await reader.discover_agents(critical))

            await writer.register_agent(registration)
            samples["register"].append(await seen(present, time.perf_counter()))
            load = round(0.3 + (i % 5) / 10, 2)
            await writer.heartbeat(agent_id, load=load)
            samples["load"].append(await seen(partial(present, agent_id, load), time.perf_counter()))
            await writer.heartbeat(agent_id, status=AgentStatus.CRITICAL)
            samples["critical"].append(await seen(is_critical, time.perf_counter()))
            await writer.deregister_agent(agent_id)
            samples["deregister"].append(await seen(absent, time.perf_counter()))
    every = [s for kind in samples.values() for s in kind]
    return {
        "agents_in_watched_service": watched,
        **{kind: summary(values) for kind, values in samples.items()},
        "all": summary(every),
    }


async def _full_read(addr: str, service: str) -> dict[str, Any]:
    """What one wake of a watch costs before any of our code runs: Consul serialising every instance of
    the service and the JSON crossing loopback; uncompressed, as the library asks over loopback, and
    gzipped (then decompressed), as Consul answers any client that accepts it (aiohttp's default)."""
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for encoding in ("identity", "gzip"):
            samples = []
            size = 0
            for _ in range(20):
                started = time.perf_counter()
                async with session.get(
                    f"{addr}/v1/health/service/{service}",
                    params={"stale": ""},
                    headers={"Accept-Encoding": encoding},
                ) as response:
                    body = await response.read()
                size = len(body)
                if response.headers.get("Content-Encoding") == "gzip":
                    body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
                samples.append(time.perf_counter() - started)
            results[encoding] = {"bytes_on_the_wire": size, "json_bytes": len(body), **summary(samples)}
    return results


def _agents(capacities: list[int]) -> list[AgentInfo]:
    return [
        AgentInfo(
            agent_id=f"a{i:03d}",
            agent_type="t",
            capabilities=["c"],
            status=AgentStatus.PASSING,
            endpoint="http://h:1",
            health_score=1.0,
            current_load=0.0,
            last_heartbeat=None,
            weight=capacity,
        )
        for i, capacity in enumerate(capacities)
    ]


def _closed_loop(
    agents: list[AgentInfo], pick: Callable[[SelectionState], AgentInfo], picks: int, in_flight: int
) -> Counter[str]:
    """A closed loop: ``in_flight`` requests always outstanding. An agent of weight w serves w requests at
    a time, each for one time unit, and queues the rest; when a request ends, the next one is placed by
    ``pick``, which sees this client's in-flight counts (as leases keep them)."""
    state = SelectionState()
    counts: Counter[str] = Counter()
    slots = {a.agent_id: a.weight for a in agents}
    busy: Counter[str] = Counter()
    queued: Counter[str] = Counter()
    ends: list[tuple[float, int, str]] = []
    now = 0.0
    for n in range(picks):
        if n >= in_flight:
            now, _, done = heapq.heappop(ends)
            state.release(done)
            if queued[done]:
                queued[done] -= 1
                heapq.heappush(ends, (now + 1.0, n, done))
            else:
                busy[done] -= 1
        chosen = pick(state).agent_id
        state.acquire(chosen)
        counts[chosen] += 1
        if busy[chosen] < slots[chosen]:
            busy[chosen] += 1
            heapq.heappush(ends, (now + 1.0, n, chosen))
        else:
            queued[chosen] += 1
    return counts


def _evenness(picks: int = 100_000) -> dict[str, Any]:
    equal = _agents([1] * 100)
    capacities = [1 + i % 4 for i in range(100)]
    unequal = _agents(capacities)
    total_capacity = sum(capacities)

    def picker(strategy: str, fleet: list[AgentInfo], seed: int) -> Callable[[SelectionState], AgentInfo]:
        rng = random.Random(seed)
        if strategy == "uniform_random":
            return lambda state: rng.choice(fleet)

        def pick(state: SelectionState) -> AgentInfo:
            chosen = select(fleet, strategy, rng=rng, state=state, key="bench")  # type: ignore[arg-type]
            assert chosen is not None
            return chosen

        return pick

    equal_rows: dict[str, Any] = {}
    share_rows: dict[str, dict[str, Any]] = {}
    for strategy in ("uniform_random", *STRATEGIES):
        counts = _closed_loop(equal, picker(strategy, equal, 1), picks, in_flight=2 * len(equal))
        mean = picks / len(equal)
        equal_rows[strategy] = {
            "max_over_mean": round(max(counts.values()) / mean, 4),
            "min_over_mean": round(min(counts.get(a.agent_id, 0) for a in equal) / mean, 4),
        }
        share_rows[strategy] = {}
        for demand in (1, 2):
            counts = _closed_loop(
                unequal, picker(strategy, unequal, 3), picks, in_flight=demand * total_capacity
            )
            ratios = [counts.get(a.agent_id, 0) / picks / (a.weight / total_capacity) for a in unequal]
            by_capacity = {
                str(c): round(
                    statistics.fmean(r for r, a in zip(ratios, unequal, strict=True) if a.weight == c), 4
                )
                for c in sorted(set(capacities))
            }
            share_rows[strategy][f"demand_{demand}x_capacity"] = {
                "share_over_proportional_by_capacity": by_capacity,
                "worst_agent_error": round(max(abs(r - 1) for r in ratios), 4),
            }
    return {
        "model": "closed loop; an agent of weight w serves w requests at a time, one time unit each, and "
        "queues the rest; each finished request is replaced by a new pick that sees this client's "
        "in-flight counts (as leases keep them); no reported load",
        "equal_agents": {
            "agents": 100,
            "picks": picks,
            "in_flight": 200,
            "rows": equal_rows,
        },
        "capacities_1_to_4": {
            "agents": 100,
            "picks": picks,
            "in_flight": {"demand_1x_capacity": total_capacity, "demand_2x_capacity": 2 * total_capacity},
            "note": "weight = capacity; each agent's share of picks over capacity / total capacity "
            "(1.0 = exactly proportional); round_robin and uniform_random ignore capacity by design",
            "rows": share_rows,
        },
    }


def _print(report: dict[str, Any]) -> None:
    print(
        f"{'discover':28} {'cached med':>11} {'p99':>9} {'lookup':>8} {'direct med':>11} {'p99':>9} {'x':>7}"
    )
    for name, r in report["discover"].items():
        c, d, lk = r["cached"], r["direct"], r["cache_lookup_only"]
        print(
            f"{name:28} {c['median_us']:9.1f}us {c['p99_us']:7.1f}us {lk['median_us']:6.1f}us"
            f" {d['median_us'] / 1000:9.2f}ms {d['p99_us'] / 1000:7.2f}ms {r['speedup_median']:7.1f}"
        )
    print("select_agent median (us):", {k: v["median_us"] for k, v in report["select_agent"].items()})
    for shape in PROPAGATION_SHAPES:
        p = report["propagation"].get(shape)
        if p is not None:
            times = {k: (v["median_ms"], v["p99_ms"]) for k, v in p.items() if isinstance(v, dict)}
            print(f"propagation {shape} ms (p50, p99):", times)
    for name, reads in report["propagation"].items():
        if name.startswith("consul_full_read"):
            cells = [f"{e} {r['bytes_on_the_wire'] // 1024} KB {r['median_ms']} ms" for e, r in reads.items()]
            print(f"{name}:", ", ".join(cells))
    for strategy, row in report["evenness"]["equal_agents"]["rows"].items():
        shares = report["evenness"]["capacities_1_to_4"]["rows"][strategy]
        print(f"  {strategy:16} max/mean {row['max_over_mean']:.3f}")
        for demand, share in shares.items():
            print(
                f"      {demand:20} by capacity {share['share_over_proportional_by_capacity']}"
                f"  worst agent {share['worst_agent_error']:.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, iterations=None)
    parser.add_argument("--large", action="store_true", help="add the 10,000-agent size (~3 minutes)")
    parser.add_argument("--events", type=int, default=50, help="changes of each kind for propagation")
    args = parser.parse_args(argv)
    sizes = [100, 1000] + ([10_000] if args.large else [])

    async def run(addr: str, dev_addr: str | None) -> dict[str, Any]:
        discover = await _discover(addr, sizes)
        select_agent = await _select(addr)
        async with aiohttp.ClientSession() as bare:
            for k in range(9):
                await _fill(bare, addr, f"spread{k}", 100, ttl=FLEET_TTL)
            propagation = {
                "one_type_of_1000": await _propagation(addr, "client1000", args.events),
                "ten_types_of_100": await _propagation(addr, "client100", args.events),
                "consul_full_read_of_1000_instances": await _full_read(addr, "agent-client1000"),
            }
            if dev_addr is not None:
                await _fill(bare, dev_addr, "client1000", 1000, ttl=FLEET_TTL)
                on_dev = await _propagation(dev_addr, "client1000", args.events)
                propagation["one_type_of_1000_dev_agent"] = on_dev
                dev_read = await _full_read(dev_addr, "agent-client1000")
                propagation["consul_full_read_of_1000_instances_dev_agent"] = dev_read
        return {"discover": discover, "select_agent": select_agent, "propagation": propagation}

    with (
        consul_address(args.consul_addr, dev_mode=False) as addr,
        contextlib.ExitStack() as stack,
    ):
        dev_addr = None if args.consul_addr else stack.enter_context(consul_address(None, dev_mode=True))
        results = asyncio.run(run(addr, dev_addr))
    results["evenness"] = _evenness()
    at_1000 = results["discover"]["discover_1000_filtered"]
    equal_rows = results["evenness"]["equal_agents"]["rows"]
    share_rows = results["evenness"]["capacities_1_to_4"]["rows"]
    targets = {
        "cached_median_us_at_1000_at_most": TARGET_CACHED_MEDIAN_US_AT_1000,
        "speedup_at_1000_at_least": TARGET_SPEEDUP_AT_1000,
        "propagation_p99_ms_at_most": TARGET_PROPAGATION_P99_MS,
        "evenness_max_over_mean_at_most": TARGET_EVENNESS,
        "capacity_share_error_at_most": TARGET_SHARE_ERROR,
        "met": {
            "cached_median_at_1000": at_1000["cached"]["median_us"] <= TARGET_CACHED_MEDIAN_US_AT_1000,
            "speedup_at_1000": at_1000["speedup_median"] >= TARGET_SPEEDUP_AT_1000,
            **{
                f"propagation_p99_{shape}": results["propagation"][shape]["all"]["p99_ms"]
                <= TARGET_PROPAGATION_P99_MS
                for shape in PROPAGATION_SHAPES
                if shape in results["propagation"]
            },
            "evenness_round_robin": equal_rows["round_robin"]["max_over_mean"] <= TARGET_EVENNESS,
            "evenness_weighted_random": equal_rows["weighted_random"]["max_over_mean"] <= TARGET_EVENNESS,
            **{
                f"capacity_share_{strategy}_{demand}": row["worst_agent_error"] <= TARGET_SHARE_ERROR
                for strategy in ("least_loaded", "power_of_two")
                for demand, row in share_rows[strategy].items()
            },
        },
    }
    where = args.consul_addr or "single server (server mode) started by the benchmark; a -dev agent beside it"
    write_report(
        args.output,
        results,
        consul=where,
        sizes=sizes,
        large_size_skipped=not args.large,
        targets=targets,
    )
    _print(results)
    print(f"targets: {targets['met']}  ->  {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
