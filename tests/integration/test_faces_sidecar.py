"""The sidecar against agents that answer anything: a real `consul-agents sidecar` process, real agent
processes and real Consul. Nothing an agent sends stops the sidecar, and its exit always deregisters."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acl_support import acl_consul, master_token, provision_tokens
from processes import FakeAgent, SidecarProcess, write_sidecar_file
from support import consul_get, consul_put, eventually

from consul_agents.dev import ConsulDevServer


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


@pytest.fixture(scope="module")
def acl_server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


async def test_exit_deregisters_every_agent_even_when_one_is_refused(
    acl_server: ConsulDevServer, unique: str, tmp_path: Path, agents: list[FakeAgent]
) -> None:
    """With ACLs on, when the sidecar's token loses one agent type mid-run, SIGTERM still deregisters the
    other agent, names the one it could not remove, and exits 1 (it cannot promise a clean exit)."""
    addr, master = acl_server.http_addr, master_token(acl_server)
    kept, lost = f"{unique}x", f"{unique}y"
    name = f"two-{unique}"
    spec = {"name": name, "kind": "registrar", "agent_types": [kept, lost]}
    token = (await provision_tokens(addr, master, spec))[name]
    token_file = tmp_path / "registrar.token"
    token_file.write_text(token.secret_id + "\n")
    agents.extend([FakeAgent(), FakeAgent()])
    config = write_sidecar_file(
        tmp_path / "agents.yaml",
        [entry(kept, f"{kept}-1", agents[0].endpoint), entry(lost, f"{lost}-1", agents[1].endpoint)],
    )
    log = tmp_path / "sidecar.log"
    sidecar = SidecarProcess(config, addr, log, "-token-file", str(token_file))
    try:

        async def registered(agent_type: str, expected: dict[str, str]) -> bool:
            body, _ = consul_get(addr, f"/v1/health/service/agent-{agent_type}", token=master)
            found = {
                item["Service"]["ID"]: c["Status"]
                for item in body or []
                for c in item["Checks"]
                if c["CheckID"].startswith("service:")
            }
            return found == expected

        for agent_type in (kept, lost):
            await eventually(
                lambda t=agent_type: registered(t, {f"{t}-1": "passing"}), 15, f"{agent_type} passing"
            )
        await provision_tokens(addr, master, {**spec, "agent_types": [kept]})

        async def lost_is_refused() -> bool:
            return f"agent {lost}-1: heartbeat failed" in log.read_text()

        await eventually(lost_is_refused, 15, "heartbeats of the lost type refused")
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(30) == 1, log.read_text()
        assert await registered(kept, {}), log.read_text()
        assert await registered(lost, {f"{lost}-1": "passing"})
        assert f"could not deregister agent {lost}-1" in log.read_text()
        assert token.secret_id not in log.read_text()
    finally:
        sidecar.close()
        consul_put(addr, f"/v1/agent/service/deregister/{lost}-1", token=master)
