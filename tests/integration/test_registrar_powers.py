"""What a registrar token can do through raw Consul, beyond this library (the README's Security section says
so and names the Consul settings that limit it): each claim checked against a real Consul 1.8 with ACLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from acl_support import acl_consul_kwargs, master_token, provision_tokens, registration
from aiohttp import web
from conftest import MakeConsul
from support import consul_get, consul_put, eventually

from consul_agents import AgentRegistry, AgentStatus

SPECS = (
    {"name": "coder-registrar", "kind": "registrar", "agent_types": ["coder"]},
    {"name": "planner-registrar", "kind": "registrar", "agent_types": ["planner"]},
    {"name": "fleet-discoverer", "kind": "discoverer"},
)


@pytest.fixture
async def internal_service() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP service standing for something only the Consul agent's host can reach: its URL, and
    the headers of every request it got."""
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="internal-secret-4711")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/", seen
    await runner.cleanup()


async def _setup(make_consul: MakeConsul, **extra: Any) -> tuple[str, str, dict[str, str]]:
    arguments = acl_consul_kwargs()
    arguments["extra_config"].update(extra)
    server = make_consul(**arguments)
    made = await provision_tokens(server.http_addr, master_token(server), *SPECS)
    return server.http_addr, master_token(server), {name: t.secret_id for name, t in made.items()}


def http_check(agent_id: str, url: str) -> dict[str, Any]:
    return {
        "Name": "probe",
        "ServiceID": agent_id,
        "HTTP": url,
        "Header": {"X-Chosen-By-Registrar": ["yes"]},
        "Interval": "1s",
    }


def outputs(addr: str, token: str) -> str:
    return " ".join(c.get("Output", "") for c in consul_get(addr, "/v1/health/checks/agent-coder", token)[0])


async def test_http_check_on_own_agent_is_ssrf_with_read_back(
    make_consul: MakeConsul, unique: str, internal_service: tuple[str, list[dict[str, str]]]
) -> None:
    """A registrar's HTTP check on its own agent makes the Consul agent GET any URL with chosen headers, and
    every reader of the type reads the answer in the check's output."""
    addr, _, tokens = await _setup(make_consul)
    url, seen = internal_service
    async with AgentRegistry(addr, tokens["coder-registrar"]) as coder:
        agent_id = await coder.register_agent(registration("coder", f"{unique}-c"))
    consul_put(addr, "/v1/agent/check/register", http_check(agent_id, url), token=tokens["coder-registrar"])

    async def read_back() -> bool:
        return "internal-secret-4711" in outputs(addr, tokens["fleet-discoverer"])

    await eventually(read_back, what="the internal answer in the check output")
    assert any(headers.get("X-Chosen-By-Registrar") == "yes" for headers in seen)


async def test_discard_check_output_removes_the_read_back(
    make_consul: MakeConsul, unique: str, internal_service: tuple[str, list[dict[str, str]]]
) -> None:
    """With ``discard_check_output`` the request still happens but nothing of the answer is published."""
    addr, _, tokens = await _setup(make_consul, discard_check_output=True)
    url, seen = internal_service
    async with AgentRegistry(addr, tokens["coder-registrar"]) as coder:
        agent_id = await coder.register_agent(registration("coder", f"{unique}-c"))
    consul_put(addr, "/v1/agent/check/register", http_check(agent_id, url), token=tokens["coder-registrar"])

    async def requested() -> bool:
        return len(seen) >= 2

    await eventually(requested, what="the check ran twice")
    assert "internal-secret-4711" not in outputs(addr, tokens["fleet-discoverer"])


async def test_alias_check_mirrors_another_types_health(make_consul: MakeConsul, unique: str) -> None:
    """A registrar's alias check on its own agent mirrors a planner agent on the same Consul agent: the coder
    registrar learns when the planner fails."""
    addr, _, tokens = await _setup(make_consul)
    async with (
        AgentRegistry(addr, tokens["coder-registrar"]) as coder,
        AgentRegistry(addr, tokens["planner-registrar"]) as planner,
    ):
        planner_id = await planner.register_agent(registration("planner", f"{unique}-p"))
        coder_id = await coder.register_agent(registration("coder", f"{unique}-c"))
        alias = {"Name": "mirror", "ServiceID": coder_id, "AliasService": planner_id}
        consul_put(addr, "/v1/agent/check/register", alias, token=tokens["coder-registrar"])
        await planner.heartbeat(planner_id, status=AgentStatus.CRITICAL)

        async def mirrored() -> bool:
            checks = consul_get(addr, "/v1/agent/checks", tokens["coder-registrar"])[0].values()
            return any(c["Name"] == "mirror" and c["Status"] == "critical" for c in checks)

        await eventually(mirrored, what="the alias check turning critical with the planner")


async def test_service_defaults_written_by_a_registrar_outlive_its_agents(
    make_consul: MakeConsul, unique: str
) -> None:
    """A registrar may write its type's service-defaults config entry, which stays after every agent of the
    type is gone, until an operator deletes it."""
    addr, master, tokens = await _setup(make_consul)
    async with AgentRegistry(addr, tokens["coder-registrar"]) as coder:
        agent_id = await coder.register_agent(registration("coder", f"{unique}-c"))
        entry = {"Kind": "service-defaults", "Name": "agent-coder", "Protocol": "http"}
        assert consul_put(addr, "/v1/config", entry, token=tokens["coder-registrar"]) is True
        assert await coder.deregister_agent(agent_id) is True
    kept = consul_get(addr, "/v1/config/service-defaults/agent-coder", master)[0]
    assert kept["Protocol"] == "http"
    with pytest.raises(Exception, match="403"):
        consul_put(addr, "/v1/config", {**entry, "Name": "agent-planner"}, token=tokens["coder-registrar"])
