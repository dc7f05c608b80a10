"""DNS and sidecar benchmark: what the DNS names and the sidecar's probe cost, and how fast a hang shows.

Run with ``make bench`` (or ``python -m benchmarks.dns_sidecar [--iterations N]``). It starts two WAN-joined
single-server datacenters (as deployed, state on disk) and an in-process aiohttp agent, then times,
alternately in the same run:

* ``dns_query_vs_service``: ``agent-T.plan.query.consul`` (the prepared query template) against
  ``plan.agent-T.service.consul``, both answered from the local datacenter (10 agents);
* ``dns_failover_vs_local``: a ``.query`` name answered from dc2 because dc1 has no match, against one
  answered from dc1;
* ``sidecar_probe_heartbeat``: one sidecar cycle for one agent (HTTP probe, then heartbeat) against the
  heartbeat alone;

and measures ``sidecar_round_200`` (one probe-and-heartbeat round over 200 agents, concurrently, as the
sidecar runs them) and ``hang_to_critical`` (from an agent hanging just before a probe to Consul's catalog
showing it critical, timeout 0.3 s; a hang that starts just after a probe adds up to one interval).
Writes reports/bench-dns-sidecar.json.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rdatatype
from aiohttp import web

from benchmarks._stats import benchmark_parser, compare, print_results, serve_app, summary, write_report
from consul_agents import AgentRegistration, AgentRegistry, AgentStatus
from consul_agents.dev import ConsulDevServer
from consul_agents.dns import query_dns_name, service_dns_name, setup_prepared_query
from consul_agents.sidecar.config import AgentSpec, parse_config
from consul_agents.sidecar.probe import probe

REPORT = Path("reports/bench-dns-sidecar.json")


async def _srv(port: int, name: str) -> int:
    response = await dns.asyncquery.udp(
        dns.message.make_query(name, dns.rdatatype.SRV), "127.0.0.1", port=port, timeout=3
    )
    count = sum(len(rrset) for rrset in response.answer)
    if count == 0:
        raise RuntimeError(f"no answer for {name}")
    return count


class _Agent:
    """An in-process agent whose /health can hang."""

    def __init__(self) -> None:
        self.hung = False

    async def health(self, request: web.Request) -> web.Response:
        if self.hung:
            await asyncio.sleep(3600)
        return web.json_response({"load": 0.25})


def _reg(agent_type: str, i: int, capabilities: list[str], port: int = 9000) -> AgentRegistration:
    return AgentRegistration(
        agent_type=agent_type,
        agent_id=f"{agent_type}-{i}",
        capabilities=capabilities,
        endpoint=f"http://127.0.0.1:{port + i}",
        ttl=3600,
    )


async def _dns(dc1: ConsulDevServer, dc2: ConsulDevServer, iterations: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    local_type, remote_type = f"b{uuid.uuid4().hex[:6]}", f"r{uuid.uuid4().hex[:6]}"
    async with AgentRegistry(dc1.http_addr) as local, AgentRegistry(dc2.http_addr) as remote:
        await setup_prepared_query(local.gateway)
        for i in range(10):
            await local.register_agent(_reg(local_type, i, ["plan"]))
            await remote.register_agent(_reg(remote_type, i, ["plan"]))
        deadline = time.monotonic() + 15
        while True:  # poll until both names answer (UDP answers carry at most 3 records by default)
            try:
                counts = [
                    await _srv(dc1.dns_port, query_dns_name(local_type, "plan")),
                    await _srv(dc1.dns_port, query_dns_name(remote_type, "plan")),
                ]
            except RuntimeError:
                counts = []
            if counts == [3, 3]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("DNS names did not answer with every agent in time")
            await asyncio.sleep(0.05)

        async def via_query(_: int) -> None:
            await _srv(dc1.dns_port, query_dns_name(local_type, "plan"))

        async def via_service(_: int) -> None:
            await _srv(dc1.dns_port, service_dns_name(local_type, "plan"))

        async def failover(_: int) -> None:
            await _srv(dc1.dns_port, query_dns_name(remote_type, "plan"))

        results["dns_query_vs_service"] = await compare(via_query, via_service, iterations)
        results["dns_failover_vs_local"] = await compare(failover, via_query, iterations)
    return results


async def _sidecar(server: ConsulDevServer, iterations: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    agent = _Agent()
    app = web.Application()
    app.router.add_get("/health", agent.health)
    async with serve_app(app, shutdown_timeout=0.1) as url:
        agent_type = f"s{uuid.uuid4().hex[:6]}"
        entries = [
            {
                "agent_id": f"{agent_type}-{i}",
                "agent_type": agent_type,
                "capabilities": ["plan"],
                "endpoint": url,
                "ttl": 2,
                "health": {"interval": 0.5, "timeout": 0.3, "load_field": "load"},
            }
            for i in range(200)
        ]
        config = parse_config(Path("bench.yaml"), {"agents": entries})
        async with AgentRegistry(server.http_addr) as registry, aiohttp.ClientSession() as session:
            for spec in config.agents:
                await registry.register_agent(spec.registration)
            first = config.agents[0]

            async def one(spec: AgentSpec) -> None:
                """One sidecar cycle for one agent: its probe, then its heartbeat."""
                result = await probe(session, spec)
                await registry.heartbeat(
                    spec.agent_id, result.load, status=result.status, output=result.output
                )

            async def cycle(_: int) -> None:
                await one(first)

            async def heartbeat_only(_: int) -> None:
                await registry.heartbeat(first.agent_id, 0.25, output="GET x: HTTP 200")

            results["sidecar_probe_heartbeat"] = await compare(cycle, heartbeat_only, iterations)

            rounds = []
            for _ in range(max(10, iterations // 20)):
                started = time.perf_counter()
                await asyncio.gather(*(one(spec) for spec in config.agents))
                rounds.append(time.perf_counter() - started)
            results["sidecar_round_200"] = summary(rounds)

            samples = []
            for _ in range(5):
                agent.hung = False
                await one(first)
                agent.hung = True
                started = time.perf_counter()
                while True:
                    # The sidecar's loop for this agent, at its interval, until the catalog shows critical.
                    tick = time.perf_counter()
                    await one(first)
                    seen = await registry.get_agent_status(first.agent_id)
                    if seen is AgentStatus.CRITICAL:
                        break
                    await asyncio.sleep(max(0.0, 0.5 - (time.perf_counter() - tick)))
                samples.append(time.perf_counter() - started)
            agent.hung = False
            results["hang_to_critical"] = summary(samples)
            for spec in config.agents:
                await registry.deregister_agent(spec.agent_id)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, REPORT, consul_addr=False, iterations=400)
    args = parser.parse_args(argv)
    # Two single servers as deployed (state on disk): the sidecar rows heartbeat, which costs a server a
    # write to disk per TTL update that a -dev agent does not pay.
    with (
        ConsulDevServer(datacenter="dc1", dev_mode=False) as dc1,
        ConsulDevServer(datacenter="dc2", dev_mode=False) as dc2,
    ):
        dc1.join_wan(dc2)
        dc1.wait_settled()
        results = asyncio.run(_dns(dc1, dc2, args.iterations))
        results |= asyncio.run(_sidecar(dc1, args.iterations))
    write_report(
        args.output,
        results,
        consul="two dev datacenters joined over WAN on loopback, started by the benchmark",
        iterations=args.iterations,
    )
    print_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
