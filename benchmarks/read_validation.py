"""What reading Consul's answers as untrusted input costs: 1,000 agents, before and after, in one run.

Run with ``python -m benchmarks.read_validation [--consul-addr URL] [--baseline REV] [--iterations N]``.
Writes reports/bench-read-validation.json and prints a summary.

Method. The conversion of health entries into AgentInfos *before* the read path validated them is loaded
from git (``git show REV:consul_agents/_wire.py``, REV by default the commit this work started from) as a
module of its own, beside today's ``_wire_read``. Then, on the same entries of one Consul, in one process,
timed alternately so that drift on a noisy machine hits both alike:

* conversion only: the 1,000 entries of one ``/v1/health/service`` answer, decoded once, converted by the
  old ``entries_to_infos`` and by today's ``read_entries``;
* direct discovery end to end (``discover_agents(cached=False)``: request, Consul, decoding, conversion,
  filtering), with the registry's conversion swapped between the old and the new one;
* cached discovery: a cached answer never converts (it is a lookup in views built when a watch delivers),
  so the cost shows where a view is built: what a watch does with an answer whose 1,000 entries are all
  new (split the text, decode each piece, convert), old against new; the first answer of a fresh cached
  client end to end (start a watch, read, convert); and the steady cached answer, which converts nothing.

Consul: a single server started as Consul is deployed (``server: true``) unless ``--consul-addr`` is given.
"""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from benchmarks._stats import benchmark_parser, consul_address, load_average, percentile, write_report
from benchmarks.client import FLEET_TTL
from benchmarks.core import _fill
from consul_agents import AgentRegistry, DiscoveryRequest
from consul_agents import _wire as wire
from consul_agents import _wire_read as wire_read

REPORT = Path("reports/bench-read-validation.json")
#: The commit this work started from: its conversion is the "before".
BASELINE = "c92be53"
AGENTS = 1000
AGENT_TYPE = "readval"


def old_wire(rev: str) -> ModuleType:
    """``consul_agents/_wire.py`` as it was at ``rev``, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{rev}:consul_agents/_wire.py"], check=True, capture_output=True, text=True
    ).stdout
    spec = importlib.util.spec_from_loader("consul_agents._wire_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{rev}:consul_agents/_wire.py", "exec"), module.__dict__)
    return module


def old_read_entries(old: ModuleType) -> Callable[..., list[Any]]:
    """The old conversion behind today's ``read_entries`` signature (None for services not agents)."""

    def read_entries(entries: Any, *, kv_metadata: Any = None, staleness: float = 0.0) -> list[Any]:
        kv = kv_metadata or {}
        return [
            old.entry_to_info(e, kv_metadata=kv.get(e["Service"]["ID"]), staleness=staleness)
            if old.is_agent_service(e["Service"]["Service"])
            else None
            for e in entries
        ]

    return read_entries


@contextmanager
def conversion(read_entries: Callable[..., list[Any]]) -> Iterator[None]:
    """The registry's conversion (direct and cached alike) replaced while the block runs."""
    saved = wire_read.read_entries
    wire_read.read_entries = read_entries  # type: ignore[assignment]
    try:
        yield
    finally:
        wire_read.read_entries = saved  # type: ignore[assignment]


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples) * 1000, 3),
        "p99_ms": round(percentile(samples, 99) * 1000, 3),
    }


async def alternate(
    variants: dict[str, Callable[[], Awaitable[Any]]],
    rounds: int,
    setup: Callable[[str], AbstractContextManager[Any]] = lambda _: nullcontext(),
) -> dict[str, Any]:
    """Time each variant ``rounds`` times, alternating the order every round, each inside ``setup(name)``;
    medians, p99s and the ratio of medians (after / before)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    load_before = load_average()
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            with setup(name):
                started = time.perf_counter()
                await variants[name]()
                samples[name].append(time.perf_counter() - started)
    result: dict[str, Any] = {name: _ms(values) for name, values in samples.items()}
    result["ratio_median"] = round(result["after"]["median_ms"] / result["before"]["median_ms"], 3)
    result["load_average_before"] = load_before
    result["load_average_after"] = load_average()
    return result


async def run(addr: str, rounds: int, baseline: str) -> dict[str, Any]:
    old = old_wire(baseline)
    before, after = old_read_entries(old), wire_read.read_entries
    async with aiohttp.ClientSession() as bare:
        await _fill(bare, addr, AGENT_TYPE, AGENTS, ttl=FLEET_TTL)
        async with bare.get(f"{addr}/v1/health/service/agent-{AGENT_TYPE}") as response:
            text = await response.text()
    entries = wire.health_entries(text)
    assert isinstance(entries, list) and len(entries) == AGENTS, "the fleet did not reach the catalog"
    assert [i.agent_id for i in before(entries)] == [i.agent_id for i in wire_read.infos_only(after(entries))]

    async def convert_before() -> None:
        before(entries)

    async def convert_after() -> None:
        after(entries)

    pieces = wire.split_health_entries(text)
    assert pieces is not None, "the answer is not laid out as Consul writes it"

    def fill(read_entries: Callable[..., list[Any]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:  # what a watch does with an answer it has never seen: every piece is new
            read_entries([wire.health_entry(piece) for piece in pieces])

        return run

    results: dict[str, Any] = {
        "conversion_only": await alternate({"before": convert_before, "after": convert_after}, rounds),
        "cache_fill_conversion": await alternate({"before": fill(before), "after": fill(after)}, rounds),
    }
    swap = {"before": before, "after": after}
    request = DiscoveryRequest(agent_type=AGENT_TYPE)
    async with AgentRegistry(addr, cache=False) as direct:

        async def discover_direct() -> None:
            assert len(await direct.discover_agents(request)) == AGENTS

        results["direct_discover"] = await alternate(
            {"before": discover_direct, "after": discover_direct}, rounds, lambda name: conversion(swap[name])
        )

    async def first_cached_answer() -> None:
        async with AgentRegistry(addr, cache=True) as cached:
            assert len(await cached.discover_agents(request)) == AGENTS

    results["cached_first_answer"] = await alternate(
        {"before": first_cached_answer, "after": first_cached_answer},
        max(rounds // 2, 10),
        lambda name: conversion(swap[name]),
    )
    async with AgentRegistry(addr, cache=True) as cached:
        await cached.discover_agents(request)
        steady: list[float] = []
        for _ in range(2000):
            started = time.perf_counter()
            await cached.discover_agents(request)
            steady.append(time.perf_counter() - started)
        results["cached_steady_answer_after"] = _ms(steady)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__ or "", REPORT, iterations=60)
    parser.add_argument("--baseline", default=BASELINE, help="the git revision whose conversion is 'before'")
    args = parser.parse_args(argv)
    with consul_address(args.consul_addr, dev_mode=False) as addr:
        results = asyncio.run(run(addr, args.iterations, args.baseline))
    write_report(
        args.output,
        results,
        consul=args.consul_addr or "server started by the benchmark",
        baseline=args.baseline,
        agents=AGENTS,
        rounds=args.iterations,
    )
    for name, row in results.items():
        if "before" in row:
            b, a = row["before"], row["after"]
            print(
                f"{name:22} before {b['median_ms']:8.3f} ms (p99 {b['p99_ms']:8.3f})  "
                f"after {a['median_ms']:8.3f} ms (p99 {a['p99_ms']:8.3f})  ratio {row['ratio_median']:.3f}"
            )
        else:
            print(f"{name:22} median {row['median_ms']:8.3f} ms (p99 {row['p99_ms']:8.3f})")
    print(f"report: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
