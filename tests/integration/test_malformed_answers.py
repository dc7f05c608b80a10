"""Answers of a shape Consul should never send (a null entry, a null Service, an empty 200) reach the client
through a proxy in front of a real Consul: the client skips what it cannot read, or keeps its last view,
and never crashes with ``'NoneType' object is not subscriptable``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import test_utils, web
from support import eventually, registration

from consul_agents import AgentRegistry, DiscoveryRequest


@dataclass
class Tamper:
    """What the proxy does to ``/v1/health/service/<service>`` answers (nothing while ``mode`` is "")."""

    service: str = ""
    mode: str = ""
    served: list[str] = field(default_factory=list)


def _tampered(mode: str, body: bytes) -> bytes:
    if mode == "empty":
        return b""
    entries = json.loads(body)
    entries[1:1] = [None, {"Node": {"Node": "n", "Datacenter": "dc1"}, "Service": None, "Checks": []}]
    return json.dumps(entries).encode()


@pytest.fixture
async def proxy(consul_addr: str) -> AsyncIterator[tuple[str, Tamper]]:
    """An HTTP proxy to the tests' Consul that tampers with one service's answers on demand."""
    tamper = Tamper()
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        target = tamper.mode and request.path == f"/v1/health/service/{tamper.service}"
        params = list(request.query.items())
        if target and tamper.mode == "empty":
            # Answer at once with a new index: a blocking read would otherwise wait for a change.
            params = [(k, v) for k, v in params if k not in ("index", "wait")]
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("x-consul-token", "accept-encoding")
        }
        async with session.request(
            request.method,
            consul_addr + request.path,
            params=params,
            headers=headers,
            data=await request.read(),
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower().startswith("x-consul")}
            out["Content-Type"] = upstream.headers.get("Content-Type", "application/json")
            if target and upstream.status == 200:
                body = _tampered(tamper.mode, body)
                out["X-Consul-Index"] = str(int(out.get("X-Consul-Index", "1")) + len(tamper.served) + 1)
                tamper.served.append(tamper.mode)
            return web.Response(status=upstream.status, body=body, headers=out)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    async with test_utils.TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/"), tamper
    await session.close()


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "direct"])
async def test_null_entries_are_skipped(proxy: tuple[str, Tamper], unique: str, cached: bool) -> None:
    """An answer holding a null entry and an entry whose Service is null yields the readable agents, from
    the cache and directly, instead of raising TypeError."""
    address, tamper = proxy
    async with AgentRegistry(address) as registry:
        ids = sorted([await registry.register_agent(registration(unique)) for _ in range(2)])

        async def registered() -> bool:
            found = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=False)
            return len(found) == 2

        await eventually(registered, 10, "agents in the catalog")
    tamper.service, tamper.mode = f"agent-{unique}", "nulls"
    async with AgentRegistry(address) as registry:
        found = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=cached)
        assert sorted(a.agent_id for a in found) == ids
        assert tamper.served


async def test_empty_answer_keeps_the_last_view(proxy: tuple[str, Tamper], unique: str) -> None:
    """A 200 with an empty body is not "no agents": the cache keeps serving the last view, marked stale,
    instead of emptying it."""
    address, tamper = proxy
    async with AgentRegistry(address) as registry:
        agent_id = await registry.register_agent(registration(unique))
        request = DiscoveryRequest(agent_type=unique)

        async def cached_sees_it() -> bool:
            return [a.agent_id for a in await registry.discover_agents(request)] == [agent_id]

        await eventually(cached_sees_it, 10, "agent in the cache")
        tamper.service, tamper.mode = f"agent-{unique}", "empty"

        async def stale() -> bool:
            return bool(tamper.served) and (await registry.discover(request)).staleness > 0

        await eventually(stale, 10, "empty answers seen and the view marked stale")
        assert [a.agent_id for a in await registry.discover_agents(request)] == [agent_id]
