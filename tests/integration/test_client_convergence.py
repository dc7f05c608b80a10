"""A write that timed out may still have been applied: the same client converges on its next call.

Consul is real; between it and the client sits a TCP relay that, while ``mute`` is set, still delivers
every request to Consul but drops Consul's answers, so a write is applied and its caller times out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from relay import AnswerDroppingRelay
from support import consul_get, registration

from consul_agents import AgentRegistry, RegistryTimeoutError
from consul_agents import _wire as wire

BIG = {"blob": "x" * 600}  # too large for Meta: written to KV before the service
#: The writes whose answers are dropped: the reads a registration makes first (who holds the id) answer.
WRITES = ("PUT /v1/agent/service/register", "PUT /v1/kv/")


@pytest.fixture
async def relay(consul_addr: str) -> AsyncIterator[AnswerDroppingRelay]:
    """A relay to the tests' Consul that can drop Consul's answers."""
    async with AnswerDroppingRelay(consul_addr) as running:
        yield running


def in_consul(addr: str, agent_id: str) -> bool:
    body, _ = consul_get(addr, f"/v1/agent/service/{agent_id}")
    return body is not None


def kv_exists(addr: str, key: str) -> bool:
    body, _ = consul_get(addr, f"/v1/kv/{key}")
    return body is not None


async def test_a_registration_that_timed_out_is_removed_by_the_next_call(
    consul_addr: str, relay: AnswerDroppingRelay, unique: str
) -> None:
    """A registration applied by Consul whose answer never came is removed (with nobody heartbeating it)
    by the same client's next write."""
    async with AgentRegistry(relay.address, timeout=1) as registry:
        relay.mute, relay.mute_only = True, WRITES
        with pytest.raises(RegistryTimeoutError) as raised:
            await registry.register_agent(registration(unique, agent_id=f"{unique}-lost"))
        relay.mute = False
        assert in_consul(consul_addr, f"{unique}-lost")  # applied, though its caller saw a timeout
        other = await registry.register_agent(registration(unique))
        assert not in_consul(consul_addr, f"{unique}-lost")
        assert in_consul(consul_addr, other)
        await registry.deregister_agent(other)
    assert any(f"{unique}-lost" in note for note in getattr(raised.value, "__notes__", []))


async def test_half_written_metadata_of_a_timed_out_registration_is_removed_on_close(
    consul_addr: str, relay: AnswerDroppingRelay, unique: str
) -> None:
    """A registration whose KV metadata write timed out (applied, the service never sent) leaves no KV
    key once the client closes."""
    key = wire.metadata_key(unique, f"{unique}-kv")
    async with AgentRegistry(relay.address, timeout=1) as registry:
        relay.mute, relay.mute_only = True, WRITES
        with pytest.raises(RegistryTimeoutError):
            await registry.register_agent(registration(unique, agent_id=f"{unique}-kv", metadata=BIG))
        relay.mute = False
        assert kv_exists(consul_addr, key)
    assert not kv_exists(consul_addr, key)
    assert not in_consul(consul_addr, f"{unique}-kv")


async def test_a_heartbeat_adopts_a_registration_that_timed_out(
    consul_addr: str, relay: AnswerDroppingRelay, unique: str
) -> None:
    """A caller that heartbeats the agent whose registration timed out keeps it: the client tracks it
    from then on, so deregistering it removes it and its KV metadata."""
    agent_id = f"{unique}-kept"
    async with AgentRegistry(relay.address, timeout=1) as registry:
        relay.mute, relay.mute_only = True, WRITES
        with pytest.raises(RegistryTimeoutError):
            await registry.register_agent(registration(unique, agent_id=agent_id, metadata=BIG))
        relay.mute = False
        await registry.heartbeat(agent_id, load=0.5)  # the service never reached Consul: registered now
        assert in_consul(consul_addr, agent_id)
        assert (await registry.get_agent(agent_id)).metadata == BIG
        assert await registry.deregister_agent(agent_id)
    assert not in_consul(consul_addr, agent_id)
    assert not kv_exists(consul_addr, wire.metadata_key(unique, agent_id))
