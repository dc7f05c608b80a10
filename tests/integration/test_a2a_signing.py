"""Signed Agent Cards against real Consul and real a2a-sdk agents that sign what they serve: verified when
a configured key verifies them, refused under the require-signed policy when unsigned, tampered with or
signed by an unknown key, with nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from processes import A2AAgent
from support import consul_get

from consul_agents import AgentRegistration, AgentRegistry, InvalidAgentError
from consul_agents.a2a import card_verifier, sign_card


def key_pair(tmp: Path, name: str) -> tuple[Path, bytes]:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp / f"{name}.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bytes]]:
    tmp = tmp_path_factory.mktemp("keys")
    return {name: key_pair(tmp, name) for name in ("trusted", "stranger")}


@pytest.fixture(scope="module")
def agents(keys: dict[str, tuple[Path, bytes]]) -> Iterator[dict[str, A2AAgent]]:
    """A real agent signing its card with the trusted key, one signing with an unknown key, one unsigned."""
    started: dict[str, A2AAgent] = {}
    try:
        for name, key in (("signed", "trusted"), ("stranger", "stranger"), ("plain", None)):
            env = {"A2A_TEST_SIGNING_KEY": str(keys[key][0]), "A2A_TEST_KID": key} if key else {}
            started[name] = A2AAgent(name, "echo", env=env)
        yield started
    finally:
        for agent in started.values():
            agent.close()


async def test_require_signed_accepts_verified_and_refuses_the_rest(
    consul_addr: str, unique: str, keys: dict[str, tuple[Path, bytes]], agents: dict[str, A2AAgent]
) -> None:
    """A card signed with a configured key registers and reads back verified; unsigned, tampered and
    unknown-key cards raise InvalidAgentError naming the signatures, and Consul holds nothing of them."""
    verifier = card_verifier({"trusted": keys["trusted"][1]})
    async with AgentRegistry(consul_addr, card_verifier=verifier, require_signed_cards=True) as registry:
        signed = agents["signed"].card()
        assert signed["signatures"]
        agent_id = await registry.register_agent(AgentRegistration.from_agent_card(signed, agent_type=unique))
        found = await registry.get_registered_card(agent_id)
        assert found.verified is True and found.card == signed

        tampered: dict[str, Any] = {**signed, "description": "now does something else"}
        refused = {
            "tampered": tampered,
            "unsigned": agents["plain"].card(),
            "unknown key": agents["stranger"].card(),
        }
        for name, card in refused.items():
            registration = AgentRegistration.from_agent_card(card, agent_type=unique, agent_id=f"{unique}-x")
            with pytest.raises(InvalidAgentError, match=r"card\.signatures") as raised:
                await registry.register_agent(registration)
            assert raised.value.field == "card.signatures", name
        services, _ = consul_get(consul_addr, f"/v1/catalog/service/agent-{unique}")
        assert [s["ServiceID"] for s in services] == [agent_id]
        await registry.deregister_agent(agent_id)


async def test_readers_see_whether_a_card_verified(
    consul_addr: str,
    registry: AgentRegistry,
    unique: str,
    keys: dict[str, tuple[Path, bytes]],
    agents: dict[str, A2AAgent],
) -> None:
    """Without require_signed every card registers; a reader with keys sees verified True/False per card,
    a reader without keys sees None."""
    ids = {
        name: await registry.register_agent(
            AgentRegistration.from_agent_card(agent.card(), agent_type=unique)
        )
        for name, agent in agents.items()
    }
    verifier = card_verifier({"trusted": keys["trusted"][1]})
    async with AgentRegistry(consul_addr, card_verifier=verifier) as reader:
        seen = {name: (await reader.get_registered_card(agent_id)).verified for name, agent_id in ids.items()}
        listed = {entry.agent.agent_id: entry.verified for entry in await reader.agent_cards()}
    assert seen == {"signed": True, "stranger": False, "plain": False}
    assert {listed[agent_id] for agent_id in ids.values()} == {True, False}
    assert (await registry.get_registered_card(ids["signed"])).verified is None
    for agent_id in ids.values():
        await registry.deregister_agent(agent_id)


def test_signing_helpers_round_trip_and_policy_needs_keys(keys: dict[str, tuple[Path, bytes]]) -> None:
    """sign_card output verifies with the matching key; require_signed_cards without keys is refused."""
    card = {
        "name": "n",
        "description": "d",
        "version": "1",
        "supportedInterfaces": [{"url": "http://127.0.0.1:1/", "protocolBinding": "JSONRPC"}],
        "skills": [{"id": "s", "name": "s", "description": "s", "tags": []}],
    }
    signed = sign_card(card, keys["trusted"][0].read_bytes(), kid="trusted")
    card_verifier({"trusted": keys["trusted"][1]})(signed)
    with pytest.raises(Exception, match="signature"):
        card_verifier({"trusted": keys["stranger"][1]})(signed)
    with pytest.raises(InvalidAgentError, match="card_verifier"):
        AgentRegistry("http://127.0.0.1:1", require_signed_cards=True)
