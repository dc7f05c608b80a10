"""The sidecar as users run it: a real `consul-agents sidecar` process, real agent processes, real Consul."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import FakeAgent, SidecarProcess, write_sidecar_file
from support import consul_get, eventually

from consul_agents.dev import ConsulDevServer

FAST_HEALTH = {"interval": 0.5, "timeout": 0.3, "load_field": "load"}


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    fake = FakeAgent()
    yield fake
    fake.close()


@pytest.fixture
def sidecars() -> Iterator[list[SidecarProcess]]:
    started: list[SidecarProcess] = []
    yield started
    for sidecar in started:
        sidecar.close()


def entry(agent_type: str, endpoint: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "agent_id": f"{agent_type}-1",
        "agent_type": agent_type,
        "capabilities": ["plan"],
        "endpoint": endpoint,
        "ttl": 2,
        "health": dict(FAST_HEALTH),
    }
    fields.update(overrides)
    return fields


def start(
    sidecars: list[SidecarProcess], tmp_path: Path, addr: str, agents: list[dict[str, Any]]
) -> SidecarProcess:
    config = write_sidecar_file(tmp_path / f"sidecar-{len(sidecars)}.yaml", agents)
    sidecar = SidecarProcess(config, addr, tmp_path / f"sidecar-{len(sidecars)}.log")
    sidecars.append(sidecar)
    return sidecar


def health(addr: str, agent_type: str) -> dict[str, dict[str, Any]]:
    """agent id -> {"status", "output", "meta"} from Consul's catalog (no filter: critical included)."""
    body, _ = consul_get(addr, f"/v1/health/service/agent-{agent_type}")
    result = {}
    for item in body or []:
        agent_id = item["Service"]["ID"]
        # The agent's own check and the alias of its sidecar's liveness anchor; the worst one tells.
        own = {f"service:{agent_id}", f"alive:{agent_id}"}
        checks = sorted(
            (c for c in item["Checks"] if c["CheckID"] in own),
            key=lambda c: ("passing", "warning", "critical").index(c["Status"]),
            reverse=True,
        )
        result[agent_id] = {
            "status": checks[0]["Status"] if checks else "none",
            "output": checks[0]["Output"] if checks else "",
            "meta": item["Service"]["Meta"],
        }
    return result


def local_output(addr: str, agent_id: str) -> str:
    """The check output on the Consul agent itself (the catalog copies an output-only change later)."""
    body, _ = consul_get(addr, "/v1/agent/checks")
    return str((body or {}).get(f"service:{agent_id}", {}).get("Output", ""))


async def status_becomes(addr: str, agent_type: str, agent_id: str, status: str, timeout: float = 10) -> None:
    async def check() -> bool:
        return health(addr, agent_type).get(agent_id, {}).get("status") == status

    await eventually(check, timeout, f"{agent_id} {status}")


async def test_registers_and_reports_load(
    consul_addr: str, unique: str, agent: FakeAgent, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """A healthy agent is registered passing with the probe's load, and later loads reach the catalog."""
    start(sidecars, tmp_path, consul_addr, [entry(unique, agent.endpoint, tags={"tier": "gold"})])
    await status_becomes(consul_addr, unique, f"{unique}-1", "passing")
    seen = health(consul_addr, unique)[f"{unique}-1"]
    assert seen["meta"]["agent-load"] == "0.25"
    assert seen["meta"]["tier"] == "gold"
    assert "HTTP 200" in local_output(consul_addr, f"{unique}-1")
    agent.set(load=0.8)

    async def load_published() -> bool:
        return health(consul_addr, unique)[f"{unique}-1"]["meta"]["agent-load"] == "0.8"

    await eventually(load_published, 10, "load 0.8 published")


async def test_one_file_several_agents(
    consul_addr: str, unique: str, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """One file with several agents registers each, and a down one does not hold back a healthy one."""
    up, down = FakeAgent(), FakeAgent()
    down.close()
    try:
        start(
            sidecars,
            tmp_path,
            consul_addr,
            [
                entry(unique, up.endpoint, agent_id=f"{unique}-up"),
                entry(unique, down.endpoint, agent_id=f"{unique}-down"),
            ],
        )
        await status_becomes(consul_addr, unique, f"{unique}-up", "passing")
        await status_becomes(consul_addr, unique, f"{unique}-down", "critical")
    finally:
        up.close()


async def test_down_agent_is_registered_critical_never_passing(
    consul_addr: str, unique: str, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """An agent that is down from the start is critical from its first appearance, through many probes."""
    gone = FakeAgent()
    gone.close()
    start(sidecars, tmp_path, consul_addr, [entry(unique, gone.endpoint)])
    statuses: list[str] = []

    async def many_probes_seen() -> bool:
        seen = health(consul_addr, unique).get(f"{unique}-1")
        if seen is not None:
            statuses.append(seen["status"])
        return len(statuses) >= 40  # 40 x 50 ms: about 4 probe intervals

    await eventually(many_probes_seen, 15, "observations")
    assert set(statuses) == {"critical"}
    assert "ClientConnectorError" in local_output(consul_addr, f"{unique}-1")


@pytest.mark.parametrize(
    ("mode", "expected", "output"),
    [
        ("hung", "critical", "hung"),
        ("status:503", "critical", "HTTP 503, expected 200"),
        ("status:429", "warning", "HTTP 429"),
        ("garbage", "warning", "no number from 0 to 1"),
    ],
)
async def test_probe_outcomes(
    consul_addr: str,
    unique: str,
    agent: FakeAgent,
    sidecars: list[SidecarProcess],
    tmp_path: Path,
    mode: str,
    expected: str,
    output: str,
) -> None:
    """A hung agent or a wrong status turns critical, 429 or a missing load field warning; recovery passes."""
    start(sidecars, tmp_path, consul_addr, [entry(unique, agent.endpoint)])
    await status_becomes(consul_addr, unique, f"{unique}-1", "passing")
    agent.set(mode=mode)
    await status_becomes(consul_addr, unique, f"{unique}-1", expected)
    assert output in health(consul_addr, unique)[f"{unique}-1"]["output"]
    agent.set(mode="ok")
    await status_becomes(consul_addr, unique, f"{unique}-1", "passing")


async def test_dead_agent_turns_critical(
    consul_addr: str, unique: str, agent: FakeAgent, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """When the agent process dies, the sidecar reports it critical at the next probe."""
    start(sidecars, tmp_path, consul_addr, [entry(unique, agent.endpoint)])
    await status_becomes(consul_addr, unique, f"{unique}-1", "passing")
    agent.close()
    await status_becomes(consul_addr, unique, f"{unique}-1", "critical", timeout=3)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_deregisters_and_exits_zero(
    consul_addr: str,
    unique: str,
    agent: FakeAgent,
    sidecars: list[SidecarProcess],
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    """SIGTERM or SIGINT makes the sidecar deregister its agents and exit 0."""
    sidecar = start(sidecars, tmp_path, consul_addr, [entry(unique, agent.endpoint)])
    await status_becomes(consul_addr, unique, f"{unique}-1", "passing")
    sidecar.signal(sig)
    assert await asyncio.to_thread(sidecar.wait) == 0, sidecar.output()
    assert health(consul_addr, unique) == {}
    assert f"deregistered agent {unique}-1" in sidecar.output()


async def test_sigkill_leaves_agent_critical_within_ttl(
    consul_addr: str, unique: str, agent: FakeAgent, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """A killed sidecar cannot deregister; its agent turns critical once the TTL (2 s) runs out."""
    sidecar = start(sidecars, tmp_path, consul_addr, [entry(unique, agent.endpoint)])
    await status_becomes(consul_addr, unique, f"{unique}-1", "passing")
    sidecar.signal(signal.SIGKILL)
    await asyncio.to_thread(sidecar.wait)
    await status_becomes(consul_addr, unique, f"{unique}-1", "critical", timeout=2 + 4)
    assert "TTL expired" in health(consul_addr, unique)[f"{unique}-1"]["output"]


@pytest.mark.slow
async def test_sigkill_agent_is_reaped(
    consul_addr: str, unique: str, agent: FakeAgent, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """After SIGKILL of the sidecar, Consul removes the critical agent after deregister_after (1 minute)."""
    sidecar = start(sidecars, tmp_path, consul_addr, [entry(unique, agent.endpoint, deregister_after=60)])
    await status_becomes(consul_addr, unique, f"{unique}-1", "passing")
    sidecar.signal(signal.SIGKILL)
    await asyncio.to_thread(sidecar.wait)
    await status_becomes(consul_addr, unique, f"{unique}-1", "critical", timeout=6)

    async def reaped() -> bool:
        return health(consul_addr, unique) == {}

    # Consul reaps on its own schedule: 62 to 85 s after the check went critical were measured.
    await eventually(reaped, 150, "agent reaped")


async def test_reregisters_after_consul_restart(
    make_consul: Any, unique: str, agent: FakeAgent, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """A dev Consul restarted on the same ports forgets everything; the running sidecar registers again."""
    server: ConsulDevServer = make_consul()
    sidecar = start(sidecars, tmp_path, server.http_addr, [entry(unique, agent.endpoint)])
    await status_becomes(server.http_addr, unique, f"{unique}-1", "passing")
    await asyncio.to_thread(server.restart)
    await status_becomes(server.http_addr, unique, f"{unique}-1", "passing", timeout=15)
    assert sidecar.proc.poll() is None
    assert "re-registering" in sidecar.output()


async def test_waits_for_consul_that_is_not_up_yet(
    unique: str, agent: FakeAgent, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """A sidecar started before its Consul agent keeps retrying and registers once Consul is up."""
    server = ConsulDevServer()
    try:
        sidecar = start(sidecars, tmp_path, server.http_addr, [entry(unique, agent.endpoint)])

        async def retried() -> bool:
            return "Consul unavailable, retrying" in sidecar.output()

        await eventually(retried, 10, "a retry logged")
        await asyncio.to_thread(server.start)
        await status_becomes(server.http_addr, unique, f"{unique}-1", "passing", timeout=15)
        assert sidecar.proc.poll() is None
    finally:
        server.close()


async def test_stop_while_consul_never_came_up_exits_zero(
    unique: str, agent: FakeAgent, sidecars: list[SidecarProcess], tmp_path: Path
) -> None:
    """SIGTERM while Consul has never answered exits 0: nothing was registered, so nothing is left behind."""
    server = ConsulDevServer()  # never started: its HTTP port refuses connections
    try:
        sidecar = start(sidecars, tmp_path, server.http_addr, [entry(unique, agent.endpoint)])

        async def retried() -> bool:
            return "Consul unavailable, retrying" in sidecar.output()

        await eventually(retried, 10, "a retry logged")
        sidecar.signal(signal.SIGTERM)
        assert await asyncio.to_thread(sidecar.wait) == 0, sidecar.output()
    finally:
        server.close()
