"""Prometheus http_sd benchmark: GET /v1/prometheus/sd at 1,000 agents beside a plain discovery of them.

Run with ``python -m benchmarks.http_sd [--consul-addr URL] [--iterations N] [--agents N]``. Without an
address it starts its own dev Consul. The API runs in this process and is called over loopback HTTP, as a
Prometheus server polls it. Rows, each timed alternately with its neighbour (``compare``):

- ``http_sd_vs_agents_api``: the http_sd answer beside ``GET /v1/agents`` for the same agents (both from the
  API's cache): what building the target groups costs beside the discovery answer;
- ``http_sd_vs_direct_discovery``: the http_sd answer beside ``discover_agents(..., cached=False)`` in
  process, the plain discovery of the same agents asked of Consul.

Writes reports/bench-http-sd.json and prints a table.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._stats import benchmark_parser, compare, print_comparison, serve_app, write_report
from benchmarks._stats import consul_address as _consul_address
from consul_agents import AgentRegistration, AgentRegistry, DiscoveryRequest
from consul_agents.api import create_app

REPORT = Path("reports/bench-http-sd.json")
TYPE = "benchsd"


async def _each(agents: int, call: Any) -> None:
    """``call(i)`` for every agent, 16 at a time."""
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with semaphore:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(agents)))


async def _register(registry: AgentRegistry, agents: int) -> None:
    async def one(i: int) -> None:
        await registry.register_agent(
            AgentRegistration(
                agent_type=TYPE,
                agent_id=f"{TYPE}-{i}",
                capabilities=["plan"],
                endpoint=f"http://10.0.{i // 250}.{i % 250 + 1}:9000/v1",
                tags={"tier": "gold" if i % 2 else "silver"},
                ttl=3600,
            )
        )

    await _each(agents, one)


async def run(addr: str, iterations: int, agents: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with (
        serve_app(create_app(addr), access_log=None) as api,
        aiohttp.ClientSession() as http,
        AgentRegistry(addr) as registry,
    ):
        await _register(registry, agents)
        try:

            async def get(path: str) -> int:
                async with http.get(api + path) as response:
                    body = await response.json()
                    assert response.status == 200, body
                    return len(body)

            async def http_sd(_: int) -> None:
                assert await get(f"/v1/prometheus/sd?type={TYPE}") == agents

            async def agents_api(_: int) -> None:
                assert await get(f"/v1/agents?type={TYPE}") == agents

            async def direct(_: int) -> None:
                found = await registry.discover_agents(DiscoveryRequest(agent_type=TYPE), cached=False)
                assert len(found) == agents

            results["http_sd_vs_agents_api"] = await compare(http_sd, agents_api, iterations)
            results["http_sd_vs_direct_discovery"] = await compare(http_sd, direct, iterations)
        finally:
            await _each(agents, lambda i: registry.deregister_agent(f"{TYPE}-{i}"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, iterations=200)
    parser.add_argument("--agents", type=int, default=1000)
    args = parser.parse_args(argv)
    with _consul_address(args.consul_addr) as addr:
        results = asyncio.run(run(addr, args.iterations, args.agents))
    write_report(
        args.output,
        results,
        consul=args.consul_addr or "single server (server mode, state on disk) started by the benchmark",
        iterations=args.iterations,
        agents=args.agents,
        note="ours = GET /v1/prometheus/sd over loopback HTTP (cached); bare = GET /v1/agents (cached) or "
        "discover_agents(cached=False) in process, for the same agents",
    )
    print_comparison(results, "sd", "plain")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
