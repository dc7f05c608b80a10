"""Time bounds and the transport: how far past its timeout each call ends against a hung Consul, and what
py-consul costs over a bare aiohttp session.

Run with ``python -m benchmarks.deadlines [--timeout 2] [--requests 2000]``. It starts its own single-server
Consul (as deployed, state on disk).

* overrun: the server is SIGSTOPped (it accepts connections and never answers); each call runs three
  times with ``timeout``; the worst time beyond ``timeout`` is reported per call.
* transport: the same GET sent ``requests`` times through :class:`ConsulGateway`, through the py-consul
  asyncio client inside it alone, and through one bare reused ``aiohttp.ClientSession`` with the same
  headers, in turn; the median and p99 of each, for ``/v1/status/leader`` and ``/v1/health/service`` with
  10 instances.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from benchmarks._stats import load_average
from consul_agents import (
    AgentRegistration,
    AgentRegistry,
    ConsulAgentsError,
    DiscoveryRequest,
    SelectionCriteria,
)
from consul_agents.dev import ConsulDevServer


def _agent(agent_id: str, **fields: Any) -> AgentRegistration:
    return AgentRegistration(
        agent_type="bench", capabilities=["c"], endpoint="http://127.0.0.1:1", agent_id=agent_id, **fields
    )


async def overrun(server: ConsulDevServer, timeout: float) -> dict[str, float]:
    """Worst seconds past ``timeout`` of each call against the frozen ``server``."""
    async with AgentRegistry(server.http_addr, timeout=timeout) as registry:
        await registry.register_agent(_agent("bench-1"))
        for _ in range(200):  # until the catalog has it (10 s at most)
            if await registry.discover_agents(DiscoveryRequest(agent_type="bench"), cached=False):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the registered agent never reached the catalog")
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get_agent": lambda: registry.get_agent("other-1"),
            "discover direct": lambda: registry.discover_agents(
                DiscoveryRequest(agent_type="bench"), cached=False
            ),
            "discover cached (new type)": lambda: registry.discover_agents(
                DiscoveryRequest(agent_type="new")
            ),
            "select_agent direct": lambda: registry.select_agent(
                SelectionCriteria(agent_type="bench"), cached=False
            ),
            "register_agent (metadata in KV)": lambda: registry.register_agent(
                _agent("bench-2", metadata={"notes": "x" * 3000})
            ),
            "heartbeat": lambda: registry.heartbeat("bench-1", 0.5),
            "deregister_agent": lambda: registry.deregister_agent("bench-1"),
        }
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        worst: dict[str, float] = {}
        try:
            for name, call in calls.items():
                for _ in range(3):
                    started = time.monotonic()
                    with contextlib.suppress(ConsulAgentsError):
                        await call()
                    worst[name] = max(worst.get(name, 0.0), time.monotonic() - started - timeout)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        return worst


async def transport(server: ConsulDevServer, requests: int) -> dict[str, dict[str, float]]:
    """Median and p99 (ms) of the same GETs through the gateway and through bare aiohttp."""
    results: dict[str, dict[str, float]] = {}
    async with AgentRegistry(server.http_addr) as registry, aiohttp.ClientSession() as session:
        for i in range(10):
            await registry.register_agent(_ten(i))
        gateway = registry.gateway
        headers = {"Accept-Encoding": "identity"}
        for label, path in (
            ("status/leader", "/v1/status/leader"),
            ("health 10", "/v1/health/service/agent-ten"),
        ):
            timings: dict[str, list[float]] = {"gateway": [], "py-consul": [], "aiohttp": []}
            http = gateway._http
            assert http is not None
            for _ in range(requests):
                started = time.perf_counter()
                await gateway.get("bench", path, decode=str)
                timings["gateway"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await http.get(lambda r: r, path, headers=headers, connections_timeout=10.0)
                timings["py-consul"].append(time.perf_counter() - started)
                started = time.perf_counter()
                async with session.get(server.http_addr + path, headers=headers) as response:
                    await response.text()
                timings["aiohttp"].append(time.perf_counter() - started)
            for client, values in timings.items():
                values.sort()
                results[f"{label} {client}"] = {
                    "median_ms": statistics.median(values) * 1000,
                    "p99_ms": values[int(len(values) * 0.99) - 1] * 1000,
                }
    return results


def _ten(i: int) -> AgentRegistration:
    return AgentRegistration(
        agent_type="ten", capabilities=["c"], endpoint=f"http://127.0.0.1:{2000 + i}", agent_id=f"ten-{i}"
    )


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deadlines")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    with ConsulDevServer(dev_mode=False) as server:  # as deployed: writes cost what they cost there
        server.wait_settled()
        print(f"load average {load_average()}")
        for name, value in (await transport(server, args.requests)).items():
            print(f"transport {name:24s} median {value['median_ms']:.3f} ms  p99 {value['p99_ms']:.3f} ms")
        print(f"load average {load_average()}")
        for name, seconds in (await overrun(server, args.timeout)).items():
            print(f"overrun   {name:32s} worst {seconds * 1000:.0f} ms past timeout={args.timeout:g}s")
        print(f"load average {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
