"""A2A agents in the registry, against real Consul and real a2a-sdk agents: registration from the card an
agent serves, cards read back, hostile cards refused with nothing written, draining."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from processes import CLI, A2AAgent, cli_env, two_a2a_agents
from support import consul_get, consul_put, eventually

from consul_agents import (
    AgentNotFoundError,
    AgentRegistration,
    AgentRegistry,
    AgentStatus,
    ConsulRequestError,
    DiscoveryRequest,
    InvalidAgentError,
    SelectionCriteria,
)
from consul_agents._cards import card_digest, card_text
from consul_agents.dev import ConsulDevServer


@pytest.fixture(scope="module")
def agents() -> Iterator[tuple[A2AAgent, A2AAgent]]:
    """Two real A2A agents: alpha (skills echo, hello_world) and beta (summarize)."""
    with two_a2a_agents() as pair:
        yield pair


def kv_keys(addr: str, prefix: str) -> list[str]:
    keys, _ = consul_get(addr, f"/v1/kv/{prefix}?keys")
    return list(keys or [])


async def test_registered_card_is_discoverable_by_skill_and_read_back_equal(
    consul_addr: str, registry: AgentRegistry, unique: str, agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """Agents registered from their served cards are found by skill, and their cards read back equal."""
    alpha, _beta = agents
    served = {a.name: a.card() for a in agents}
    ids = {
        a.name: await registry.register_agent(
            AgentRegistration.from_agent_card(
                served[a.name], agent_type=unique, agent_id=f"{unique}-{a.name}"
            )
        )
        for a in agents
    }
    # Other tests' agents may share the Consul: only this test's type is looked at.
    every = await registry.discover_agents(DiscoveryRequest(capabilities=["hello-world"]), cached=False)
    found = [a for a in every if a.agent_type == unique]
    assert [a.agent_id for a in found] == [ids["alpha"]]
    assert found[0].endpoint == f"{alpha.endpoint}/"
    assert found[0].card_version == "1.0.0"
    assert found[0].card_digest == card_digest(card_text(served["alpha"]))
    assert not any(key.startswith("agent-") for key in found[0].tags)
    cached = await registry.discover_agents(DiscoveryRequest(capabilities=["summarize"]))
    assert [a.agent_id for a in cached if a.agent_type == unique] == [ids["beta"]]
    for agent in agents:
        assert await registry.get_agent_card(ids[agent.name]) == served[agent.name]
    # Plain Consul tools see the card beside the metadata, and its digest and version in Meta.
    services, _ = consul_get(consul_addr, f"/v1/catalog/service/agent-{unique}")
    meta = {s["ServiceID"]: s["ServiceMeta"] for s in services}
    assert meta[ids["beta"]]["agent-card-version"] == "1.0.0"
    assert kv_keys(consul_addr, f"consul-agents/metadata/{unique}/") == sorted(
        f"consul-agents/metadata/{unique}/{ids[name]}/card/{card_digest(card_text(served[name]))[7:]}"
        for name in ids
    )
    for agent_id in ids.values():
        assert await registry.deregister_agent(agent_id)
    assert kv_keys(consul_addr, f"consul-agents/metadata/{unique}/") == []


async def test_a_changed_card_replaces_the_old_one_under_a_new_key(
    consul_addr: str, registry: AgentRegistry, unique: str, agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """Re-registering with a changed card stores it under its own digest and removes the previous card, so a
    reader always finds the card Meta names; dropping the card removes it."""
    alpha, _ = agents
    first = alpha.card()
    second = {**first, "version": "2.0.0"}
    agent_id = f"{unique}-1"
    prefix = f"consul-agents/metadata/{unique}/{agent_id}/card/"
    for card in (first, second):
        await registry.register_agent(
            AgentRegistration.from_agent_card(card, agent_type=unique, agent_id=agent_id)
        )
        assert kv_keys(consul_addr, prefix) == [prefix + card_digest(card_text(card))[7:]]
        assert await registry.get_agent_card(agent_id) == card
    assert (await registry.get_agent(agent_id)).card_version == "2.0.0"
    await registry.register_agent(
        AgentRegistration(
            agent_type=unique, agent_id=agent_id, capabilities=["echo"], endpoint=alpha.endpoint
        )
    )
    assert kv_keys(consul_addr, prefix) == []
    await registry.deregister_agent(agent_id)


async def test_agent_without_card_and_unknown_agent_have_no_card(
    registry: AgentRegistry, unique: str
) -> None:
    """get_agent_card raises AgentNotFoundError for an agent registered without a card."""
    agent_id = await registry.register_agent(
        AgentRegistration(agent_type=unique, capabilities=["plan"], endpoint="http://127.0.0.1:9")
    )
    with pytest.raises(AgentNotFoundError, match="without an A2A Agent Card"):
        await registry.get_agent_card(agent_id)
    with pytest.raises(AgentNotFoundError):
        await registry.get_agent_card(f"{unique}-nobody")
    await registry.deregister_agent(agent_id)


async def test_a_card_replaced_in_kv_is_refused(
    consul_addr: str, registry: AgentRegistry, unique: str, agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """A card overwritten in KV by another writer no longer matches the digest in Meta and is refused."""
    alpha, beta = agents
    agent_id = await registry.register_agent(
        AgentRegistration.from_agent_card(alpha.card(), agent_type=unique)
    )
    digest = card_digest(card_text(alpha.card()))[7:]
    consul_put(consul_addr, f"/v1/kv/consul-agents/metadata/{unique}/{agent_id}/card/{digest}", beta.card())
    fresh = AgentRegistry(consul_addr)
    async with fresh:
        with pytest.raises(ConsulRequestError, match="does not match the digest"):
            await fresh.get_agent_card(agent_id)
    await registry.deregister_agent(agent_id)


async def test_a_card_that_is_not_utf8_is_refused_and_left_out_of_listings(
    consul_addr: str, registry: AgentRegistry, unique: str, agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """Bytes that are not UTF-8 under an agent's card key give a clear error, and listings skip the agent."""
    alpha, beta = agents
    broken = await registry.register_agent(AgentRegistration.from_agent_card(alpha.card(), agent_type=unique))
    fine = await registry.register_agent(AgentRegistration.from_agent_card(beta.card(), agent_type=unique))
    async with aiohttp.ClientSession() as http:
        digest = card_digest(card_text(alpha.card()))[7:]
        url = f"{consul_addr}/v1/kv/consul-agents/metadata/{unique}/{broken}/card/{digest}"
        async with http.put(url, data=b"\xff\xfe{") as answer:
            assert answer.status == 200
    async with AgentRegistry(consul_addr) as fresh:
        with pytest.raises(ConsulRequestError, match="not UTF-8"):
            await fresh.get_agent_card(broken)
        listed = await fresh.agent_cards(DiscoveryRequest(agent_type=unique))
        assert [entry.agent.agent_id for entry in listed] == [fine]
    for agent_id in (broken, fine):
        await registry.deregister_agent(agent_id)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def hostile_cards(served: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "huge": {**served, "description": "x" * 200_000},
        "deep": {**served, "capabilities": {"extensions": [{"params": {"p": _deep(60)}}]}},
        "skill-not-label": {**served, "skills": [{"id": "日本語", "name": "n"}]},
        "interface-not-url": {
            **served,
            "supportedInterfaces": [{"url": "javascript:alert(1)", "protocolBinding": "JSONRPC"}],
        },
        "no-version": {k: v for k, v in served.items() if k != "version"},
    }


async def test_hostile_cards_are_refused_and_nothing_is_written(
    consul_addr: str, api: Any, unique: str, agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """Hostile cards sent to the REST API get a 4xx naming the problem; Consul holds nothing afterwards."""
    served = agents[0].card()
    for name, card in hostile_cards(served).items():
        with pytest.raises(InvalidAgentError):
            AgentRegistration.from_agent_card(card, agent_type=unique)
        body = {
            "agent_type": unique,
            "capabilities": ["echo", "hello-world"],
            "endpoint": "http://127.0.0.1:9",
            "card": card,
        }
        response = await api.post("/v1/agents", data=json.dumps(body))
        text = await response.text()
        # The REST body reader may refuse first (400, e.g. nesting past its own bound); either way a clear
        # client error naming the problem, never a 500, and nothing written.
        assert response.status in (400, 422), (name, text)
        message = json.loads(text)["message"]
        assert "card" in message or "deep" in message, (name, message)
    services, _ = consul_get(consul_addr, f"/v1/catalog/service/agent-{unique}")
    assert services == []
    assert kv_keys(consul_addr, f"consul-agents/metadata/{unique}/") == []


async def srv_ports(dns_port: int, name: str) -> set[int]:
    query = dns.message.make_query(name, dns.rdatatype.SRV)
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=dns_port, timeout=3)
    if response.rcode() == dns.rcode.NXDOMAIN:
        return set()
    return {r.port for rrset in response.answer if rrset.rdtype == dns.rdatatype.SRV for r in rrset}


async def test_draining_agent_is_never_selected_and_leaves_dns(
    consul_server: ConsulDevServer, registry: AgentRegistry, unique: str
) -> None:
    """A draining agent keeps passing, is discovered only on request, never selected, and absent from DNS
    SRV answers; undraining restores it."""
    ids = [
        await registry.register_agent(
            AgentRegistration(
                agent_type=unique,
                capabilities=["work"],
                endpoint=f"http://127.0.0.1:{port}",
                agent_id=f"{unique}-{port}",
                ttl=2,
            )
        )
        for port in (7001, 7002)
    ]
    name = f"work.agent-{unique}.service.consul"
    assert await srv_ports(consul_server.dns_port, name) == {7001, 7002}
    await registry.set_draining(ids[0], True)

    async def gone_from_dns() -> bool:
        return await srv_ports(consul_server.dns_port, name) == {7002}

    await eventually(gone_from_dns, 10, "draining agent out of DNS")
    for cached in (False, True):
        found = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=cached)
        assert [a.agent_id for a in found] == [ids[1]]
        every = await registry.discover_agents(
            DiscoveryRequest(agent_type=unique, include_draining=True), cached=cached
        )
        assert {a.agent_id: a.draining for a in every} == {ids[0]: True, ids[1]: False}
        assert {a.status for a in every} == {AgentStatus.PASSING}
    criteria = SelectionCriteria(agent_type=unique, include_draining=True, strategy="round_robin")
    picked = {(await registry.select_agent(criteria)).agent_id for _ in range(20)}  # type: ignore[union-attr]
    assert picked == {ids[1]}
    # It keeps heartbeating: still passing after more than one TTL.
    for _ in range(3):
        await registry.heartbeat(ids[0])
    await registry.set_draining(ids[0], False)

    async def back_in_dns() -> bool:
        return await srv_ports(consul_server.dns_port, name) == {7001, 7002}

    await eventually(back_in_dns, 10, "undrained agent back in DNS")
    found = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=False)
    assert [a.agent_id for a in found] == ids and not any(a.draining for a in found)
    with pytest.raises(AgentNotFoundError):
        await registry.set_draining(f"{unique}-nobody", True)
    for agent_id in ids:
        await registry.deregister_agent(agent_id)
    checks, _ = consul_get(
        consul_server.http_addr,
        "/v1/agent/checks?filter=" + urllib.parse.quote(f'ServiceName == "agent-{unique}"'),
    )
    assert checks == {}


def cli(*args: str, addr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args, "-http-addr", addr],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=cli_env(),
    )


async def test_cli_drains_undrains_and_shows_cards(
    consul_addr: str, registry: AgentRegistry, unique: str, agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """`drain`/`undrain` change an agent's draining flag; `card` prints the card; `cards` lists them."""
    alpha, _ = agents
    agent_id = await registry.register_agent(
        AgentRegistration.from_agent_card(alpha.card(), agent_type=unique)
    )
    assert cli("drain", agent_id, addr=consul_addr).returncode == 0
    assert (await registry.get_agent(agent_id)).draining
    listed = cli("cards", "--type", unique, "--draining", addr=consul_addr)
    assert listed.returncode == 0 and "passing,draining" in listed.stdout and "alpha" in listed.stdout
    assert cli("undrain", agent_id, addr=consul_addr).returncode == 0
    assert not (await registry.get_agent(agent_id)).draining
    shown = cli("card", agent_id, addr=consul_addr)
    assert json.loads(shown.stdout) == alpha.card()
    missing = cli("drain", f"{unique}-nobody", addr=consul_addr)
    assert missing.returncode == 3 and "nobody" in missing.stderr
    await registry.deregister_agent(agent_id)


async def test_draining_survives_the_re_registration_after_a_loss(
    consul_addr: str, registry: AgentRegistry, unique: str
) -> None:
    """When Consul loses a draining agent, the heartbeat that registers it again drains it again."""
    agent_id = await registry.register_agent(
        AgentRegistration(agent_type=unique, capabilities=["work"], endpoint="http://127.0.0.1:7003", ttl=60)
    )
    await registry.set_draining(agent_id)
    consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")
    await registry.heartbeat(agent_id)
    info = await registry.get_agent(agent_id)
    assert info.draining and info.status is AgentStatus.PASSING
    await registry.deregister_agent(agent_id)


async def test_cli_discover_shows_draining_agents_only_when_asked(
    consul_addr: str, registry: AgentRegistry, unique: str
) -> None:
    """`discover --draining` lists a draining agent flagged draining; plain `discover` leaves it out."""
    agent_id = await registry.register_agent(
        AgentRegistration(agent_type=unique, capabilities=["work"], endpoint="http://127.0.0.1:7004", ttl=60)
    )
    await registry.set_draining(agent_id)
    plain = cli("discover", "--type", unique, addr=consul_addr)
    asked = cli("discover", "--type", unique, "--draining", addr=consul_addr)
    await registry.deregister_agent(agent_id)
    assert plain.returncode == 0 and agent_id not in plain.stdout
    assert asked.returncode == 0 and agent_id in asked.stdout and "passing,draining" in asked.stdout
