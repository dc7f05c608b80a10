"""A dev-mode Consul agent restarted under a fleet of sessions: it comes back empty, and each session's
next heartbeat finds its TTL check gone and re-registers the agent. Measures, per agent, the time from the
restarted agent being ready to the agent being back in the catalog and passing."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import aiohttp

from benchmarks._leader_loss import fleet_sessions
from benchmarks._stats import percentile
from benchmarks._steady import fleet_registration
from consul_agents import AgentRegistry
from consul_agents.dev import ConsulDevServer

__all__ = ["run_dev_restart"]


async def run_dev_restart(
    server: ConsulDevServer, *, prefix: str = "restart", agents: int = 100, interval: float = 1.0
) -> dict[str, Any]:
    """``agents`` sessions heartbeating every ``interval`` s (TTL 3 intervals) across one restart."""
    fleet = [
        fleet_registration(prefix, i, ttl=timedelta(seconds=3 * interval), agent_type=prefix)
        for i in range(agents)
    ]
    back_at: dict[str, float] = {}
    url = f"{server.http_addr}/v1/health/service/agent-{prefix}"
    async with (
        AgentRegistry(server.http_addr) as registry,
        fleet_sessions(registry, fleet) as sessions,
        aiohttp.ClientSession() as http,
    ):
        await asyncio.to_thread(server.restart)
        ready = time.monotonic()
        while len(back_at) < agents and time.monotonic() - ready < 30 * interval:
            async with http.get(url, params={"passing": ""}) as response:
                for entry in await response.json():
                    back_at.setdefault(entry["Service"]["ID"], time.monotonic() - ready)
            await asyncio.sleep(0.02)
        errors = sum(1 for s in sessions if s.last_error is not None)
    times = sorted(back_at.values()) or [float("nan")]
    return {
        "agents": agents,
        "heartbeat_interval_s": interval,
        "ttl_s": 3 * interval,
        "reregistered": len(back_at),
        "back_after_ready_s": {
            "p50": round(percentile(times, 50), 3),
            "p90": round(percentile(times, 90), 3),
            "max": round(max(times), 3),
        },
        "within_one_interval": sum(1 for t in times if t <= interval),
        "sessions_with_error_at_end": errors,
    }
