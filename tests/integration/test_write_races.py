"""Nothing half-written, nothing resurrected, nothing orphaned: writes racing each other on one agent, and
the KV metadata agents leave behind. Against real Consul; ACLs where tokens matter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from acl_support import acl_consul, master_token, token_secrets
from aiohttp import test_utils
from processes import CLI, cli_env
from support import consul_get, consul_put, registration

from consul_agents import AgentNotFoundError, AgentRegistry, PermissionDeniedError
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer

TRIALS = 30
BIG = {"doc": "m" * 2000}  # too large for Meta: kept in KV


def big(agent_type: str, agent_id: str, **fields: Any) -> Any:
    fields.setdefault("metadata", BIG)
    return registration(agent_type, agent_id=agent_id, ttl=timedelta(hours=1), load=0.5, **fields)


def local_service(addr: str, agent_id: str, token: str | None = None) -> Any:
    return consul_get(addr, f"/v1/agent/service/{agent_id}", token)[0]


def kv_value(addr: str, key: str, token: str | None = None) -> Any:
    return consul_get(addr, f"/v1/kv/{key}?raw", token)[0]


def metadata_key(agent_type: str, agent_id: str) -> str:
    return f"consul-agents/metadata/{agent_type}/{agent_id}"


async def test_deregister_racing_a_heartbeat_never_brings_the_agent_back(
    registry: AgentRegistry, unique: str
) -> None:
    """deregister_agent racing a heartbeat that re-publishes the load, on one client: once deregister
    returns True the agent and its metadata are gone, in every trial (before: back in 26 of 30)."""
    addr = registry.settings.address
    back = []
    for trial in range(TRIALS):
        agent_id = await registry.register_agent(big("coder", f"{unique}-{trial}"))

        async def beat(agent_id: str = agent_id, trial: int = trial) -> None:
            # AgentNotFoundError: it ran after the deregistration, and the agent is gone, as it should be.
            with contextlib.suppress(AgentNotFoundError):
                await registry.heartbeat(agent_id, 1.0 if trial % 2 else 0.0)

        calls = [beat(), registry.deregister_agent(agent_id)]
        results = await asyncio.gather(*(calls if trial % 3 else reversed(calls)))
        assert True in results
        if local_service(addr, agent_id) is not None or kv_value(addr, metadata_key("coder", agent_id)):
            back.append(trial)
            consul_put(addr, f"/v1/agent/service/deregister/{agent_id}")
    assert back == []


async def test_a_cancelled_deregistration_is_never_undone_by_a_heartbeat(
    registry: AgentRegistry, unique: str
) -> None:
    """A deregistration cancelled at any point: if the agent is gone from Consul, the client's next heartbeat
    does not re-register it from memory."""
    addr = registry.settings.address
    back = []
    for trial in range(TRIALS):
        agent_id = await registry.register_agent(big("coder", f"{unique}-{trial}"))
        task = asyncio.create_task(registry.deregister_agent(agent_id))
        for _ in range(trial % 6):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gone = local_service(addr, agent_id) is None
        with contextlib.suppress(AgentNotFoundError):
            await registry.heartbeat(agent_id, 0.0)
        if gone and local_service(addr, agent_id) is not None:
            back.append(trial)
        await registry.deregister_agent(agent_id)
    assert back == []


async def test_rest_deregister_racing_a_rest_heartbeat_never_brings_the_agent_back(
    consul_addr: str, unique: str
) -> None:
    """The same race through the REST API: DELETE answered 200 means the agent stays gone (before: back in
    8 of 30)."""
    back = []
    body = {"agent_type": "coder", "capabilities": ["plan"], "endpoint": "http://127.0.0.1:9000"}
    async with test_utils.TestClient(test_utils.TestServer(create_app(consul_addr))) as api:
        for trial in range(TRIALS):
            created = await api.post(
                "/v1/agents", json={**body, "agent_id": f"{unique}-{trial}", "metadata": BIG, "load": 0.5}
            )
            agent_id = (await created.json())["agent_id"]
            load = {"load": 1.0 if trial % 2 else 0.0}
            beat = api.put(f"/v1/agents/{agent_id}/heartbeat", json=load)
            delete = api.delete(f"/v1/agents/{agent_id}")
            beat_answer, delete_answer = await asyncio.gather(beat, delete)
            assert delete_answer.status == 200 and beat_answer.status in (200, 204, 404)
            if local_service(consul_addr, agent_id) is not None:
                back.append(trial)
                consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")
    assert back == []


async def test_views_for_other_tokens_share_the_write_locks(registry: AgentRegistry, unique: str) -> None:
    """A deregistration through one token's view racing a load report through another view of the same
    registry (as the REST API serves two callers) never brings the agent back."""
    addr = registry.settings.address
    owner, other = registry.with_token("token-a"), registry.with_token("token-b")
    back = []
    for trial in range(TRIALS):
        agent_id = await owner.register_agent(big("coder", f"{unique}-{trial}"))

        async def beat(agent_id: str = agent_id, trial: int = trial) -> None:
            with contextlib.suppress(AgentNotFoundError):
                await other.heartbeat(agent_id, 1.0 if trial % 2 else 0.0)

        await asyncio.gather(beat(), owner.deregister_agent(agent_id))
        if local_service(addr, agent_id) is not None:
            back.append(trial)
            consul_put(addr, f"/v1/agent/service/deregister/{agent_id}")
    assert back == []


async def test_two_clients_registering_one_id_at_once_leave_it_whole(consul_addr: str, unique: str) -> None:
    """Two clients registering the same id at once (one moving its metadata from KV to Meta, the other
    putting metadata in KV), then heartbeating it: whoever wins, Meta saying "kv" has its KV entry, and an
    entry left stale beside Meta that holds the metadata is the reaper's."""
    broken = []
    async with AgentRegistry(consul_addr) as one, AgentRegistry(consul_addr) as two:
        for trial in range(TRIALS):
            agent_id = f"{unique}-{trial}"
            await one.register_agent(big("coder", agent_id, metadata={"by": "one", **BIG}))
            first, second = (
                one.register_agent(big("coder", agent_id, metadata={"small": True})),
                two.register_agent(big("coder", agent_id, metadata={"by": "two", **BIG})),
            )
            await asyncio.gather(*((first, second) if trial % 2 else (second, first)))
            if trial % 3 == 0:
                await asyncio.gather(one.heartbeat(agent_id, 0.0), two.heartbeat(agent_id, 1.0))
            meta = local_service(consul_addr, agent_id)["Meta"]
            stored = kv_value(consul_addr, metadata_key("coder", agent_id))
            if meta.get("agent-metadata") == "kv" and not stored:
                broken.append(trial)
            if meta.get("agent-metadata") != "kv" and stored:
                # Stale, not broken: readers go by Meta. The reaper removes it.
                assert metadata_key("coder", agent_id) in await one.reap_metadata()
            await one.deregister_agent(agent_id)
            assert kv_value(consul_addr, metadata_key("coder", agent_id)) is None
    assert broken == []


async def test_metadata_follows_registrations_from_other_clients(consul_addr: str, unique: str) -> None:
    """Large metadata left in KV is removed when another client re-registers the id with small metadata,
    and when another client deregisters it (old metadata may hold secrets)."""
    agent_id = f"{unique}-moving"
    key = metadata_key("coder", agent_id)
    async with AgentRegistry(consul_addr) as first:
        await first.register_agent(big("coder", agent_id))
    assert kv_value(consul_addr, key) == BIG
    async with AgentRegistry(consul_addr) as second:
        await second.register_agent(big("coder", agent_id, metadata={"small": 1}))
    assert kv_value(consul_addr, key) is None
    async with AgentRegistry(consul_addr) as third:
        await third.register_agent(big("coder", agent_id))
    async with AgentRegistry(consul_addr) as fourth:
        assert await fourth.deregister_agent(agent_id) is True
    assert kv_value(consul_addr, key) is None


async def test_deregistering_from_another_client_removes_metadata_its_meta_no_longer_names(
    consul_addr: str, unique: str
) -> None:
    """Metadata left in KV beside an agent whose Meta no longer points at it goes with the agent."""
    agent_id = f"{unique}-stale"
    key = metadata_key("coder", agent_id)
    consul_put(consul_addr, f"/v1/kv/{key}", {"secret": "old"})
    async with AgentRegistry(consul_addr) as owner:
        owner_id = await owner.register_agent(registration("coder", agent_id=agent_id))
        assert owner_id == agent_id
    async with AgentRegistry(consul_addr) as other:
        assert await other.deregister_agent(agent_id) is True
    assert kv_value(consul_addr, key) is None


async def test_deregistering_an_agent_consul_reaped_removes_its_metadata(
    consul_addr: str, unique: str
) -> None:
    """Deregistering an agent Consul already reaped answers False and, with a token that can see the
    catalog, removes the metadata the agent left in KV (the reaper, done in passing)."""
    async with AgentRegistry(consul_addr) as owner:
        agent_id = await owner.register_agent(big("coder", f"{unique}-reaped"))
        kept = await owner.register_agent(big("coder", f"{unique}-kept"))
    consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")  # what Consul's reaping does
    async with AgentRegistry(consul_addr) as other:
        assert await other.deregister_agent(agent_id) is False
        assert kv_value(consul_addr, metadata_key("coder", agent_id)) is None
        assert kv_value(consul_addr, metadata_key("coder", kept)) == BIG
        assert await other.deregister_agent(kept) is True


# -- the reaper, with ACLs -----------------------------------------------------------------------------------

SPECS = (
    {"name": "coder-registrar", "kind": "registrar", "agent_types": ["coder"]},
    {"name": "ops", "kind": "operator"},
)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(acl_server: ConsulDevServer) -> dict[str, str]:
    return token_secrets(acl_server, *SPECS)


async def test_reaper_removes_metadata_of_agents_consul_reaped(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """An agent removed by Consul (as its reaping does) leaves its KV metadata; reap_metadata deletes it and
    keeps the metadata of live agents. A dry run deletes nothing."""
    addr, master = acl_server.http_addr, master_token(acl_server)
    async with AgentRegistry(addr, tokens["coder-registrar"]) as coder:
        live = await coder.register_agent(big("coder", f"{unique}-live"))
        gone = await coder.register_agent(big("coder", f"{unique}-gone"))
    consul_put(addr, f"/v1/agent/service/deregister/{gone}", token=master)  # what Consul's reaping does
    assert kv_value(addr, metadata_key("coder", gone), master) == BIG
    foreign = [
        "consul-agents/metadata/Coder/x",
        "consul-agents/metadata/coder/x%20y",
        "consul-agents/metadata/c/d/e",
    ]
    for key in foreign:  # not keys this library writes: never read nor deleted
        consul_put(addr, f"/v1/kv/{key}", {"not": "ours"}, token=master)
    async with AgentRegistry(addr, tokens["ops"]) as ops:
        assert await ops.reap_metadata(dry_run=True) == [metadata_key("coder", gone)]
        assert kv_value(addr, metadata_key("coder", gone), master) == BIG
        assert await ops.reap_metadata() == [metadata_key("coder", gone)]
        assert await ops.reap_metadata() == []
        assert await ops.deregister_agent(live) is True
    assert kv_value(addr, metadata_key("coder", gone), master) is None
    assert kv_value(addr, metadata_key("coder", live), master) is None
    assert [kv_value(addr, key, master) for key in foreign] == [{"not": "ours"}] * len(foreign)


async def test_reaper_refuses_a_token_that_cannot_see_agents(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """A registrar token (no node read: every health answer comes back empty) cannot reap: it is refused
    instead of taking every entry for an orphan, and nothing is deleted."""
    addr, master = acl_server.http_addr, master_token(acl_server)
    async with AgentRegistry(addr, tokens["coder-registrar"]) as coder:
        live = await coder.register_agent(big("coder", f"{unique}-kept"))
        with pytest.raises(PermissionDeniedError, match="cannot read nodes"):
            await coder.reap_metadata()
        assert kv_value(addr, metadata_key("coder", live), master) == BIG
        await coder.deregister_agent(live)


def test_reap_metadata_command(acl_server: ConsulDevServer, tokens: dict[str, str], unique: str) -> None:
    """``consul-agents reap-metadata --json`` deletes an orphaned entry and says which."""
    addr, master = acl_server.http_addr, master_token(acl_server)
    key = metadata_key("coder", f"{unique}-orphan")
    consul_put(addr, f"/v1/kv/{key}", BIG, token=master)
    command = [*CLI, "reap-metadata", "-http-addr", addr, "-token", tokens["ops"], "--json"]
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"reaped": [key], "dry_run": False}
    assert kv_value(addr, key, master) is None
