"""The plugins: an aiohttp app that registers itself, and the base agent class; and how they are packaged."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from consul_agents_agent import RegisteredAgent
from processes import TESTS, cli_env, read_port, reap
from support import consul_get, eventually

from consul_agents import AgentRegistration, AgentStatus


def services(addr: str, agent_type: str) -> dict[str, dict[str, Any]]:
    body, _ = consul_get(addr, f"/v1/health/service/agent-{agent_type}")
    return {
        item["Service"]["ID"]: {
            "port": item["Service"]["Port"],
            "meta": item["Service"]["Meta"],
            "status": [c["Status"] for c in item["Checks"] if c["CheckID"].startswith("service:")],
        }
        for item in body or []
    }


@pytest.fixture
def plugin_agent(consul_addr: str, unique: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "plugin_agent.py"), unique, "4"],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(CONSUL_HTTP_ADDR=consul_addr),
    )
    try:
        yield proc, read_port(proc)
    finally:
        reap(proc)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def test_aiohttp_plugin_lifecycle(
    consul_addr: str, unique: str, plugin_agent: tuple[subprocess.Popen[str], int]
) -> None:
    """The app registers at startup, reports in-flight/capacity as load, serves /health, then deregisters."""
    proc, port = plugin_agent
    agent_id = f"{unique}-plugin"

    async def registered() -> bool:
        return services(consul_addr, unique).get(agent_id, {}).get("status") == ["passing"]

    await eventually(registered, 10, "plugin agent registered")
    assert services(consul_addr, unique)[agent_id]["port"] == port

    held = [
        asyncio.create_task(
            asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/work", timeout=20)
        )
        for _ in range(2)
    ]

    async def half_loaded() -> bool:
        return services(consul_addr, unique)[agent_id]["meta"]["agent-load"] == "0.5"

    await eventually(half_loaded, 10, "load 0.5 published")
    health = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/health")
    assert health == {"status": "passing", "load": 0.5, "in_flight": 2, "capacity": 4, "agent_id": agent_id}
    release = urllib.request.Request(f"http://127.0.0.1:{port}/release", method="POST")
    (await asyncio.to_thread(urllib.request.urlopen, release, timeout=5)).close()
    for response in await asyncio.gather(*held):
        response.close()

    async def idle() -> bool:
        return services(consul_addr, unique)[agent_id]["meta"]["agent-load"] == "0"

    await eventually(idle, 10, "load back to 0")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    assert services(consul_addr, unique) == {}


class Planner(RegisteredAgent):
    def __init__(self, agent_type: str, consul_url: str) -> None:
        self.consul_url = consul_url
        self.heartbeat_interval = 0.2
        self.registration = AgentRegistration(
            agent_type=agent_type, capabilities=["plan"], endpoint="http://127.0.0.1:9999", ttl=2
        )


class Framework:
    """Stands for another framework's base class with its own constructor."""

    def __init__(self, name: str) -> None:
        self.name = name


class MixedPlanner(RegisteredAgent, Framework):
    def __init__(self, agent_type: str, consul_url: str) -> None:
        super().__init__("framework-name")
        self.consul_url = consul_url
        self.registration = AgentRegistration(
            agent_type=agent_type, capabilities=["plan"], endpoint="http://127.0.0.1:9998"
        )


async def test_base_agent_as_context_manager(consul_addr: str, unique: str) -> None:
    """Entering registers, load and status set on the agent reach Consul, leaving deregisters."""
    async with Planner(unique, consul_addr) as planner:
        assert planner.registered and planner.agent_id is not None
        agent_id = planner.agent_id
        assert services(consul_addr, unique)[agent_id]["status"] == ["passing"]
        planner.agent_load = 0.7
        planner.agent_status = AgentStatus.WARNING

        async def reported() -> bool:
            seen = services(consul_addr, unique)[agent_id]
            return seen["meta"]["agent-load"] == "0.7" and seen["status"] == ["warning"]

        await eventually(reported, 10, "load and warning reported")
    assert not planner.registered
    assert services(consul_addr, unique) == {}


async def test_base_agent_as_mixin(consul_addr: str, unique: str) -> None:
    """As a mixin beside another base class: create() registers, cleanup() deregisters, both bases work."""
    agent = await MixedPlanner.create(unique, consul_addr)
    try:
        assert agent.name == "framework-name"
        assert agent.agent_id in services(consul_addr, unique)
        with pytest.raises(RuntimeError, match="already started"):
            await agent.start()
    finally:
        await agent.cleanup()
    assert services(consul_addr, unique) == {}
    await agent.cleanup()  # a second cleanup does nothing


async def test_base_agent_failed_start_leaves_nothing(unique: str) -> None:
    """When Consul is unreachable, start() raises and the agent is not left half-started."""
    agent = Planner(unique, "http://127.0.0.1:1")
    with pytest.raises(ConnectionError):
        await agent.start()
    assert not agent.registered


def test_plugins_are_separate_distributions() -> None:
    """Each plugin is its own installed distribution; none installs a top-level module named `plugins`."""
    for name, package in (
        ("consul-agents-aiohttp", "consul_agents_aiohttp"),
        ("consul-agents-agent", "consul_agents_agent"),
    ):
        dist = importlib.metadata.distribution(name)
        assert (dist.read_text("top_level.txt") or "").split() == [package]
    result = subprocess.run(
        [sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('plugins'))"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "None"


def test_core_never_imports_plugins() -> None:
    """Importing every core module (CLI and sidecar included) loads no plugin module."""
    code = (
        "import pkgutil, importlib, sys, consul_agents\n"
        "for m in pkgutil.walk_packages(consul_agents.__path__, 'consul_agents.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.startswith(('consul_agents_', 'plugins'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stderr
