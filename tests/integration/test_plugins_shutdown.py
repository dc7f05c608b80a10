"""The plugins at shutdown: leave discovery before draining, stop cleanly while Consul is down, keep a
cancellation a cancellation; the base agent's token setting; a load burst published at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from acl_support import acl_consul, master_token, provision_tokens
from aiohttp import test_utils, web
from conftest import MakeConsul
from consul_agents_agent import RegisteredAgent
from consul_agents_aiohttp import setup_agent
from processes import TESTS, cli_env, read_port, reap
from support import consul_get, eventually

from consul_agents import AgentRegistration, PermissionDeniedError
from consul_agents.dev import ConsulDevServer


def registered_ids(addr: str, agent_type: str) -> set[str]:
    body, _ = consul_get(addr, f"/v1/health/service/agent-{agent_type}")
    return {item["Service"]["ID"] for item in body or []}


class RunApp:
    """tests/plugin_run_app.py in a child process (stderr kept for the test)."""

    def __init__(self, consul_addr: str, agent_type: str) -> None:
        self.agent_id = f"{agent_type}-run-app"
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "plugin_run_app.py"), agent_type],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(CONSUL_HTTP_ADDR=consul_addr),
        )
        self.port = read_port(self.proc)

    def stop(self, *, signalled: bool = False) -> tuple[int, str]:
        """SIGTERM (unless already sent) and wait: its exit code and stderr."""
        if not signalled:
            self.proc.send_signal(signal.SIGTERM)
        _, stderr = self.proc.communicate(timeout=60)
        return self.proc.returncode, stderr

    def close(self) -> None:
        reap(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def run_app_factory() -> Iterator[list[RunApp]]:
    apps: list[RunApp] = []
    yield apps
    for app in apps:
        app.close()


async def test_aiohttp_plugin_leaves_discovery_before_draining(
    consul_addr: str, unique: str, run_app_factory: list[RunApp]
) -> None:
    """On SIGTERM the agent is deregistered while a request is still in flight, which then completes."""
    app = RunApp(consul_addr, unique)
    run_app_factory.append(app)

    async def registered() -> bool:
        return app.agent_id in registered_ids(consul_addr, unique)

    await eventually(registered, 15, "the run_app agent registered")
    url = f"http://127.0.0.1:{app.port}/work?seconds=4"
    in_flight = asyncio.create_task(asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read()))

    async def busy() -> bool:
        body, _ = consul_get(consul_addr, f"/v1/health/service/agent-{unique}")
        return any(item["Service"]["Meta"].get("agent-load") == "0.1" for item in body or [])

    await eventually(busy, 10, "the request is in flight (load 0.1 published)")
    app.proc.send_signal(signal.SIGTERM)

    async def gone() -> bool:
        return app.agent_id not in registered_ids(consul_addr, unique)

    await eventually(gone, 10, "the agent leaves Consul")
    assert not in_flight.done(), "the agent stayed in discovery until its in-flight request had drained"
    assert await in_flight == b"done"
    code, stderr = await asyncio.to_thread(app.stop, signalled=True)
    assert code == 0, stderr


async def test_aiohttp_plugin_stops_cleanly_while_consul_is_down(
    make_consul: MakeConsul, unique: str, run_app_factory: list[RunApp]
) -> None:
    """SIGTERM while Consul is down: exit 0, no traceback, one message: deregistration is unconfirmed."""
    consul = make_consul()
    app = RunApp(consul.http_addr, unique)
    run_app_factory.append(app)

    async def registered() -> bool:
        return app.agent_id in registered_ids(consul.http_addr, unique)

    await eventually(registered, 15, "the run_app agent registered")
    consul.close()
    code, stderr = await asyncio.to_thread(app.stop)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.count("could not be confirmed") == 1, stderr
    assert app.agent_id in stderr


class Planner(RegisteredAgent):
    def __init__(self, agent_type: str, consul_url: str, token: str | None = None) -> None:
        self.consul_url = consul_url
        self.consul_token = token
        self.registration = AgentRegistration(
            agent_type=agent_type, capabilities=["plan"], endpoint="http://127.0.0.1:9999", ttl=60
        )


async def test_cancelled_registered_agent_ends_cancelled_while_consul_is_down(
    make_consul: MakeConsul, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task running a RegisteredAgent, cancelled while Consul is down, ends with CancelledError."""
    consul: ConsulDevServer = make_consul()
    started = asyncio.Event()

    async def run() -> None:
        async with Planner(unique, consul.http_addr):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await asyncio.wait_for(started.wait(), 30)
    consul.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "could not be confirmed" in caplog.text


async def test_registered_agent_token_setting(unique: str) -> None:
    """RegisteredAgent's consul_token works like setup_agent(token=...); without it registration is denied."""
    with acl_consul() as server:
        spec = {"name": "registrar", "kind": "registrar", "agent_types": [unique]}
        tokens = await provision_tokens(server.http_addr, master_token(server), spec)
        async with Planner(unique, server.http_addr, tokens["registrar"].secret_id) as planner:
            assert planner.agent_id in registered_ids_as(server, unique)
        with pytest.raises(PermissionDeniedError):
            async with Planner(unique, server.http_addr, ""):
                pass


def registered_ids_as(server: ConsulDevServer, agent_type: str) -> set[str]:
    body, _ = consul_get(server.http_addr, f"/v1/health/service/agent-{agent_type}", master_token(server))
    return {item["Service"]["ID"] for item in body or []}


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.5)
    return web.Response(text="done")


async def test_aiohttp_plugin_publishes_a_burst_at_once(consul_addr: str, unique: str) -> None:
    """A 1.5 s burst that fills the agent reaches Consul during the burst, not a heartbeat (10 s) later,
    and so does its end."""
    app = web.Application()
    app.router.add_get("/slow", slow)
    reg = AgentRegistration(agent_type=unique, capabilities=["plan"], endpoint="http://127.0.0.1:1", ttl=30)
    setup_agent(app, reg, capacity=1, consul_url=consul_addr)

    def load() -> str | None:
        body, _ = consul_get(consul_addr, f"/v1/health/service/agent-{unique}")
        return next((e["Service"]["Meta"].get("agent-load") for e in body or []), None)

    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        assert load() == "0"
        started = asyncio.get_running_loop().time()
        request = asyncio.create_task(client.get("/slow"))

        async def full() -> bool:
            return load() == "1"

        await eventually(full, 5, "load 1 published")
        assert asyncio.get_running_loop().time() - started < 1.5, "published only after the burst"
        assert not request.done()
        (await request).release()

        async def idle() -> bool:
            return load() == "0"

        await eventually(idle, 5, "load 0 published")
        assert asyncio.get_running_loop().time() - started < 3.0
