"""Batch, replacement and lease-retry benchmark: each figure beside its floor, interleaved in one run.

Run with ``python -m benchmarks.batch [--agents N] [--rounds N] [--iterations N]``. It starts a
single-server Consul with its state on disk (writes cost what they cost in production) and measures:

* ``register``: ``register_many`` of ``--agents`` agents (concurrency 8) against registering the same
  number one after the other with ``register_agent`` (the floor a caller without batches has), rounds
  alternating which goes first; ``deregister`` the same with ``deregister_many``;
* ``replace``: ``replace_agent(old, new_id)`` of an agent by an already passing one, against its floor: the
  reads and writes it cannot avoid done bare (``get_agent`` twice, ``set_draining``, ``deregister_agent``);
* ``lease``: ``async with registry.lease()`` (through the Lease object) against the one-agent lease it runs
  (``_lease_one``), and a retrying lease whose first attempt succeeds, all from the cache;

recording the load average before and after each section, and writes reports/bench-batch.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks._stats import (
    benchmark_parser,
    compare,
    load_average,
    print_results,
    run_on_consul,
    summary,
    write_report,
)
from benchmarks.writes import _registration
from consul_agents import AgentRegistry, SelectionCriteria

REPORT = Path("reports/bench-batch.json")


async def _register_section(registry: AgentRegistry, agents: int, rounds: int) -> dict[str, Any]:
    before = load_average()
    timings: dict[str, list[float]] = {
        "batch": [],
        "one_by_one": [],
        "batch_dereg": [],
        "one_by_one_dereg": [],
    }

    async def batch(r: int) -> None:
        items = [_registration("batch", f"batch-{r}-{i}") for i in range(agents)]
        started = time.perf_counter()
        result = await registry.register_many(items)
        timings["batch"].append(time.perf_counter() - started)
        assert result.ok, result.failed[:3]
        started = time.perf_counter()
        result = await registry.deregister_many([i.agent_id or "" for i in items])
        timings["batch_dereg"].append(time.perf_counter() - started)
        assert result.ok, result.failed[:3]

    async def one_by_one(r: int) -> None:
        items = [_registration("single", f"single-{r}-{i}") for i in range(agents)]
        started = time.perf_counter()
        for item in items:
            await registry.register_agent(item)
        timings["one_by_one"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for item in items:
            await registry.deregister_agent(item.agent_id or "")
        timings["one_by_one_dereg"].append(time.perf_counter() - started)

    for r in range(rounds):
        for fn in (batch, one_by_one) if r % 2 == 0 else (one_by_one, batch):
            await fn(r)

    def rate(name: str) -> dict[str, Any]:
        s = summary(timings[name])
        return {**s, "agents_per_s_median": round(agents / (s["median_ms"] / 1000), 1)}

    return {
        "agents_per_round": agents,
        "rounds": rounds,
        "register_many": rate("batch"),
        "register_one_by_one": rate("one_by_one"),
        "speedup_median": round(
            summary(timings["one_by_one"])["median_ms"] / summary(timings["batch"])["median_ms"], 2
        ),
        "deregister_many": rate("batch_dereg"),
        "deregister_one_by_one": rate("one_by_one_dereg"),
        "load_average_before": before,
        "load_average_after": load_average(),
    }


async def _replace_section(registry: AgentRegistry, iterations: int) -> dict[str, Any]:
    before = load_average()

    async def pair(tag: str, i: int) -> tuple[str, str]:
        old = await registry.register_agent(_registration("repl", f"{tag}-old-{i}"))
        new = await registry.register_agent(_registration("repl", f"{tag}-new-{i}"))
        return old, new

    pairs = {("ours", i): await pair("ours", i) for i in range(-20, iterations)}
    pairs.update({("bare", i): await pair("bare", i) for i in range(-20, iterations)})

    async def ours(i: int) -> None:
        old, new = pairs["ours", i]
        await registry.replace_agent(old, new, timeout=30, drain_timeout=5)

    async def bare(i: int) -> None:
        old, new = pairs["bare", i]
        await registry.get_agent(old)
        await registry.get_agent(new)
        await registry.set_draining(old, True)
        await registry.deregister_agent(old)

    result = await compare(ours, bare, iterations)
    await registry.deregister_many([new for (_, new) in pairs.values()])
    return {**result, "load_average_before": before, "load_average_after": load_average()}


async def _lease_section(registry: AgentRegistry, iterations: int) -> dict[str, Any]:
    before = load_average()
    ids = [await registry.register_agent(_registration("lease", f"lease-{i}")) for i in range(5)]
    criteria = SelectionCriteria(agent_type="lease")
    await registry.select_agent(criteria)  # the cache watches the type from here on

    async def lease(i: int) -> None:
        async with registry.lease(criteria):
            pass

    async def one(i: int) -> None:
        async with registry._lease_one(criteria):
            pass

    async def retrying(i: int) -> None:
        async for attempt in registry.lease(criteria, retries=2):
            async with attempt:
                pass

    results = {
        "lease_vs_lease_one": await compare(lease, one, iterations),
        "retrying_vs_lease_one": await compare(retrying, one, iterations),
    }
    await registry.deregister_many(ids)
    return {**results, "load_average_before": before, "load_average_after": load_average()}


async def run(addr: str, agents: int, rounds: int, iterations: int) -> dict[str, Any]:
    async with AgentRegistry(addr) as registry:
        return {
            "register": await _register_section(registry, agents, rounds),
            "replace": await _replace_section(registry, max(iterations // 10, 10)),
            "lease": await _lease_section(registry, iterations),
        }


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__ or "", REPORT, iterations=1000)
    parser.add_argument("--agents", type=int, default=200, help="agents per round of the register section")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of the register section")
    args = parser.parse_args(argv)
    results, context = run_on_consul(
        args, lambda addr, iterations: run(addr, args.agents, args.rounds, iterations)
    )
    print_results(results)
    write_report(args.output, results, **context, agents=args.agents)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
