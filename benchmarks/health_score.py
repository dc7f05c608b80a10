"""Health score benchmark: what scoring from history adds to each version and each cached read, in one run.

Run with ``python -m benchmarks.health_score [--consul-addr URL] [--output PATH]``. Without an address it
starts a single Consul server as Consul is deployed (``server: true``, state on disk) and registers 1,000
agents of one type (setup, not timed). Writes reports/bench-health-score.json.

Every pair is timed in interleaved blocks, so drift on a shared machine hits both alike, with the load
average recorded before and after each section:

* version: what the cache does with one version of the 1,000 agents (as read from Consul, one entry
  changed as by a load report), scores included (``HealthHistory.stamp`` then the indexed view) against
  the view alone, as before scores existed; with every agent steady, and with 100 of them flapping
  (their scores computed and their AgentInfos copied on every version).
* rescore: a cached ``discover_agents`` of the 1,000 agents when the scores are due again (a flapping
  agent's pass ratio moves with time: at most once per ``HealthPolicy.resolution`` per view), when no
  score moved by 0.01 (the view is kept) and when one did (the view and its answers are built again),
  against the same call when they are not due.
* selection: ``select_agent`` (weighted_random) among the 1,000 with 100 flapping agents against the same
  with all steady: a pick stays O(log n) over a list prepared once per version.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._stats import benchmark_parser, consul_address, load_average, write_report
from benchmarks.client import _us
from benchmarks.core import _fill
from benchmarks.floor import _pair as floor_pair
from consul_agents import AgentInfo, AgentRegistry, AgentStatus, DiscoveryRequest, SelectionCriteria
from consul_agents._cache import ServiceView
from consul_agents._health_score import HealthHistory

REPORT = Path("reports/bench-health-score.json")
FLEET = 1000
FLAPPING = 100
BLOCKS = 10
FLEET_TTL = timedelta(days=1)


def _sync_timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    import time

    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def _pair_sync(ours: Callable[[], Any], floor: Callable[[], Any], rounds: int) -> dict[str, Any]:
    ours_s: list[float] = []
    floor_s: list[float] = []
    for _ in range(BLOCKS):
        ours_s += _sync_timed(ours, rounds)
        floor_s += _sync_timed(floor, rounds)
    a, b = _us(ours_s), _us(floor_s)
    return {"ours": a, "floor": b, "ratio_median": round(a["median_us"] / b["median_us"], 2)}


#: Medians of ours and the floor in alternating blocks (benchmarks.floor), with this benchmark's block count.
_pair = partial(floor_pair, blocks=BLOCKS)


def _flapped(infos: list[AgentInfo], count: int) -> HealthHistory:
    """A history in which the first ``count`` agents went critical and back twice, a minute ago."""
    history = HealthHistory()
    history.stamp(infos, 0.0)
    critical = [a.model_copy(update={"status": AgentStatus.CRITICAL}) for a in infos[:count]]
    for now in (1.0, 3.0):
        history.stamp(critical + infos[count:], now)
        history.stamp(infos, now + 1)
    return history


def _version_rows(infos: list[AgentInfo]) -> dict[str, Any]:
    """One version as the cache sees it on a load report: the same AgentInfo objects but one."""
    moved = infos[FLEET // 2].model_copy(update={"current_load": 0.5})
    versions = [infos, [*infos[: FLEET // 2], moved, *infos[FLEET // 2 + 1 :]]]
    rows = {}
    for name, flapping in (("steady", 0), (f"{FLAPPING}_flapping", FLAPPING)):
        history = _flapped(infos, flapping)
        state = {"n": 0}

        def ours(history: HealthHistory = history, state: dict[str, int] = state) -> None:
            n = state["n"] = state["n"] + 1
            stamped = history.stamp(versions[n % 2], 60.0 + n, versions[(n + 1) % 2])
            ServiceView(stamped.agents)

        def floor(state: dict[str, int] = state) -> None:
            ServiceView(versions[state["n"] % 2])

        rows[f"version_of_{FLEET}_{name}"] = _pair_sync(ours, floor, 20)
    return rows


async def _section(run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    before = load_average()
    rows = await run()
    return {"load_average_before": before, "load_average_after": load_average(), "rows": rows}


async def _read_rows(registry: AgentRegistry, agent_type: str, infos: list[AgentInfo]) -> dict[str, Any]:
    cache = registry.discovery.cache
    request = DiscoveryRequest(agent_type=agent_type)
    await registry.discover_agents(request)
    (watched,) = [w for (_, name), w in cache._services.items() if name == f"agent-{agent_type}"]
    steady = HealthHistory()
    flapping = _flapped(infos, FLAPPING)

    async def due() -> None:
        watched.rescore_at = 0.0  # the scores are due: this read computes them again
        await registry.discover_agents(request)

    async def not_due() -> None:
        await registry.discover_agents(request)

    async def moved() -> None:
        watched.rescore_at = 0.0
        watched._scored = []  # as if a score had moved: the view and its answers are built again
        await registry.discover_agents(request)

    cache.health = flapping
    rows = {
        f"cached_discover_{FLEET}_rescore_due_nothing_moved": await _pair(due, not_due, 20),
        f"cached_discover_{FLEET}_rescore_due_scores_moved": await _pair(moved, not_due, 20),
    }

    criteria = SelectionCriteria(agent_type=agent_type, strategy="weighted_random")

    async def select_with(history: HealthHistory) -> None:
        if cache.health is not history:
            cache.health = history
            watched._score(cache.clock())
        await registry.select_agent(criteria)

    rows[f"select_weighted_random_{FLEET}_{FLAPPING}_flapping_vs_steady"] = await _pair(
        partial(select_with, flapping), partial(select_with, steady), 100
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, iterations=None)
    args = parser.parse_args(argv)
    agent_type = "score1000"

    async def run(addr: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as bare:
            await _fill(bare, addr, agent_type, FLEET, ttl=FLEET_TTL)
        async with AgentRegistry(addr) as registry:
            request = DiscoveryRequest(agent_type=agent_type)
            deadline = asyncio.get_running_loop().time() + 120
            while len(infos := await registry.discover_agents(request, cached=False)) != FLEET:
                assert asyncio.get_running_loop().time() < deadline, "the fleet did not register"
                await asyncio.sleep(0.5)

            async def version() -> dict[str, Any]:
                return _version_rows(infos)

            return {
                "version": await _section(version),
                "read": await _section(partial(_read_rows, registry, agent_type, infos)),
            }

    with consul_address(args.consul_addr, dev_mode=False) as addr:
        results = asyncio.run(run(addr))
    where = args.consul_addr or "single server (server mode, state on disk) started by the benchmark"
    write_report(args.output, results, consul=where)
    for section, body in results.items():
        for name, row in body["rows"].items():
            print(
                f"{section:8} {name:52} ours {row['ours']['median_us']:9.1f} us"
                f"  floor {row['floor']['median_us']:9.1f} us  x{row['ratio_median']}"
                f"  load {body['load_average_before']}"
            )
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
