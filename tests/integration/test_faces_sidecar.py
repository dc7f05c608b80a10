"""The sidecar against agents that answer anything: a real `consul-agents sidecar` process, real agent
processes and real Consul. Nothing an agent sends stops the sidecar, and its exit always deregisters."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import FakeAgent, SidecarProcess, write_sidecar_file
from support import consul_get, eventually


@pytest.fixture
def agents() -> Iterator[list[FakeAgent]]:
    started: list[FakeAgent] = []
    yield started
    for fake in started:
        fake.close()


def entry(agent_type: str, agent_id: str, endpoint: str) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "agent_type": agent_type,
        "capabilities": ["plan"],
        "endpoint": endpoint,
        "ttl": 2,
        "health": {"interval": 0.5, "timeout": 0.4, "load_field": "load"},
    }


def statuses(addr: str, agent_type: str) -> dict[str, str]:
    """agent id -> the status of its TTL check, as Consul's catalog holds it."""
    body, _ = consul_get(addr, f"/v1/health/service/agent-{agent_type}")
    found = {}
    for item in body or []:
        checks = [c["Status"] for c in item["Checks"] if c["CheckID"] == f"service:{item['Service']['ID']}"]
        found[item["Service"]["ID"]] = checks[0] if checks else "none"
    return found


async def becomes(addr: str, agent_type: str, expected: dict[str, str], what: str) -> None:
    async def check() -> bool:
        return statuses(addr, agent_type) == expected

    await eventually(check, 15, what)


@pytest.mark.parametrize("mode", ["nested", "huge", "badutf8", "garbage"])
async def test_hostile_health_answer_is_a_verdict_and_exit_deregisters_every_agent(
    consul_addr: str, unique: str, tmp_path: Path, agents: list[FakeAgent], mode: str
) -> None:
    """An agent answering JSON nested 100,000 deep (or 20 MB, or bytes that are not UTF-8) turns warning;
    the sidecar keeps heartbeating its other agent, and SIGTERM deregisters both and exits 0."""
    agents.extend([FakeAgent(), FakeAgent()])
    steady, hostile = agents
    ids = [f"{unique}-a", f"{unique}-b"]
    config = write_sidecar_file(
        tmp_path / "agents.yaml",
        [entry(unique, ids[0], steady.endpoint), entry(unique, ids[1], hostile.endpoint)],
    )
    sidecar = SidecarProcess(config, consul_addr, tmp_path / "sidecar.log")
    try:
        await becomes(consul_addr, unique, dict.fromkeys(ids, "passing"), "both agents passing")
        hostile.set(mode=mode)
        await becomes(
            consul_addr,
            unique,
            {ids[0]: "passing", ids[1]: "warning"},
            f"{mode} agent warning, other passing",
        )
        assert sidecar.proc.poll() is None, sidecar.output()
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait() == 0, sidecar.output()
        assert statuses(consul_addr, unique) == {}, sidecar.output()
        assert "Traceback" not in sidecar.output()
    finally:
        sidecar.close()
