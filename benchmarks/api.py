"""REST API benchmark: what HTTP and JSON add on top of the library, per operation.

Run with ``consul-agents bench api`` or ``python -m benchmarks.api [--consul-addr URL] [--iterations N]``.
Without an address it starts its own single-server Consul (as deployed, state on disk). The API runs in this
process (aiohttp AppRunner on a free loopback port) and is called over real HTTP; each API call is timed
alternately with the same library call (``compare``: "ours" is the API, "bare" the library). Writes
reports/bench-api.json and prints a table.

``tokens_200_cycling``: discovery through the API by callers with 200 distinct tokens in turn, more than
the API keeps views for (64 by default), so nearly every request makes a new per-token view and releases
the least recently used one: requests per second, latency, and every answer that is not a 200 with the
agents (``errors``, which must be 0). ``--tokens-only`` runs only that row.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._stats import (
    benchmark_parser,
    compare,
    print_comparison,
    run_on_consul,
    serve_app,
    write_report,
)
from consul_agents import AgentRegistration, AgentRegistry, DiscoveryRequest, SelectionCriteria
from consul_agents.api import create_app

REPORT = Path("reports/bench-api.json")
AGENTS = 10
TOKENS = 200
TOKEN_REQUESTS = 4000
TOKEN_CONCURRENCY = 16


async def tokens_cycling(api: str, http: aiohttp.ClientSession, agent_type: str) -> dict[str, Any]:
    """GET /v1/agents by callers with TOKENS distinct tokens in turn, TOKEN_CONCURRENCY at a time."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue = iter(range(TOKEN_REQUESTS))

    async def caller() -> None:
        for n in queue:
            headers = {"X-Consul-Token": f"bench-token-{n % TOKENS}"}
            started = time.perf_counter()
            async with http.get(f"{api}/v1/agents?type={agent_type}", headers=headers) as response:
                body = await response.read()
                ok = response.status == 200 and body.count(b'"agent_id"') == AGENTS
            latencies.append(time.perf_counter() - started)
            if not ok:
                key = f"{response.status} {body[:80].decode(errors='replace')}"
                errors[key] = errors.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(TOKEN_CONCURRENCY)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "tokens": TOKENS,
        "requests": TOKEN_REQUESTS,
        "concurrency": TOKEN_CONCURRENCY,
        "requests_per_second": round(TOKEN_REQUESTS / elapsed, 1),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3),
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


async def run(addr: str, iterations: int, tokens_only: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with (
        serve_app(create_app(addr), access_log=None) as api,
        aiohttp.ClientSession() as http,
        AgentRegistry(addr) as registry,
    ):
        for i in range(AGENTS):
            await registry.register_agent(
                AgentRegistration(
                    agent_type="benchapi",
                    agent_id=f"benchapi-{i}",
                    capabilities=["plan"],
                    endpoint=f"http://127.0.0.1:{9000 + i}",
                    load=i / AGENTS,
                    ttl=300,
                )
            )

        if tokens_only:
            results["tokens_200_cycling"] = await tokens_cycling(api, http, "benchapi")
            for i in range(AGENTS):
                await registry.deregister_agent(f"benchapi-{i}")
            return results

        async def get_json(path: str) -> Any:
            async with http.get(api + path) as response:
                return await response.json()

        async def discover_api(_: int) -> None:
            await get_json("/v1/agents?type=benchapi&capability=plan")

        async def discover_lib(_: int) -> None:
            await registry.discover_agents(DiscoveryRequest(agent_type="benchapi", capabilities=["plan"]))

        results[f"discover_{AGENTS}"] = await compare(discover_api, discover_lib, iterations)

        async def select_api(_: int) -> None:
            async with http.post(api + "/v1/select", json={"agent_type": "benchapi"}) as response:
                await response.json()

        async def select_lib(_: int) -> None:
            await registry.select_agent(SelectionCriteria(agent_type="benchapi"))

        results["select"] = await compare(select_api, select_lib, iterations)

        async def heartbeat_api(_: int) -> None:
            async with http.put(api + "/v1/agents/benchapi-0/heartbeat", json={"load": 0.0}) as response:
                await response.read()

        async def heartbeat_lib(_: int) -> None:
            await registry.heartbeat("benchapi-0", 0.0)

        results["heartbeat"] = await compare(heartbeat_api, heartbeat_lib, iterations)

        async def metrics_api(_: int) -> None:
            async with http.get(api + "/metrics") as response:
                await response.read()

        async def health_api(_: int) -> None:
            async with http.get(api + "/health") as response:
                await response.read()

        # /metrics refreshes the agents gauge (four discoveries); /health is one Consul round trip.
        results["metrics_vs_health"] = await compare(metrics_api, health_api, max(20, iterations // 5))
        results["tokens_200_cycling"] = await tokens_cycling(api, http, "benchapi")
        for i in range(AGENTS):
            await registry.deregister_agent(f"benchapi-{i}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT)
    parser.add_argument("--tokens-only", action="store_true", help="only the 200-token row")
    args = parser.parse_args(argv)
    results, context = run_on_consul(
        args, lambda addr, iterations: run(addr, iterations, tokens_only=args.tokens_only)
    )
    write_report(
        args.output,
        results,
        **context,
        note="ours = through the REST API over loopback HTTP; bare = the same library call in process",
    )
    tokens = results.pop("tokens_200_cycling")
    print_comparison(results, "API", "lib")
    print("tokens_200_cycling:", {k: v for k, v in tokens.items() if k != "error_kinds"})
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
