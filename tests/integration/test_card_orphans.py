"""Nothing half-written around A2A cards, against a real Consul with ACLs: a registration whose service write
Consul refuses leaves no card and no KV metadata behind (but never removes what the live registration of
the id uses), and the reaper removes the cards no registered agent names (left by a crash between writes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from acl_support import acl_consul, master_token
from support import consul_get, consul_put

from consul_agents import AgentRegistration, AgentRegistry, PermissionDeniedError
from consul_agents._cards import card_digest, card_text
from consul_agents.dev import ConsulDevServer

#: Metadata too large for service Meta: it goes to KV, like the card.
BIG = {"blob": "x" * 2000}


def card(version: str = "1.0.0") -> dict[str, Any]:
    return {
        "name": "Echo",
        "description": "Repeats what it is told",
        "version": version,
        "supportedInterfaces": [{"url": "http://127.0.0.1:9301/", "protocolBinding": "JSONRPC"}],
        "skills": [{"id": "echo", "name": "Echo", "description": "Repeats", "tags": []}],
    }


def card_key(agent_type: str, agent_id: str, the_card: dict[str, Any]) -> str:
    digest = card_digest(card_text(the_card)).removeprefix("sha256:")
    return f"consul-agents/metadata/{agent_type}/{agent_id}/card/{digest}"


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


def kv_keys(server: ConsulDevServer, agent_type: str) -> list[str]:
    """Every KV key under the type's metadata prefix, read with the master token."""
    keys, _ = consul_get(
        server.http_addr, f"/v1/kv/consul-agents/metadata/{agent_type}/?keys", master_token(server)
    )
    return sorted(keys or [])


def kv_writer_token(server: ConsulDevServer, agent_type: str, extra_rules: str = "") -> str:
    """A token that may write the type's KV and read its service and the nodes, but not register it."""
    master = master_token(server)
    rules = (
        f'key_prefix "consul-agents/metadata/{agent_type}/" {{ policy = "write" }}\n'
        f'service "agent-{agent_type}" {{ policy = "read" }}\n'
        'node_prefix "" { policy = "read" }\n'
    ) + extra_rules
    consul_put(server.http_addr, "/v1/acl/policy", {"Name": f"kv-only-{agent_type}", "Rules": rules}, master)
    token = consul_put(
        server.http_addr, "/v1/acl/token", {"Policies": [{"Name": f"kv-only-{agent_type}"}]}, master
    )
    return str(token["SecretID"])


async def test_a_refused_registration_leaves_no_card_and_no_metadata(
    server: ConsulDevServer, unique: str
) -> None:
    """A token that may write the type's KV but not register its service gets PermissionDeniedError, and
    neither the card nor the KV metadata it wrote before the service stays in KV."""
    limited = kv_writer_token(server, unique)
    async with AgentRegistry(server.http_addr, limited) as registry:
        registration = AgentRegistration.from_agent_card(
            card(), agent_type=unique, agent_id=f"{unique}-1", metadata=BIG
        )
        with pytest.raises(PermissionDeniedError):
            await registry.register_agent(registration)
    assert kv_keys(server, unique) == []


async def test_a_refused_card_write_leaves_no_metadata(server: ConsulDevServer, unique: str) -> None:
    """When Consul refuses the card write itself (here: the token may write the agent's metadata key but
    not its cards), the KV metadata written just before is removed too."""
    agent_id = f"{unique}-1"
    no_cards = f'key_prefix "consul-agents/metadata/{unique}/{agent_id}/card/" {{ policy = "deny" }}\n'
    limited = kv_writer_token(server, unique, no_cards)
    async with AgentRegistry(server.http_addr, limited) as registry:
        registration = AgentRegistration.from_agent_card(
            card(), agent_type=unique, agent_id=agent_id, metadata=BIG
        )
        with pytest.raises(PermissionDeniedError):
            await registry.register_agent(registration)
    assert kv_keys(server, unique) == []


async def test_a_refused_update_keeps_what_the_live_registration_uses(
    server: ConsulDevServer, unique: str
) -> None:
    """When Consul refuses an update of a registered agent, the card and metadata its live registration
    names stay (its card still reads back), and only the new card the refused update wrote is removed."""
    agent_id = f"{unique}-1"
    limited = kv_writer_token(server, unique)
    async with (
        AgentRegistry(server.http_addr, master_token(server)) as admin,
        AgentRegistry(server.http_addr, limited) as registry,
    ):
        await admin.register_agent(
            AgentRegistration.from_agent_card(card(), agent_type=unique, agent_id=agent_id, metadata=BIG)
        )
        live = kv_keys(server, unique)
        assert live == sorted(
            [f"consul-agents/metadata/{unique}/{agent_id}", card_key(unique, agent_id, card())]
        )
        for version in ("1.0.0", "2.0.0"):
            update = AgentRegistration.from_agent_card(
                card(version), agent_type=unique, agent_id=agent_id, metadata=BIG
            )
            with pytest.raises(PermissionDeniedError):
                await registry.register_agent(update)
            assert kv_keys(server, unique) == live, version
        assert await admin.get_agent_card(agent_id) == card()
        await admin.deregister_agent(agent_id)


async def test_the_reaper_removes_cards_no_agent_names(server: ConsulDevServer, unique: str) -> None:
    """reap_metadata deletes the card of an id no agent holds and a card of a live agent that its Meta does
    not name (a crash between writes left them); the live card and keys that are not cards stay; a dry
    run lists the same keys and deletes nothing."""
    master = master_token(server)
    agent_id = f"{unique}-1"
    gone = card_key(unique, f"{unique}-gone", card())
    replaced = card_key(unique, agent_id, card("0.9.0"))
    foreign = f"consul-agents/metadata/{unique}/{agent_id}/card/{hashlib.sha256(b'x').hexdigest()[:10]}"
    async with AgentRegistry(server.http_addr, master) as admin:
        await admin.register_agent(
            AgentRegistration.from_agent_card(card(), agent_type=unique, agent_id=agent_id)
        )
        for key in (gone, replaced, foreign):
            consul_put(server.http_addr, f"/v1/kv/{key}", "{}", master)
        everything = kv_keys(server, unique)
        listed = [key for key in await admin.reap_metadata(dry_run=True) if f"/{unique}/" in key]
        assert sorted(listed) == sorted([gone, replaced])
        assert kv_keys(server, unique) == everything
        reaped = [key for key in await admin.reap_metadata() if f"/{unique}/" in key]
        assert sorted(reaped) == sorted([gone, replaced])
        assert kv_keys(server, unique) == sorted([card_key(unique, agent_id, card()), foreign])
        assert await admin.get_agent_card(agent_id) == card()
        await admin.deregister_agent(agent_id)


async def test_re_registering_an_unchanged_card_writes_it_once(server: ConsulDevServer, unique: str) -> None:
    """Re-registering an agent with the same card writes the card once, after the service (Meta names it
    already), not twice: five re-registrations add at most two Raft entries each (the service's own, its
    Meta carrying the registration time, and the card); a card key someone overwrote is written back."""
    master = master_token(server)
    agent_id = f"{unique}-1"
    key = card_key(unique, agent_id, card())

    def raft_index() -> int:
        stats, _ = consul_get(server.http_addr, "/v1/agent/self", master)
        return int(stats["Stats"]["raft"]["last_log_index"])

    async with AgentRegistry(server.http_addr, master) as admin:
        registration = AgentRegistration.from_agent_card(card(), agent_type=unique, agent_id=agent_id)
        await admin.register_agent(registration)
        first = raft_index()
        for _ in range(5):
            await admin.register_agent(registration)
        # Writing the card twice would make 15; background entries (coordinates) may add one or two.
        assert raft_index() - first <= 10 + 2
        consul_put(server.http_addr, f"/v1/kv/{key}", {"name": "not the card"}, master)
        await admin.register_agent(registration)
        assert await admin.get_agent_card(agent_id) == card()
        await admin.deregister_agent(agent_id)
