"""A sidecar killed with SIGKILL: how long until its agent is critical, and until Consul reaps it.

Each sidecar is a real ``consul-agents sidecar FILE`` process for one agent; the agents themselves are one
small HTTP server in this process that answers the sidecars' health probes, and it stays up: only the
sidecars die. A SIGKILLed sidecar cannot deregister, so only Consul's TTL check and
DeregisterCriticalServiceAfter (one minute, Consul's minimum) clean up after it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["run_sidecar_kill"]


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"load": 0.1})


def _sidecar_file(folder: Path, agent_type: str, agent_id: str, port: int, ttl: float) -> Path:
    """A sidecar YAML file (JSON is YAML) for one agent, probed every third of the TTL."""
    spec = {
        "agents": [
            {
                "agent_id": agent_id,
                "agent_type": agent_type,
                "capabilities": ["plan"],
                "endpoint": f"http://127.0.0.1:{port}",
                "ttl": ttl,
                "deregister_after": 60,
                "health": {"interval": ttl / 3, "timeout": ttl / 6, "load_field": "load"},
            }
        ]
    }
    path = folder / f"{agent_id}.yaml"
    path.write_text(json.dumps(spec))
    return path


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
    app = web.Application()
    app.router.add_get("/health", _health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    folder = Path(tempfile.mkdtemp(prefix="sidecar-kill-"))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consul_agents.cli",
            "sidecar",
            str(_sidecar_file(folder, agent_type, agent_id, port, ttl)),
            "-http-addr",
            addr,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for agent_id in ids
    ]
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while set((await _checks(http, addr, service)).items()) != {(i, "passing") for i in ids}:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sidecars' agents did not all pass within 30 s")
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
        await runner.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "sidecars": sidecars,
        "sidecar": "consul-agents sidecar FILE (one process per agent)",
        "ttl_s": ttl,
        "deregister_critical_service_after_s": 60,
        "critical_after_kill_s": {a: round(t, 2) for a, t in critical.items()},
        "reaped_after_kill_s": {a: round(t, 1) for a, t in reaped.items()},
        "reaped_after_critical_s": {a: round(reaped[a] - critical[a], 1) for a in reaped if a in critical},
        "not_reaped": [a for a in ids if a not in reaped],
    }
