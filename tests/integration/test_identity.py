"""Identity: an agent id names one agent, whatever its case and whoever registers it; an agent whose catalog
entry was taken over behind its back says so. Against real Consul, with and without ACLs."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from acl_support import acl_consul, master_token, registration, token_secrets
from aiohttp import test_utils
from processes import CLI, cli_env
from prometheus_client import REGISTRY
from support import consul_get, consul_put, eventually

from consul_agents import (
    AgentNotFoundError,
    AgentRegistry,
    InvalidAgentError,
    PermissionDeniedError,
)
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer
from consul_agents.sidecar.config import parse_config

SPECS = (
    {"name": "planner-registrar", "kind": "registrar", "agent_types": ["planner"]},
    {"name": "coder-registrar", "kind": "registrar", "agent_types": ["coder"]},
)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(acl_server: ConsulDevServer) -> dict[str, str]:
    return token_secrets(acl_server, *SPECS)


def catalog_ids(addr: str, service: str, token: str | None = None) -> list[str]:
    return [e["ServiceID"] for e in consul_get(addr, f"/v1/catalog/service/{service}", token)[0] or []]


def catalog_lists(addr: str, service: str, ids: list[str], token: str | None = None) -> Callable[[], Any]:
    """A check for ``eventually``: the catalog's instances of ``service`` are exactly ``ids``."""

    async def check() -> bool:
        return sorted(catalog_ids(addr, service, token)) == sorted(ids)

    return check


async def test_an_id_differing_only_by_case_is_the_same_agent(registry: AgentRegistry, unique: str) -> None:
    """A planner registering the upper-case spelling of a coder's id is refused, naming the coder type,
    and the coder stays in the catalog (before: the planner's registration made the coder vanish)."""
    coder = await registry.register_agent(registration("coder", f"{unique}-small"))
    with pytest.raises(InvalidAgentError) as refused:
        await registry.register_agent(registration("planner", f"{unique}-SMALL".upper()))
    assert "'coder'" in str(refused.value) and refused.value.field == "agent_id"
    addr = registry.settings.address
    coders = [c for c in catalog_ids(addr, "agent-coder") if c != coder] + [coder]
    await eventually(catalog_lists(addr, "agent-coder", coders), what="the coder in the catalog")
    assert catalog_ids(addr, "agent-planner") == []
    await registry.deregister_agent(coder)


async def test_an_id_held_by_another_type_is_refused(consul_addr: str, unique: str) -> None:
    """A second client registering an id already held by an agent of another type gets InvalidAgentError
    naming the holder's type; the holder keeps its id (before: silently overwritten, no ACL to stop it)."""
    async with AgentRegistry(consul_addr) as coder_client, AgentRegistry(consul_addr) as planner_client:
        held = await coder_client.register_agent(registration("coder", f"{unique}-x"))
        with pytest.raises(InvalidAgentError, match="held by an agent of type 'coder'"):
            await planner_client.register_agent(registration("planner", held, endpoint="http://10.0.0.1:1"))
        info = await planner_client.get_agent(held)
        assert (info.agent_type, info.endpoint) == ("coder", "http://127.0.0.1:9000")
        await coder_client.deregister_agent(held)


async def test_a_mixed_case_id_registered_outside_the_library_is_respected(
    registry: AgentRegistry, unique: str
) -> None:
    """An id some other tool registered in upper case is not taken over by its lower-case spelling, even of
    the same type: Consul would keep only one of the two."""
    legacy = f"{unique}-LEGACY".upper()
    consul_put(registry.settings.address, "/v1/agent/service/register", {"ID": legacy, "Name": "agent-coder"})
    try:
        with pytest.raises(InvalidAgentError, match=f"as '{legacy}'"):
            await registry.register_agent(registration("coder", legacy.lower()))
        addr = registry.settings.address
        await eventually(
            lambda: _async(catalog_ids(addr, "agent-coder").count(legacy) == 1), what="the legacy id kept"
        )
    finally:
        consul_put(registry.settings.address, f"/v1/agent/service/deregister/{legacy}")


async def test_every_call_taking_an_id_normalises_its_case(registry: AgentRegistry, unique: str) -> None:
    """Registration, status, heartbeat, maintenance and deregistration accept any case for one agent."""
    upper = f"{unique}-Mixed-ID"
    agent_id = await registry.register_agent(registration("coder", upper))
    assert agent_id == upper.lower()
    assert (await registry.get_agent(upper.upper())).agent_id == agent_id
    await registry.heartbeat(upper.upper(), 0.5)
    await registry.set_maintenance(upper, True)
    await registry.set_maintenance(upper, False)
    assert await registry.deregister_agent(upper.upper()) is True
    assert consul_get(registry.settings.address, f"/v1/agent/service/{agent_id}")[0] is None


async def test_rest_api_takes_ids_in_any_case(consul_addr: str, unique: str) -> None:
    """The REST API answers for an agent under any case of its id, and refuses a case-twin of another type."""
    async with test_utils.TestClient(test_utils.TestServer(create_app(consul_addr))) as api:
        body = {"agent_type": "coder", "capabilities": ["plan"], "endpoint": "http://127.0.0.1:9000"}
        created = await api.post("/v1/agents", json={**body, "agent_id": f"{unique}-REST"})
        assert created.status == 201
        agent_id = (await created.json())["agent_id"]
        assert agent_id == f"{unique}-rest"
        assert (await api.get(f"/v1/agents/{agent_id.upper()}")).status == 200
        twin = await api.post(
            "/v1/agents", json={**body, "agent_type": "planner", "agent_id": agent_id.upper()}
        )
        assert twin.status == 422 and "'coder'" in (await twin.json())["message"]
        assert (await api.delete(f"/v1/agents/{agent_id.upper()}")).status == 200


def test_sidecar_file_ids_differing_by_case_are_one_id(tmp_path: Path) -> None:
    """Two agents of a sidecar file whose ids differ only by case are refused as a duplicate id."""
    agent = {"agent_type": "coder", "capabilities": ["plan"], "endpoint": "http://127.0.0.1:9000"}
    document = {"agents": [{**agent, "agent_id": "coder-a"}, {**agent, "agent_id": "CODER-A"}]}
    with pytest.raises(InvalidAgentError, match="already used by agents\\[0\\]"):
        parse_config(tmp_path / "sidecar.yaml", document)


async def test_case_twin_is_refused_with_acls(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """With ACLs, a planner registrar cannot make a coder vanish by registering its id in upper case."""
    addr, master = acl_server.http_addr, master_token(acl_server)
    async with (
        AgentRegistry(addr, tokens["coder-registrar"]) as coder,
        AgentRegistry(addr, tokens["planner-registrar"]) as planner,
    ):
        agent_id = await coder.register_agent(registration("coder", f"{unique}-small"))
        with pytest.raises((PermissionDeniedError, InvalidAgentError)):
            await planner.register_agent(registration("planner", agent_id.upper()))
        await planner.register_agent(registration("planner", f"{unique}-other"))  # an anti-entropy sync
        await eventually(
            catalog_lists(addr, "agent-planner", [f"{unique}-other"], master),
            what="the planner's own agent in the catalog",
        )
        assert catalog_ids(addr, "agent-coder", master) == [agent_id]
        assert consul_get(addr, "/v1/agent/services", master)[0].keys() == {agent_id, f"{unique}-other"}
        await planner.deregister_agent(f"{unique}-other")
        await coder.deregister_agent(agent_id)


async def _async(value: bool) -> bool:
    return value


def conflicts(agent_type: str) -> float:
    return (
        REGISTRY.get_sample_value("consul_agents_registration_conflicts_total", {"agent_type": agent_type})
        or 0
    )


async def test_owner_notices_a_txn_overwrite(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When a registrar of another type overwrites an agent through PUT /v1/txn (Consul 1.8.7's hole), the
    owner's session reports it: session.conflict, a WARNING and the conflicts metric."""
    addr = acl_server.http_addr
    async with AgentRegistry(addr, tokens["coder-registrar"]) as owner:
        owner.verify_every = 1
        reg = registration("coder", f"{unique}-victim")
        async with owner.session(reg, interval=0.05) as session:
            master = master_token(acl_server)
            await eventually(
                catalog_lists(addr, "agent-coder", [session.agent_id], master),
                what="the agent synced to the catalog",
            )
            assert await owner.verify_registration(session.agent_id) is None
            assert session.conflict is None
            before = conflicts("coder")
            attack = {"ID": session.agent_id, "Service": "agent-planner", "Address": "10.6.6.6", "Port": 6666}
            txn = [{"Service": {"Verb": "set", "Node": acl_server.node_name, "Service": attack}}]
            with caplog.at_level(logging.WARNING, logger="consul_agents.registry"):
                consul_put(addr, "/v1/txn", txn, token=tokens["planner-registrar"])
                await eventually(lambda: _async(session.conflict is not None), what="session.conflict")
            assert "gone or now belongs to a service this token cannot read" in str(session.conflict)
            assert conflicts("coder") == before + 1
            assert any("no longer holds its registration" in r.getMessage() for r in caplog.records)
            # The txn hole lets the attacker's entry stay; remove it so the session's exit is clean.
            consul_put(
                addr, f"/v1/agent/service/deregister/{session.agent_id}", token=master_token(acl_server)
            )


async def test_verification_compares_address_and_port(registry: AgentRegistry, unique: str) -> None:
    """An entry of the same service name moved to another address is reported, naming the address."""
    agent_id = await registry.register_agent(registration("coder", f"{unique}-moved"))
    assert await registry.verify_registration(agent_id) is None
    node = consul_get(registry.settings.address, "/v1/agent/self")[0]["Config"]["NodeName"]
    moved = {"ID": agent_id, "Service": "agent-coder", "Address": "10.9.9.9", "Port": 9000}
    consul_put(
        registry.settings.address, "/v1/txn", [{"Service": {"Verb": "set", "Node": node, "Service": moved}}]
    )
    conflict = await registry.verify_registration(agent_id)
    assert conflict is not None and "'10.9.9.9'" in conflict
    assert registry.registration_conflict(agent_id) == conflict
    await registry.deregister_agent(agent_id)


async def test_verification_of_an_unknown_agent_raises_not_found(
    registry: AgentRegistry, unique: str
) -> None:
    """Verifying an agent this client did not register is AgentNotFoundError, not a guess."""
    with pytest.raises(AgentNotFoundError):
        await registry.verify_registration(f"{unique}-nobody")


async def test_cli_takes_ids_in_any_case(consul_addr: str, unique: str) -> None:
    """``register --id`` prints the lowercase id, and ``status``/``deregister`` find the agent in any case."""

    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [*CLI, *arguments, "-http-addr", consul_addr]
        return subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=60, check=False)

    upper = f"{unique}-CLI".upper()
    registered = await asyncio.to_thread(
        cli, "register", "--type", "coder", "-c", "plan", "--endpoint", "http://127.0.0.1:9000", "--id", upper
    )
    assert (registered.returncode, registered.stdout.strip()) == (0, upper.lower()), registered.stderr
    status = await asyncio.to_thread(cli, "status", upper, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)[0]["agent_id"] == upper.lower()
    assert (await asyncio.to_thread(cli, "deregister", upper)).returncode == 0
    assert consul_get(consul_addr, f"/v1/agent/service/{upper.lower()}")[0] is None


async def test_a_lost_agent_is_not_re_registered_over_the_id_s_new_holder(
    consul_addr: str, unique: str
) -> None:
    """When Consul lost an agent and another type took its id meanwhile, the owner's heartbeat does not
    re-register over it: InvalidAgentError naming the new holder, and the owner's conflict says so."""
    async with AgentRegistry(consul_addr) as owner, AgentRegistry(consul_addr) as other:
        agent_id = await owner.register_agent(registration("coder", f"{unique}-lost"))
        consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")  # as Consul's reaping does
        await other.register_agent(registration("planner", agent_id, endpoint="http://10.0.0.2:2"))
        with pytest.raises(InvalidAgentError, match="held by an agent of type 'planner'"):
            await owner.heartbeat(agent_id, 0.5)
        assert "'planner'" in str(owner.registration_conflict(agent_id))
        with pytest.raises(InvalidAgentError, match="not heartbeating it"):
            await owner.heartbeat(agent_id)  # no load to publish: stopped before touching the TTL check
        assert consul_get(consul_addr, f"/v1/agent/service/{agent_id}")[0]["Service"] == "agent-planner"
        await other.deregister_agent(agent_id)


async def test_changing_an_agents_type_needs_a_deregistration_first(
    registry: AgentRegistry, unique: str
) -> None:
    """Re-registering one's own agent under another type is refused (its id is held by the old type), so no
    metadata of the old type is orphaned; after deregistering, the id is free."""
    agent_id = await registry.register_agent(registration("coder", f"{unique}-moving", metadata={"a": 1}))
    with pytest.raises(InvalidAgentError, match="held by an agent of type 'coder'"):
        await registry.register_agent(registration("planner", agent_id))
    assert await registry.deregister_agent(agent_id) is True
    assert await registry.register_agent(registration("planner", agent_id)) == agent_id
    await registry.deregister_agent(agent_id)


async def test_registrar_checks_ids_through_its_node_after_learning_it(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """A registrar (no agent:read, no node:read) learns its Consul agent's node from its first agent's check,
    then finds a mixed-case twin of its own type in the catalog and refuses to shadow it."""
    addr, master = acl_server.http_addr, master_token(acl_server)
    legacy = f"{unique}-TWIN".upper()
    consul_put(addr, "/v1/agent/service/register", {"ID": legacy, "Name": "agent-coder"}, token=master)
    try:
        async with AgentRegistry(addr, tokens["coder-registrar"]) as coder:
            first = await coder.register_agent(registration("coder", f"{unique}-first"))
            await eventually(catalog_lists(addr, "agent-coder", [first, legacy], master), what="both synced")
            with pytest.raises(InvalidAgentError, match=f"as '{legacy}'"):
                await coder.register_agent(registration("coder", legacy.lower()))
            await coder.deregister_agent(first)
    finally:
        consul_put(addr, f"/v1/agent/service/deregister/{legacy}", token=master)
