"""A stand-in sidecar: one process that registers an agent with ``AgentRegistry.session()`` and heartbeats
until it is killed. Prints ``ready <agent id>`` once registered.

    python -m benchmarks._session_process ADDR AGENT_TYPE AGENT_ID TTL_SECONDS
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from consul_agents import AgentRegistration, AgentRegistry


async def _run(addr: str, agent_type: str, agent_id: str, ttl: float) -> None:
    registration = AgentRegistration(
        agent_type=agent_type,
        capabilities=["plan"],
        endpoint="http://127.0.0.1:9000",
        agent_id=agent_id,
        ttl=timedelta(seconds=ttl),
        deregister_after=timedelta(minutes=1),
    )
    async with AgentRegistry(addr) as registry, registry.session(registration) as session:
        print(f"ready {session.agent_id}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    address, kind, ident, seconds = sys.argv[1:5]
    asyncio.run(_run(address, kind, ident, float(seconds)))
