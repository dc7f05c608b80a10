"""One check-output format, `<status>: <what shows it>`, whichever face reported the agent's health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import test_utils
from processes import FakeAgent, SidecarProcess, write_sidecar_file
from support import consul_get, eventually, registration

from consul_agents import AgentRegistry, AgentStatus


def output(addr: str, agent_id: str) -> str:
    """The check output on the Consul agent itself (the catalog copies an output-only change later)."""
    body, _ = consul_get(addr, "/v1/agent/checks")
    return str((body or {}).get(f"service:{agent_id}", {}).get("Output", ""))


async def test_library_and_rest_heartbeats_write_status_colon_reason(
    api: test_utils.TestClient[Any, Any], consul_addr: str, unique: str
) -> None:
    """A library heartbeat reads `passing: heartbeat`; a REST one the same, or `<status>: <its output>`."""
    async with AgentRegistry(consul_addr) as registry:
        for n in range(2):
            await registry.register_agent(registration(unique, agent_id=f"{unique}-{n}", ttl=60))
        try:
            await registry.heartbeat(f"{unique}-0", 0.1)
            assert output(consul_addr, f"{unique}-0") == "passing: heartbeat"
            await registry.heartbeat(f"{unique}-0", status=AgentStatus.WARNING, output="queue is long")
            assert output(consul_addr, f"{unique}-0") == "warning: queue is long"
            answer = await api.put(f"/v1/agents/{unique}-1/heartbeat", json={"load": 0.2})
            assert answer.status == 204
            assert output(consul_addr, f"{unique}-1") == "passing: heartbeat"
            answer = await api.put(
                f"/v1/agents/{unique}-1/heartbeat", json={"status": "critical", "output": "oom"}
            )
            assert answer.status == 204
            assert output(consul_addr, f"{unique}-1") == "critical: oom"
        finally:
            for n in range(2):
                await registry.deregister_agent(f"{unique}-{n}")


async def test_sidecar_probe_writes_status_colon_what_it_saw(
    consul_addr: str, unique: str, tmp_path: Path
) -> None:
    """The sidecar's verdict reads `passing: GET <url>: HTTP 200`; `critical: ...` when the probe fails."""
    agent = FakeAgent()
    config = write_sidecar_file(
        tmp_path / "sidecar.yaml",
        [
            {
                "agent_id": f"{unique}-1",
                "agent_type": unique,
                "capabilities": ["plan"],
                "endpoint": agent.endpoint,
                "health": {"interval": 0.5, "timeout": 0.4},
                "ttl": 5,
            }
        ],
    )
    sidecar = SidecarProcess(config, consul_addr, tmp_path / "sidecar.log")
    try:
        url = f"{agent.endpoint}/health"

        async def passing() -> bool:
            return output(consul_addr, f"{unique}-1") == f"passing: GET {url}: HTTP 200"

        await eventually(passing, 15, "the sidecar's passing output")
        agent.set(mode="status:503")

        async def critical() -> bool:
            return output(consul_addr, f"{unique}-1") == f"critical: GET {url}: HTTP 503, expected 200"

        await eventually(critical, 15, "the sidecar's critical output")
    finally:
        sidecar.close()
        agent.close()
        async with AgentRegistry(consul_addr) as registry:
            await registry.deregister_agent(f"{unique}-1")
