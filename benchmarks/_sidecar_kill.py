"""A sidecar killed with SIGKILL: how long until its agent is critical, and until Consul reaps it.

The sidecar cannot deregister when it is SIGKILLed, so only Consul's TTL check and
DeregisterCriticalServiceAfter (one minute, Consul's minimum) clean up. The "sidecar" is a process that
runs ``AgentRegistry.session()`` (benchmarks/_session_process.py), which is what a sidecar does for its agent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import aiohttp

__all__ = ["run_sidecar_kill"]


async def _checks(http: aiohttp.ClientSession, addr: str, service: str) -> dict[str, str]:
    """Service ID -> status of its TTL check, from the catalog."""
    async with http.get(f"{addr}/v1/health/checks/{service}") as response:
        body = await response.json()
    return {c["ServiceID"]: c["Status"] for c in body if c["CheckID"].startswith("service:")}


async def run_sidecar_kill(
    addr: str, agent_type: str, *, sidecars: int = 3, ttl: float = 2.0, reap_timeout: float = 150.0
) -> dict[str, Any]:
    """Start ``sidecars`` processes, SIGKILL them together after a few heartbeats, and time the agents'
    fall to critical and their removal (each measured from the kill)."""
    service = f"agent-{agent_type}"
    ids = [f"{agent_type}-{i}" for i in range(sidecars)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks._session_process",
            addr,
            agent_type,
            agent_id,
            str(ttl),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for agent_id in ids
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line.startswith(b"ready"):
                raise RuntimeError(f"sidecar stand-in did not start: {line!r}")
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while set((await _checks(http, addr, service)).items()) != {(i, "passing") for i in ids}:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sidecars' agents did not all pass")
                await asyncio.sleep(0.05)
            await asyncio.sleep(2 * ttl)  # a few heartbeats, so the kill lands at a random point of the cycle
            killed = time.monotonic()
            for proc in procs:
                proc.send_signal(signal.SIGKILL)
            critical: dict[str, float] = {}
            reaped: dict[str, float] = {}
            while len(reaped) < len(ids) and time.monotonic() - killed < reap_timeout:
                checks = await _checks(http, addr, service)
                now = time.monotonic() - killed
                for agent_id in ids:
                    status = checks.get(agent_id)
                    if status is None:
                        reaped.setdefault(agent_id, now)
                        critical.setdefault(agent_id, now)
                    elif status == "critical":
                        critical.setdefault(agent_id, now)
                await asyncio.sleep(0.05 if len(critical) < len(ids) else 0.5)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    return {
        "sidecars": sidecars,
        "ttl_s": ttl,
        "deregister_critical_service_after_s": 60,
        "critical_after_kill_s": {a: round(t, 2) for a, t in critical.items()},
        "reaped_after_kill_s": {a: round(t, 1) for a, t in reaped.items()},
        "reaped_after_critical_s": {a: round(reaped[a] - critical[a], 1) for a in reaped if a in critical},
        "not_reaped": [a for a in ids if a not in reaped],
    }
