"""Child process for the liveness tests: keeps N session agents alive until it is killed.

Usage: ``python tests/liveness_child.py CONSUL_ADDR AGENT_TYPE N TTL [LIVENESS]`` (default ``process``);
prints ``READY`` once every agent is registered, then waits for ever (the test SIGKILLs it).
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from consul_agents import AgentRegistration, AgentRegistry


async def main(addr: str, agent_type: str, count: int, ttl: float, liveness: str = "process") -> None:
    async with AgentRegistry(addr, cache=False) as registry, AsyncExitStack() as stack:
        for i in range(count):
            registration = AgentRegistration(
                agent_type=agent_type,
                agent_id=f"{agent_type}-{i}",
                capabilities=["plan"],
                endpoint=f"http://127.0.0.1:{20000 + i}",
                ttl=ttl,
            )
            await stack.enter_async_context(registry.session(registration, liveness=liveness))  # type: ignore[arg-type]
        print("READY", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:6]))
