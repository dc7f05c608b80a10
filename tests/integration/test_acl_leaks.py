"""Token hygiene on a real ACL-enabled Consul: tokens travel only in the X-Consul-Token header and appear
in no log line (any level, any logger), exception, traceback or repr, whatever the operation and outcome.

The client talks to Consul through a small recording HTTP proxy run by the test (a real HTTP peer in front of
the real Consul), which shows every URL and header the client actually sent.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import prometheus_client
import pytest
from acl_support import acl_consul, gateway, master_token, provision_tokens, registration
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consul_agents import AgentRegistry, AgentStatus, ConsulAgentsError, DiscoveryRequest, SelectionCriteria
from consul_agents.acl import ProvisionedToken
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer

SPECS = (
    {"name": "alpha-registrar", "kind": "registrar", "agent_types": ["alpha"]},
    {"name": "beta-registrar", "kind": "registrar", "agent_types": ["beta"]},
    {"name": "fleet-discoverer", "kind": "discoverer"},
    {"name": "revoked", "kind": "discoverer"},
)


@dataclass
class Recorder:
    """A reverse proxy in front of Consul that records what each request carried."""

    upstream: str
    #: (method, path with raw query, headers) of every request, in order.
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path, dict(request.headers)))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.upstream + request.raw_path, headers=headers, data=await request.read()
            ) as answer,
        ):
            body = await answer.read()
            keep = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-consul")}
            return web.Response(
                status=answer.status, body=body, headers=keep, content_type=answer.content_type
            )


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture
async def proxy(server: ConsulDevServer) -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder(server.http_addr)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    # A client that hangs up (a watch's blocking read, stopped at close) ends its forwarded request too:
    # the cleanup no longer waits about 10 s for Consul to answer it.
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", recorder
    await runner.cleanup()


@pytest.fixture
def everything_logged() -> Iterator[list[logging.LogRecord]]:
    """Every log record of every logger at DEBUG, aiohttp's and asyncio's included."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    for name in ("aiohttp", "aiohttp.client", "aiohttp.access", "asyncio", "consul", "consul_agents"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(saved)


@asynccontextmanager
async def rest_api(consul: str) -> AsyncIterator[str]:
    """The project's REST API in front of ``consul``, on a free loopback port."""
    runner = web.AppRunner(create_app(consul))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def through_the_api(
    evidence: Evidence, consul: str, alpha: str, reader: str, victim: str, unique: str
) -> None:
    """The same kinds of calls through the REST API, with X-Consul-Token or Authorization: Bearer."""
    body = {"agent_type": "alpha", "agent_id": f"{unique}-api", "capabilities": ["plan"],
            "endpoint": "http://127.0.0.1:9000"}  # fmt: skip
    bearer = {"Authorization": f"Bearer {alpha}"}
    calls: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("POST", "/v1/agents", bearer, body, 201),
        ("PUT", f"/v1/agents/{unique}-api/heartbeat", {"X-Consul-Token": alpha}, {"load": 0.3}, 204),
        ("GET", f"/v1/agents/{unique}-api", {"X-Consul-Token": reader}, None, 200),
        ("GET", "/v1/agents?capability=plan", {"X-Consul-Token": reader}, None, 200),
        ("POST", "/v1/agents", {"X-Consul-Token": reader}, body, 403),
        ("DELETE", f"/v1/agents/{victim}", bearer, None, 403),
        ("PUT", f"/v1/agents/{victim}/maintenance", bearer, {"enable": True}, 403),
        ("DELETE", f"/v1/agents/{unique}-api", bearer, None, 200),
        ("GET", "/metrics", {"X-Consul-Token": reader}, None, 200),
    ]
    async with rest_api(consul) as api, aiohttp.ClientSession() as session:
        for method, path, headers, payload, status in calls:
            async with session.request(method, api + path, headers=headers, json=payload) as answer:
                evidence.texts += [await answer.text(), repr(dict(answer.headers))]
                assert answer.status == status, (method, path, await answer.text())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Evidence:
    """Every text a token could leak into, and every error the operations raised."""

    texts: list[str] = field(default_factory=list)
    failures: list[ConsulAgentsError] = field(default_factory=list)

    async def expect_failure(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except ConsulAgentsError as exc:
            self.failures.append(exc)
        else:
            pytest.fail("an operation meant to fail succeeded")


async def succeed(evidence: Evidence, reg: AgentRegistry, disc: AgentRegistry, unique: str) -> str:
    """Every registry operation, done with tokens allowed to do it; returns the registered agent's id."""
    evidence.texts += [repr(reg), str(reg), repr(reg.settings), str(reg.settings), repr(reg.gateway)]
    evidence.texts.append(repr(vars(reg)))
    agent_id = await reg.register_agent(registration("alpha", unique, metadata={"doc": "d" * 1000}))
    await reg.heartbeat(agent_id, 0.4)
    await reg.heartbeat(agent_id, status=AgentStatus.WARNING)
    await reg.heartbeat(agent_id)
    await reg.set_maintenance(agent_id, True, "reason with & and ?")
    await reg.set_maintenance(agent_id, False)
    evidence.texts.append(repr(await disc.get_agent(agent_id)))
    evidence.texts.append(str(await disc.get_agent_status(agent_id)))
    found = await disc.discover_agents(DiscoveryRequest(capabilities=["plan"], tags={"a": "b"}))
    evidence.texts.append(repr(found))
    evidence.texts.append(repr(await disc.select_agent(SelectionCriteria(agent_type="alpha"))))
    evidence.texts.append(repr(await disc.agent_types()))
    async with reg.session(registration("alpha", f"{unique}-s")) as session:
        await session.beat()
        evidence.texts += [repr(session), repr(vars(session))]
    return agent_id


async def fail(evidence: Evidence, reg: AgentRegistry, disc: AgentRegistry, victim: str, unique: str) -> None:
    """Operations that Consul or the client refuse: denied, not found, invalid."""
    await evidence.expect_failure(reg.register_agent(registration("beta", f"{unique}-x")))
    await evidence.expect_failure(reg.heartbeat(victim, 0.9))
    await evidence.expect_failure(reg.set_maintenance(victim, True))
    await evidence.expect_failure(reg.deregister_agent(victim))
    await evidence.expect_failure(disc.register_agent(registration("alpha", f"{unique}-y")))
    await evidence.expect_failure(reg.heartbeat(f"{unique}-missing"))
    await evidence.expect_failure(disc.get_agent(f"{unique}-missing"))
    await evidence.expect_failure(reg.deregister_agent("../../kv/x"))


async def test_tokens_never_leak(
    server: ConsulDevServer,
    proxy: tuple[str, Recorder],
    everything_logged: list[logging.LogRecord],
    spans: InMemorySpanExporter,
    unique: str,
) -> None:
    """Every operation, succeeding or failing, sends tokens only as X-Consul-Token and leaks them nowhere."""
    address, recorder = proxy
    master = master_token(server)
    made: dict[str, ProvisionedToken] = await provision_tokens(server.http_addr, master, *SPECS)
    secrets = {master, *(t.secret_id for t in made.values())}
    alpha, beta = made["alpha-registrar"].secret_id, made["beta-registrar"].secret_id
    reader, revoked = made["fleet-discoverer"].secret_id, made["revoked"].secret_id
    async with gateway(server.http_addr, master) as gw:
        await gw.delete("revoke", f"/v1/acl/token/{made['revoked'].accessor_id}")
    evidence = Evidence(texts=[repr(t) for t in made.values()] + [str(t) for t in made.values()])

    async with (
        AgentRegistry(address, alpha) as reg,
        AgentRegistry(address, reader) as disc,
        AgentRegistry(address, beta) as other,
    ):
        victim = await other.register_agent(registration("beta", f"{unique}-b"))
        agent_id = await succeed(evidence, reg, disc, unique)
        await fail(evidence, reg, disc, victim, unique)
        await through_the_api(evidence, address, alpha, reader, victim, unique)
        assert await reg.deregister_agent(agent_id)
        await other.deregister_agent(victim)
    async with AgentRegistry(address, revoked) as gone:
        await evidence.expect_failure(gone.discover_agents())
        await evidence.expect_failure(gone.register_agent(registration("alpha", f"{unique}-z")))
    async with AgentRegistry(f"http://127.0.0.1:{closed_port()}", alpha, timeout=1) as down:
        await evidence.expect_failure(down.discover_agents())
        await evidence.expect_failure(down.register_agent(registration("alpha", f"{unique}-w")))
    for bad in (f"{address}/?token={alpha}", f"http://{alpha}@127.0.0.1:1", f"http://u:{alpha}@127.0.0.1:1"):
        with pytest.raises(ConsulAgentsError) as caught:
            AgentRegistry(bad, "")
        evidence.failures.append(caught.value)

    assert len(evidence.failures) == 15
    for exc in evidence.failures:
        evidence.texts += [str(exc), repr(exc), repr(vars(exc)), "".join(traceback.format_exception(exc))]
    evidence.texts.append(prometheus_client.generate_latest().decode())
    evidence.texts += [span.to_json() for span in spans.get_finished_spans()]
    assert any("denied" in text for text in evidence.texts[-len(spans.get_finished_spans()) :])
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    evidence.texts += [formatter.format(record) for record in everything_logged]
    evidence.texts += [repr(record.args) for record in everything_logged]
    for secret in secrets:
        leaks = [text for text in evidence.texts if secret in text]
        assert not leaks, f"a token leaked into: {leaks[0][:300]}"

    proxied = [entry for entry in recorder.seen if entry[2].get("X-Consul-Token")]
    anonymous = [(method, path) for method, path, headers in recorder.seen if "X-Consul-Token" not in headers]
    assert len(proxied) > 30 and not anonymous, anonymous
    assert {entry[2]["X-Consul-Token"] for entry in proxied} == {alpha, beta, reader, revoked}
    for method, path, headers in recorder.seen:
        for secret in secrets:
            assert secret not in path, f"{method} {path} carries a token in its URL"
            assert not any(secret in value for name, value in headers.items() if name != "X-Consul-Token")
