"""AgentRegistry against a real Consul: the registry core's behaviour end to end."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MakeConsul
from support import consul_get, consul_put, eventually

from consul_agents import (
    AgentNotFoundError,
    AgentRegistration,
    AgentRegistry,
    AgentStatus,
    DiscoveryRequest,
    InvalidAgentError,
    RegistryTimeoutError,
    RegistryUnavailableError,
    SelectionCriteria,
)
from consul_agents.dev import ConsulDevServer, find_consul_binary


def registration(agent_type: str, **overrides: Any) -> AgentRegistration:
    fields: dict[str, Any] = {
        "agent_type": agent_type,
        "capabilities": ["plan", "summarize"],
        "endpoint": "http://127.0.0.1:9000",
        "tags": {"tier": "gold"},
        "metadata": {"model": "m1"},
        "weight": 10,
    }
    fields.update(overrides)
    return AgentRegistration(**fields)


@pytest.fixture(scope="module")
def client_agent(consul_server: ConsulDevServer) -> Iterator[ConsulDevServer]:
    """A second Consul agent (a client, not a server) joined to the session's datacenter over LAN."""
    client = ConsulDevServer(
        datacenter=consul_server.datacenter,
        dev_mode=False,
        extra_config={"server": False, "bootstrap_expect": 0},
        retry_join=[f"127.0.0.1:{consul_server.serf_lan_port}"],
    )
    with client:
        yield client


async def test_issue_example_round_trip(registry: AgentRegistry, unique: str) -> None:
    """The issue's example works as written: register, heartbeat, discover, status, select, deregister."""
    agent_id = await registry.register_agent(registration(unique))
    await registry.heartbeat(agent_id, load=0.25)
    found = await registry.discover_agents(
        DiscoveryRequest(agent_type=unique, capabilities=["plan"], max_load=0.5)
    )
    assert [a.agent_id for a in found] == [agent_id]
    info = found[0]
    assert info.agent_type == unique
    assert info.capabilities == ["plan", "summarize"]
    assert info.status is AgentStatus.PASSING
    assert info.endpoint == "http://127.0.0.1:9000"
    assert info.current_load == 0.25
    assert info.health_score == 1.0
    assert info.tags == {"tier": "gold"}
    assert info.metadata == {"model": "m1"}
    assert info.weight == 10
    assert info.datacenter == "dc1"
    assert info.last_heartbeat is not None and info.last_heartbeat.tzinfo is not None
    assert await registry.get_agent_status(agent_id) is AgentStatus.PASSING
    chosen = await registry.select_agent(SelectionCriteria(agent_type=unique))
    assert chosen is not None and chosen.agent_id == agent_id
    assert await registry.deregister_agent(agent_id) is True
    assert await registry.deregister_agent(agent_id) is False
    assert await registry.discover_agents(DiscoveryRequest(agent_type=unique)) == []


async def test_generated_ids_are_unique_and_reregistering_updates(
    registry: AgentRegistry, unique: str
) -> None:
    """register_agent generates distinct ids, and re-registering an id updates it instead of adding one."""
    first = await registry.register_agent(registration(unique))
    second = await registry.register_agent(registration(unique))
    assert first != second and first.startswith(unique)
    again = await registry.register_agent(registration(unique, agent_id=first, weight=3, tags={"tier": "x"}))
    assert again == first
    found = {a.agent_id: a for a in await registry.discover_agents(DiscoveryRequest(agent_type=unique))}
    assert set(found) == {first, second}
    assert (found[first].weight, found[first].tags) == (3, {"tier": "x"})


async def test_consul_service_encoding_is_readable(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """Plain Consul tools show the service agent-<type> with capabilities as tags and readable Meta."""
    agent_id = await registry.register_agent(registration(unique))
    services, _ = consul_get(consul_addr, "/v1/catalog/services")
    assert sorted(services[f"agent-{unique}"]) == ["plan", "summarize"]
    entry = consul_get(consul_addr, f"/v1/catalog/service/agent-{unique}")[0][0]
    assert entry["ServiceID"] == agent_id
    assert entry["ServiceMeta"]["tier"] == "gold"
    assert entry["ServiceMeta"]["agent-endpoint"] == "http://127.0.0.1:9000"
    assert entry["ServiceWeights"] == {"Passing": 10, "Warning": 1}
    cli = await asyncio.to_thread(
        subprocess.run,
        [str(find_consul_binary()), "catalog", "services", "-tags", f"-http-addr={consul_addr}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    line = next(row for row in cli.stdout.splitlines() if row.startswith(f"agent-{unique}"))
    assert "plan,summarize" in line


async def test_filters(registry: AgentRegistry, unique: str) -> None:
    """Capabilities (all of them), tags, max_load, status and type all narrow the answer."""
    a = await registry.register_agent(registration(unique, capabilities=["plan", "code"], load=0.1))
    b = await registry.register_agent(
        registration(unique, capabilities=["plan"], tags={"tier": "x"}, load=0.9)
    )
    c = await registry.register_agent(registration(unique, capabilities=["code"], load=0.5))

    async def ids(**fields: Any) -> set[str]:
        return {
            i.agent_id for i in await registry.discover_agents(DiscoveryRequest(agent_type=unique, **fields))
        }

    assert await ids() == {a, b, c}
    assert await ids(capabilities=["plan"]) == {a, b}
    assert await ids(capabilities=["plan", "code"]) == {a}
    assert await ids(tags={"tier": "gold"}) == {a, c}
    assert await ids(tags={"tier": 'gold" or "1" == "1'}) == set()
    assert await ids(max_load=0.5) == {a, c}
    assert await ids(status=AgentStatus.PASSING) == {a, b, c}
    assert await ids(status=AgentStatus.CRITICAL) == set()
    await registry.set_maintenance(c, True, "upgrade")
    assert await ids() == {a, b}
    assert await ids(status=AgentStatus.MAINTENANCE) == {c}
    assert await registry.get_agent_status(c) is AgentStatus.MAINTENANCE


async def test_capability_search_spans_types(registry: AgentRegistry, unique: str) -> None:
    """Without a type, discovery finds every agent type that has the capabilities."""
    cap = f"cap{unique}"
    one = await registry.register_agent(registration(f"{unique}a", capabilities=[cap, "x"]))
    two = await registry.register_agent(registration(f"{unique}b", capabilities=[cap]))
    await registry.register_agent(registration(f"{unique}c", capabilities=["x"]))
    found = await registry.discover_agents(DiscoveryRequest(capabilities=[cap]))
    assert {a.agent_id for a in found} == {one, two}
    types = await registry.agent_types()
    assert types[f"{unique}a"] == sorted([cap, "x"])


async def test_heartbeat_without_change_writes_nothing(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """Heartbeats with unchanged status and load, or a load change below the threshold, write nothing."""
    agent_id = await registry.register_agent(registration(unique, load=0.3))
    path = f"/v1/health/service/agent-{unique}"
    await registry.heartbeat(agent_id, load=0.3)
    _, before = consul_get(consul_addr, path)
    for _ in range(20):
        await registry.heartbeat(agent_id, load=0.3)
    await registry.heartbeat(agent_id, load=0.32)
    _, after = consul_get(consul_addr, path)
    assert after == before
    await registry.heartbeat(agent_id, load=0.6)
    _, moved = consul_get(consul_addr, path)
    assert moved > before
    assert (await registry.get_agent(agent_id)).current_load == 0.6


async def test_load_from_another_client_is_published(consul_addr: str, unique: str) -> None:
    """A registry that did not register the agent can still heartbeat it and publish its load."""
    async with AgentRegistry(consul_addr) as owner, AgentRegistry(consul_addr) as other:
        agent_id = await owner.register_agent(registration(unique))
        await other.heartbeat(agent_id, load=0.7)
        assert (await owner.get_agent(agent_id)).current_load == 0.7
        with pytest.raises(AgentNotFoundError):
            await other.heartbeat(f"{unique}-missing", load=0.5)


async def test_ttl_expiry_turns_critical_and_hides_agent(registry: AgentRegistry, unique: str) -> None:
    """Without heartbeats the TTL check turns critical: hidden by default, found when asked for critical."""
    agent_id = await registry.register_agent(registration(unique, ttl=1))

    async def critical() -> bool:
        return await registry.get_agent_status(agent_id) is AgentStatus.CRITICAL

    await eventually(critical, timeout=20, what="TTL check turns critical")
    assert await registry.discover_agents(DiscoveryRequest(agent_type=unique)) == []
    found = await registry.discover_agents(DiscoveryRequest(agent_type=unique, status=AgentStatus.CRITICAL))
    assert [a.agent_id for a in found] == [agent_id]
    assert found[0].health_score == 0.0
    await registry.heartbeat(agent_id)
    assert await registry.get_agent_status(agent_id) is AgentStatus.PASSING


async def test_heartbeat_reregisters_lost_agent(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """A heartbeat that finds the registration gone re-registers it from the last known registration."""
    agent_id = await registry.register_agent(registration(unique, metadata={"blob": "x" * 1000}))
    consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")
    with pytest.raises(AgentNotFoundError):
        await registry.get_agent(agent_id)
    await registry.heartbeat(agent_id, load=0.4)
    info = await registry.get_agent(agent_id)
    assert (info.status, info.current_load, info.metadata) == (AgentStatus.PASSING, 0.4, {"blob": "x" * 1000})


async def test_large_metadata_lives_in_kv_and_is_removed(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """Metadata too large for Meta is kept in KV beside the registration and removed on deregistration."""
    metadata = {"prompt": "p" * 2000, "nested": {"list": [1, 2, {"deep": True}]}}
    agent_id = await registry.register_agent(registration(unique, metadata=metadata))
    assert (await registry.get_agent(agent_id)).metadata == metadata
    stored, _ = consul_get(consul_addr, f"/v1/kv/consul-agents/metadata/{unique}/{agent_id}?raw")
    assert stored == metadata
    assert await registry.deregister_agent(agent_id)
    assert consul_get(consul_addr, f"/v1/kv/consul-agents/metadata/{unique}/{agent_id}?raw")[0] is None


async def test_invalid_input_writes_nothing(registry: AgentRegistry, consul_addr: str, unique: str) -> None:
    """Invalid registrations and loads raise InvalidAgentError naming the field, and Consul is untouched."""
    _, before = consul_get(consul_addr, "/v1/catalog/services")
    with pytest.raises(InvalidAgentError) as bad_type:
        registration("bad type")
    assert bad_type.value.field == "agent_type"
    with pytest.raises(InvalidAgentError) as bad_cap:
        registration(unique, capabilities=["plan", "a,b=c"])
    assert bad_cap.value.field == "capabilities"
    agent_id = await registry.register_agent(registration(unique))
    _, registered = consul_get(consul_addr, "/v1/catalog/services")
    for load in (float("nan"), -0.1, 1.5):
        with pytest.raises(InvalidAgentError) as bad_load:
            await registry.heartbeat(agent_id, load=load)
        assert bad_load.value.field == "load"
    _, after = consul_get(consul_addr, "/v1/catalog/services")
    assert registered > before and after == registered


async def test_unknown_agent(registry: AgentRegistry, unique: str) -> None:
    """Unknown ids raise AgentNotFoundError for reads and heartbeats, and deregistering them returns False."""
    with pytest.raises(AgentNotFoundError):
        await registry.get_agent_status(f"{unique}-nope")
    with pytest.raises(AgentNotFoundError):
        await registry.heartbeat(f"{unique}-nope")
    assert await registry.deregister_agent(f"{unique}-nope") is False


async def test_reads_agree_through_any_agent_of_the_datacenter(
    consul_addr: str, client_agent: ConsulDevServer, unique: str
) -> None:
    """An agent registered through one Consul agent is found, with its status, through another."""
    async with AgentRegistry(client_agent.http_addr) as via_client, AgentRegistry(consul_addr) as via_server:
        agent_id = await via_client.register_agent(registration(unique))

        async def visible() -> bool:
            return bool(await via_server.discover_agents(DiscoveryRequest(agent_type=unique)))

        await eventually(visible, what="registration synced to the catalog")
        found = await via_server.discover_agents(DiscoveryRequest(agent_type=unique))
        assert [a.agent_id for a in found] == [agent_id]
        assert found[0].node == client_agent.node_name
        assert await via_server.get_agent_status(agent_id) is found[0].status
        await via_client.heartbeat(agent_id, load=0.8)

        async def load_seen() -> bool:
            return (await via_server.get_agent(agent_id)).current_load == 0.8

        await eventually(load_seen, what="load visible through the other agent")
        assert await via_client.deregister_agent(agent_id)


async def test_session_heartbeats_and_deregisters(registry: AgentRegistry, unique: str) -> None:
    """session() registers, heartbeats in the background with the current load, and deregisters on exit."""
    async with registry.session(registration(unique, ttl=3), interval=0.1) as session:
        session.load = 0.75

        async def load_published() -> bool:
            return (
                session.heartbeats >= 2 and (await registry.get_agent(session.agent_id)).current_load == 0.75
            )

        await eventually(load_published, what="background heartbeat publishes the load")
        agent_id = session.agent_id
    with pytest.raises(AgentNotFoundError):
        await registry.get_agent(agent_id)


async def test_session_deregisters_on_cancellation(registry: AgentRegistry, unique: str) -> None:
    """Cancelling the task that holds a session still deregisters the agent."""
    entered = asyncio.Event()
    ids: list[str] = []

    async def hold() -> None:
        async with registry.session(registration(unique)) as session:
            ids.append(session.agent_id)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(AgentNotFoundError):
        await registry.get_agent(ids[0])


async def test_unreachable_consul_is_reported_with_its_address() -> None:
    """A closed port gives RegistryUnavailableError naming the address, not an aiohttp traceback."""
    async with AgentRegistry("http://127.0.0.1:9") as registry:
        with pytest.raises(RegistryUnavailableError) as caught:
            await registry.discover_agents(DiscoveryRequest(agent_type="x"))
    assert "http://127.0.0.1:9" in str(caught.value)
    assert caught.value.address == "http://127.0.0.1:9"


async def test_reads_are_retried_longer_after_an_rpc_error(
    make_consul: MakeConsul, caplog: pytest.LogCaptureFixture
) -> None:
    """A Consul agent whose server just died answers with an RPC error; it moves on to another server for
    the next request, so such a read gets four retries over 1.8 s. An agent that cannot be reached at
    all gets two, so that fail-static and failover act at once."""
    caplog.set_level(logging.DEBUG, logger="consul_agents.gateway")

    def retries() -> int:
        return sum(r.getMessage().startswith("retrying") for r in caplog.records)

    server = make_consul(dev_mode=False)
    client = make_consul(
        dev_mode=False,
        extra_config={"server": False, "bootstrap_expect": 0},
        retry_join=[f"127.0.0.1:{server.serf_lan_port}"],
    )
    async with AgentRegistry(client.http_addr, cache=False) as registry:
        assert await registry.agent_types() == {}
        server.kill()
        with pytest.raises(RegistryUnavailableError, match=r"(?i)rpc error|no known consul servers"):
            await registry.agent_types()
    assert retries() == 4
    caplog.clear()
    async with AgentRegistry("http://127.0.0.1:9", cache=False) as registry:
        with pytest.raises(RegistryUnavailableError, match="unreachable"):
            await registry.agent_types()
    assert retries() == 2


async def test_silent_consul_times_out_in_bounded_time() -> None:
    """A peer that accepts connections but never answers gives RegistryTimeoutError within the timeout."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, AgentRegistry(f"http://127.0.0.1:{port}", timeout=0.3) as registry:
        started = time.monotonic()
        with pytest.raises(RegistryTimeoutError):
            await registry.register_agent(registration("x"))
        assert time.monotonic() - started < 5
    for writer in accepted:
        writer.close()
        await writer.wait_closed()


async def test_environment_variables_and_explicit_arguments(
    consul_addr: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no arguments CONSUL_HTTP_ADDR is used; an explicit address wins over it."""
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_addr.removeprefix("http://"))
    async with AgentRegistry() as from_env:
        agent_id = await from_env.register_agent(registration(unique))
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:9")
    async with AgentRegistry(consul_addr) as explicit:
        assert await explicit.get_agent_status(agent_id) is AgentStatus.PASSING
    async with AgentRegistry() as broken:
        with pytest.raises(RegistryUnavailableError):
            await broken.get_agent_status(agent_id)
