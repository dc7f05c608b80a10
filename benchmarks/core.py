"""Registry core benchmark: our calls beside the same Consul calls on a bare reused aiohttp session.

Run with ``make bench`` (or ``python -m benchmarks.core [--consul-addr URL] [--iterations N]``). Without an
address it starts its own single-server Consul as deployed (state on disk: every write and heartbeat costs
what it costs in production), and then a ``-dev`` agent for one contrast row, ``heartbeat_on_dev_agent``.
Writes reports/bench-core.json and prints a table. Each pair of calls is timed alternately in the same
run, so the ratio is meaningful even on a noisy machine; each row records the load average around it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._stats import benchmark_parser, compare, print_comparison, run_on_consul, write_report
from consul_agents import AgentRegistration, AgentRegistry, AgentStatus, DiscoveryRequest
from consul_agents import _wire as wire
from consul_agents._models import utcnow

REPORT = Path("reports/bench-core.json")
TARGET_RATIO = 1.3
TARGET_REGISTER_P99_MS = 50.0


def _registration(agent_type: str, i: int, capabilities: list[str] | None = None) -> AgentRegistration:
    return AgentRegistration(
        agent_type=agent_type,
        capabilities=capabilities or ["plan", "summarize"],
        endpoint=f"http://127.0.0.1:{10000 + i % 50000}",
        tags={"tier": "gold" if i % 2 else "silver"},
        metadata={"model": "m1"},
        weight=10,
        agent_id=f"{agent_type}-{i}",
    )


async def _fill(
    session: aiohttp.ClientSession, addr: str, agent_type: str, count: int, ttl: timedelta | None = None
) -> None:
    """Register ``count`` agents of one type directly (setup, not measured); every tenth can 'rare'.
    ``ttl`` replaces the default TTL of their checks."""

    async def one(i: int) -> None:
        caps = ["plan", "rare"] if i % 10 == 0 else ["plan"]
        registration = _registration(agent_type, i, caps)
        if ttl is not None:
            registration = registration.model_copy(update={"ttl": ttl})
        body = wire.service_definition(registration, f"{agent_type}-{i}", load=0.1, heartbeat=utcnow())
        async with session.put(f"{addr}/v1/agent/service/register", json=body) as response:
            response.raise_for_status()

    for start in range(0, count, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))


async def _heartbeat_row(
    addr: str, iterations: int, bare: aiohttp.ClientSession, registry: AgentRegistry
) -> dict[str, Any]:
    """A TTL update with unchanged status and load (the steady-state cost), ours beside a bare PUT."""
    agent_id = await registry.register_agent(_registration("benchhb", 0))
    bare_body = json.dumps(wire.ttl_update(AgentStatus.PASSING))

    async def hb_ours(_: int) -> None:
        await registry.heartbeat(agent_id, load=0.0)

    async def hb_bare(_: int) -> None:
        url = f"{addr}/v1/agent/check/update/{wire.check_id(agent_id)}"
        async with bare.put(url, data=bare_body) as response:
            await response.read()

    return await compare(hb_ours, hb_bare, iterations)


async def dev_contrast(addr: str, iterations: int) -> dict[str, Any]:
    """The heartbeat row again on a ``-dev`` agent: a server rewrites the check's state file on disk on
    every TTL update (what Consul is deployed as, the main rows), a ``-dev`` agent keeps it in memory."""
    async with aiohttp.ClientSession() as bare, AgentRegistry(addr, cache=False) as registry:
        return {"heartbeat_on_dev_agent": await _heartbeat_row(addr, iterations, bare, registry)}


async def run(addr: str, iterations: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession() as bare, AgentRegistry(addr, cache=False) as registry:
        # register: the same service definition either way.
        async def reg_ours(i: int) -> None:
            await registry.register_agent(_registration("benchreg", i))

        async def reg_bare(i: int) -> None:
            body = wire.service_definition(
                _registration("benchbare", i), f"benchbare-{i}", load=0.0, heartbeat=utcnow()
            )
            async with bare.put(f"{addr}/v1/agent/service/register", data=json.dumps(body)) as response:
                await response.read()

        results["register"] = await compare(reg_ours, reg_bare, iterations)

        results["heartbeat"] = await _heartbeat_row(addr, iterations, bare, registry)

        # discover: a type with N agents; the same filtered /v1/health/service query either way.
        for size in (10, 100, 1000):
            agent_type = f"benchdisc{size}"
            await _fill(bare, addr, agent_type, size)
            for label, request in (
                (f"discover_{size}", DiscoveryRequest(agent_type=agent_type)),
                (f"discover_{size}_filtered", DiscoveryRequest(agent_type=agent_type, capabilities=["rare"])),
            ):
                expression = wire.filter_expression(request)

                async def disc_ours(_: int, request: DiscoveryRequest = request) -> None:
                    await registry.discover_agents(request)

                url = f"{addr}/v1/health/service/agent-{agent_type}"

                async def disc_bare(_: int, url: str = url, expression: str = expression) -> None:
                    async with bare.get(url, params={"filter": expression}) as response:
                        await response.json()

                rounds = max(20, iterations // (1 if size <= 100 else 10))
                results[label] = await compare(disc_ours, disc_bare, rounds, warmup=5)
                results[label]["agents"] = size

        # deregister: agents registered by this client (the bare side deregisters its own twins); no warm-up,
        # so each call removes the agent of the same number that register added.
        async def dereg_ours(i: int) -> None:
            await registry.deregister_agent(f"benchreg-{i}")

        async def dereg_bare(i: int) -> None:
            async with bare.put(f"{addr}/v1/agent/service/deregister/benchbare-{i}") as response:
                await response.read()

        results["deregister"] = await compare(dereg_ours, dereg_bare, iterations, warmup=0)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT)
    args = parser.parse_args(argv)
    results, context = run_on_consul(args, run)
    if args.consul_addr is None:
        contrast, _ = run_on_consul(args, dev_contrast, dev_mode=True)
        results.update(contrast)
    targets = {
        "ratio_median_at_most": TARGET_RATIO,
        "register_p99_ms_below": TARGET_REGISTER_P99_MS,
        "met": {
            "overhead": all(r["ratio_median"] <= TARGET_RATIO for r in results.values()),
            "register_p99": results["register"]["ours"]["p99_ms"] < TARGET_REGISTER_P99_MS,
        },
    }
    write_report(args.output, results, **context, targets=targets)
    print_comparison(results)
    print(f"targets: {targets['met']}  ->  {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
