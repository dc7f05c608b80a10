"""Pools benchmark: what the per-pool gauges cost a /metrics scrape at 1,000 agents over 10 types.

Run with ``python -m benchmarks.pools [--consul-addr URL] [--output PATH] [--iterations N]``. Without an
address it starts a single Consul server as Consul is deployed (``server: true``, state on disk). Writes
reports/bench-pools.json.

The REST API is served in process on loopback with two scrape routes: ``/metrics`` as it is now (the
process registry, the agents gauge and the pool gauges: a census plus one KV read per datacenter) and
``/metrics-baseline``, the handler as it was before pools (the process registry and the agents gauge from
the same census). Both are scraped over HTTP in alternating blocks, so drift on a shared machine hits both
alike; the load average is recorded before and after each section. Every type has pool settings in KV.
Reported: scrape time (median, p90, p99), body size and series count of each, and their difference.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from benchmarks._stats import benchmark_parser, consul_address, load_average, percentile, write_report
from benchmarks.core import _fill
from consul_agents import AgentRegistry, PoolSettings
from consul_agents._metrics import fleet_exposition
from consul_agents.api import create_app
from consul_agents.api._keys import VIEWS
from consul_agents.api._tokens import token_of

REPORT = Path("reports/bench-pools.json")
TYPES = 10
PER_TYPE = 100
BLOCKS = 10
FLEET_TTL = timedelta(days=1)


async def _baseline(request: web.Request) -> web.Response:
    """GET /metrics as it was before pools: the process registry and the agents gauge."""
    view = request.app[VIEWS].for_token(token_of(request))
    body = generate_latest(REGISTRY) + fleet_exposition(await view.census())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def _ms(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "n": len(ms),
        "median_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
    }


async def _scrape(http: aiohttp.ClientSession, url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    async with http.get(url) as response:
        body = await response.read()
        assert response.status == 200, body[:200]
    return time.perf_counter() - started, body


async def run(addr: str, iterations: int) -> dict[str, Any]:
    prefix = "pool"
    async with aiohttp.ClientSession() as bare:
        for n in range(TYPES):
            await _fill(bare, addr, f"{prefix}{n}", PER_TYPE, ttl=FLEET_TTL)
    async with AgentRegistry(addr) as registry:
        for n in range(TYPES):
            settings = PoolSettings(
                min_agents=1, max_agents=500, target_load=0.5, cost_per_agent_hour=0.1 * n
            )
            await registry.set_pool_settings(f"{prefix}{n}", settings)
    app = create_app(addr)
    app.router.add_get("/metrics-baseline", _baseline)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    urls = {
        "with_pools": f"http://127.0.0.1:{port}/metrics",
        "baseline": f"http://127.0.0.1:{port}/metrics-baseline",
    }
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 120
            while True:  # until the API's census (its cache) holds the whole fleet
                _, body = await _scrape(http, urls["baseline"])
                counted = sum(
                    float(line.rsplit(b" ", 1)[1])
                    for line in body.splitlines()
                    if line.startswith(b"consul_agents_agents{") and f'agent_type="{prefix}'.encode() in line
                )
                if counted >= TYPES * PER_TYPE:
                    break
                assert time.monotonic() < deadline, f"the API saw {counted} agents of {TYPES * PER_TYPE}"
                await asyncio.sleep(0.2)
            timings: dict[str, list[float]] = {name: [] for name in urls}
            bodies: dict[str, bytes] = {}
            before = load_average()
            per_block = max(iterations // BLOCKS, 1)
            for _ in range(BLOCKS):
                for name, url in urls.items():
                    for _ in range(per_block):
                        seconds, body = await _scrape(http, url)
                        timings[name].append(seconds)
                        bodies[name] = body
            after = load_average()
    finally:
        await runner.cleanup()
    rows = {
        name: {**_ms(timings[name]), "bytes": len(bodies[name]), "series": _series(bodies[name])}
        for name in urls
    }
    pool_series = sum(
        1 for line in bodies["with_pools"].splitlines() if line.startswith(b"consul_agents_pool_")
    )
    return {
        "fleet": {"agents": TYPES * PER_TYPE, "types": TYPES, "pools_with_settings": TYPES},
        "scrape": {"load_average_before": before, "load_average_after": after, "rows": rows},
        "pool_series": pool_series,
        "added": {
            "median_ms": round(rows["with_pools"]["median_ms"] - rows["baseline"]["median_ms"], 2),
            "series": rows["with_pools"]["series"] - rows["baseline"]["series"],
            "bytes": rows["with_pools"]["bytes"] - rows["baseline"]["bytes"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, iterations=200)
    args = parser.parse_args(argv)
    with consul_address(args.consul_addr, dev_mode=False) as addr:
        results = asyncio.run(run(addr, args.iterations))
    where = args.consul_addr or "single server (server mode, state on disk) started by the benchmark"
    write_report(args.output, results, consul=where)
    for name, row in results["scrape"]["rows"].items():
        print(
            f"{name:11} median {row['median_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
            f"  {row['series']:5} series  {row['bytes']:7} bytes"
        )
    print(
        f"pool gauges add {results['added']} ({results['pool_series']} pool series); "
        f"load {results['scrape']['load_average_before']} -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
