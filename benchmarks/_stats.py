"""Timing helpers shared by the benchmark reports: interleaved runs, medians and p99s, ratios."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from consul_agents.dev import ConsulDevServer

__all__ = [
    "benchmark_parser",
    "compare",
    "consul_address",
    "load_average",
    "percentile",
    "print_comparison",
    "print_results",
    "run_on_consul",
    "serve_app",
    "summary",
    "write_report",
]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_s: list[float]) -> dict[str, float]:
    """Median, p99 and mean in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


async def compare(
    ours: Callable[[int], Awaitable[Any]],
    bare: Callable[[int], Awaitable[Any]],
    iterations: int,
    warmup: int = 20,
) -> dict[str, Any]:
    """Time ``ours(i)`` and ``bare(i)`` alternately, so drift on a noisy machine hits both alike; the
    machine's load average before and after goes with the figures (a row taken on a loaded machine says
    so beside itself)."""
    load_before = load_average()
    for i in range(warmup):
        await ours(-1 - i)
        await bare(-1 - i)
    ours_s: list[float] = []
    bare_s: list[float] = []
    for i in range(iterations):
        for fn, sink in ((ours, ours_s), (bare, bare_s)) if i % 2 == 0 else ((bare, bare_s), (ours, ours_s)):
            started = time.perf_counter()
            await fn(i)
            sink.append(time.perf_counter() - started)
    ours_sum, bare_sum = summary(ours_s), summary(bare_s)
    return {
        "ours": ours_sum,
        "bare": bare_sum,
        "ratio_median": round(ours_sum["median_ms"] / bare_sum["median_ms"], 3),
        "ratio_p99": round(ours_sum["p99_ms"] / bare_sum["p99_ms"], 3),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (other processes share the CPUs being measured)."""
    return [round(x, 2) for x in os.getloadavg()]


def write_report(path: Path, results: dict[str, Any], **context: Any) -> None:
    report = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": load_average(),
        },
        **context,
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


@contextmanager
def consul_address(addr: str | None, *, dev_mode: bool = False) -> Iterator[str]:
    """``addr`` itself, or the address of an agent started (and past its warm-up) for the benchmark: a
    single server as Consul is deployed (its state on disk, and its answers written compact, where a
    ``-dev`` agent indents every answer), or with ``dev_mode`` a ``-dev`` agent, for a contrast row."""
    if addr is not None:
        yield addr
        return
    with ConsulDevServer(dev_mode=dev_mode) as server:
        server.wait_settled()
        yield server.http_addr


@asynccontextmanager
async def serve_app(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """``app`` served in this process on a free loopback port, by its base URL, until the block ends."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def run_on_consul(
    args: argparse.Namespace,
    run: Callable[[str, int], Coroutine[Any, Any, dict[str, Any]]],
    *,
    dev_mode: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``run(addr, iterations)`` against ``--consul-addr`` or a Consul started for it: a single server as
    Consul is deployed (state on disk: a TTL update rewrites a file there, 1.0 to 1.4 ms of Consul's CPU
    here, see benchmarks.liveness), or with ``dev_mode`` a ``-dev`` agent; its results, and the report's
    context saying which Consul and how many iterations."""
    with consul_address(args.consul_addr, dev_mode=dev_mode) as addr:
        results = asyncio.run(run(addr, args.iterations))
    started = "-dev agent" if dev_mode else "single server (server mode, state on disk)"
    where = args.consul_addr or f"{started} started by the benchmark"
    return results, {"consul": where, "iterations": args.iterations}


def print_results(results: dict[str, Any]) -> None:
    """The results as indented JSON, for the benchmarks without a table."""
    json.dump(results, sys.stdout, indent=2)
    print()


def print_comparison(results: dict[str, Any], ours: str = "ours", bare: str = "bare") -> None:
    """The table of :func:`compare` results: medians, ratio of medians, p99s."""
    width = max([9, *map(len, results)]) + 1
    print(
        f"{'operation':{width}} {ours + ' med':>9} {bare + ' med':>9} {'ratio':>6} {ours + ' p99':>9}"
        f" {bare + ' p99':>9}"
    )
    for name, row in results.items():
        a, b = row["ours"], row["bare"]
        print(
            f"{name:{width}} {a['median_ms']:9.3f} {b['median_ms']:9.3f} {row['ratio_median']:6.2f}"
            f" {a['p99_ms']:9.3f} {b['p99_ms']:9.3f}"
        )


def benchmark_parser(
    doc: str, report: Path, *, consul_addr: bool = True, iterations: int | None = 300
) -> argparse.ArgumentParser:
    """The options benchmarks share: ``--output``, and ``--consul-addr`` and ``--iterations`` when asked."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if consul_addr:
        parser.add_argument("--consul-addr", help="use this Consul (default: start a dev agent)")
    if iterations is not None:
        parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--output", type=Path, default=report)
    return parser
