"""Write-path benchmark: what the identity and integrity checks cost registrations and heartbeats.

Run with ``python -m benchmarks.writes [--agents N] [--iterations N]``. It starts a single-server Consul (its
state on disk, as deployed: heartbeats cost what they cost in production), registers ``--agents`` agents of
another type so that the catalog-wide id check has a fleet to scan, then times, alternately in the same run:

* ``register_new``: registering a new agent id with the check of who holds the id (two filtered reads:
  the local agent's services and ``/v1/health/state/any``) against the same registration without it;
* ``heartbeat``: heartbeats of an agent verified every 12 heartbeats (the default) against one never
  verified;
* ``verify_registration``: one verification alone (a read-only ``PUT /v1/txn``), against a TTL update;
* ``local_service_read``: the local agent read a load publication now makes first, against a TTL update;

and writes reports/bench-writes.json.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks._stats import benchmark_parser, compare, print_results, run_on_consul, write_report
from consul_agents import AgentRegistration, AgentRegistry
from consul_agents import _integrity as integrity
from consul_agents import _wire as wire
from consul_agents._models import utcnow

REPORT = Path("reports/bench-writes.json")


def _registration(agent_type: str, agent_id: str) -> AgentRegistration:
    return AgentRegistration(
        agent_type=agent_type,
        agent_id=agent_id,
        capabilities=["plan"],
        endpoint="http://127.0.0.1:9000",
        ttl=3600,
    )


async def _fill(registry: AgentRegistry, agents: int) -> None:
    """``agents`` agents of type "fleet", registered 32 at a time."""
    gateway = registry.gateway

    async def one(i: int) -> None:
        registration = _registration("fleet", f"fleet-{i}")
        body = wire.service_definition(registration, f"fleet-{i}", load=0.0, heartbeat=utcnow())
        await gateway.put("fill", "/v1/agent/service/register", body)

    for start in range(0, agents, 32):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 32, agents))))


async def run(addr: str, iterations: int, agents: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with AgentRegistry(addr, cache=False) as registry:
        await _fill(registry, agents)

        async def checked(i: int) -> None:
            await registry.register_agent(_registration("bench", f"checked-{i}"))

        async def unchecked(i: int) -> None:
            with mock.patch.object(integrity, "id_holder", return_value=None):
                await registry.register_agent(_registration("bench", f"unchecked-{i}"))

        results["register_new"] = await compare(checked, unchecked, iterations)

        verified = await registry.register_agent(_registration("bench", "verified"))
        async with AgentRegistry(addr, cache=False) as plain:
            plain.verify_every = 0
            unverified = await plain.register_agent(_registration("bench", "unverified"))
            results["heartbeat"] = await compare(
                lambda i: registry.heartbeat(verified), lambda i: plain.heartbeat(unverified), iterations * 4
            )
        results["verify_registration"] = await compare(
            lambda i: registry.verify_registration(verified),
            lambda i: registry.gateway.put(
                "ttl", f"/v1/agent/check/update/service:{verified}", {"Status": "passing", "Output": ""}
            ),
            iterations,
        )
        # What publishing a load now reads first: the local agent's entry for the id (no Raft, no server).
        results["local_service_read"] = await compare(
            lambda i: registry.gateway.get("read", f"/v1/agent/service/{verified}"),
            lambda i: registry.gateway.put(
                "ttl", f"/v1/agent/check/update/service:{verified}", {"Status": "passing", "Output": ""}
            ),
            iterations,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__ or "", REPORT)
    parser.add_argument("--agents", type=int, default=1000, help="agents of another type in the catalog")
    args = parser.parse_args(argv)
    results, context = run_on_consul(args, lambda addr, iterations: run(addr, iterations, args.agents))
    print_results(results)
    write_report(args.output, results, **context, agents=args.agents)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
