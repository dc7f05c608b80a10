"""Signed Agent Cards against real Consul and real a2a-sdk agents that sign what they serve: verified when
a configured key verifies them, refused under the require-signed policy when unsigned, tampered with or
signed by an unknown key, with nothing written."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from processes import CLI, A2AAgent, cli_env
from support import consul_get

from consul_agents import AgentRegistration, AgentRegistry, InvalidAgentError
from consul_agents.a2a import card_verifier, sign_card
from consul_agents.api import create_app


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


def jwks_file(tmp: Path, public_pem: bytes, kid: str) -> Path:
    """A JWK Set file holding one public key, as an operator would give ``serve --card-keys``."""
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    jwk = json.loads(ECAlgorithm.to_jwk(public))
    path = tmp / "card-keys.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": kid, "use": "sig"}]}))
    return path


async def test_rest_readers_see_whether_a_card_verified(
    consul_addr: str,
    registry: AgentRegistry,
    unique: str,
    keys: dict[str, tuple[Path, bytes]],
    agents: dict[str, A2AAgent],
) -> None:
    """An API given keys (create_app(card_verifier=...)) answers GET /v1/agents/{id}/card with Card-Verified
    true for the card signed with a configured key and false for the tampered, unknown-key and unsigned ones,
    and GET /v1/cards says the same per entry; an API without keys omits the header and lists null."""
    cards = {name: agent.card() for name, agent in agents.items()}
    cards["tampered"] = {**cards["signed"], "description": "now does something else"}
    ids = {
        name: await registry.register_agent(AgentRegistration.from_agent_card(card, agent_type=unique))
        for name, card in cards.items()
    }
    verifier = card_verifier({"trusted": keys["trusted"][1]})
    expected = {"signed": "true", "stranger": "false", "plain": "false", "tampered": "false"}
    try:
        async with test_utils.TestClient(
            test_utils.TestServer(create_app(consul_addr, card_verifier=verifier))
        ) as api:
            for name, agent_id in ids.items():
                response = await api.get(f"/v1/agents/{agent_id}/card")
                assert response.status == 200 and await response.json() == cards[name]
                assert response.headers.get("Card-Verified") == expected[name], name
            listing = await (await api.get("/v1/cards", params={"type": unique})).json()
            seen = {entry["agent_id"]: entry["verified"] for entry in listing["cards"]}
            assert seen == {ids[name]: value == "true" for name, value in expected.items()}
        async with test_utils.TestClient(test_utils.TestServer(create_app(consul_addr))) as plain:
            response = await plain.get(f"/v1/agents/{ids['signed']}/card")
            assert response.status == 200 and "Card-Verified" not in response.headers
            listing = await (await plain.get("/v1/cards", params={"type": unique})).json()
            assert [entry["verified"] for entry in listing["cards"]] == [None] * len(ids)
    finally:
        for agent_id in ids.values():
            await registry.deregister_agent(agent_id)


async def test_rest_require_signed_refuses_with_422_naming_the_signatures(
    consul_addr: str, unique: str, keys: dict[str, tuple[Path, bytes]], agents: dict[str, A2AAgent]
) -> None:
    """An API requiring signed cards registers the signed card (201) and answers POST /v1/cards of an
    unsigned, tampered or unknown-key card with 422 (invalid, as every bad card) naming card.signatures,
    writing nothing."""
    verifier = card_verifier({"trusted": keys["trusted"][1]})
    app = create_app(consul_addr, card_verifier=verifier, require_signed_cards=True)
    signed = agents["signed"].card()
    refused = {
        "tampered": {**signed, "description": "now does something else"},
        "unsigned": agents["plain"].card(),
        "unknown key": agents["stranger"].card(),
    }
    async with test_utils.TestClient(test_utils.TestServer(app)) as api:
        for name, card in refused.items():
            body = {"agent_type": unique, "agent_id": f"{unique}-x", "card": card}
            response = await api.post("/v1/cards", data=json.dumps(body))
            assert response.status == 422, name
            answer = await response.json()
            assert answer["field"] == "card.signatures" and "signatures" in answer["message"], name
        assert consul_get(consul_addr, f"/v1/catalog/service/agent-{unique}")[0] == []
        response = await api.post("/v1/cards", data=json.dumps({"agent_type": unique, "card": signed}))
        assert response.status == 201, await response.text()
        agent_id = (await response.json())["agent_id"]
        verified = await api.get(f"/v1/agents/{agent_id}/card")
        assert verified.headers.get("Card-Verified") == "true"
        assert (await api.delete(f"/v1/agents/{agent_id}")).status == 200


def test_serve_verifies_with_a_jwks_file(
    consul_addr: str,
    unique: str,
    tmp_path: Path,
    keys: dict[str, tuple[Path, bytes]],
    agents: dict[str, A2AAgent],
) -> None:
    """`consul-agents serve --card-keys <JWK Set file>` with CONSUL_AGENTS_REQUIRE_SIGNED_CARDS=true refuses
    an unsigned card with 422 and serves the signed one with Card-Verified: true."""
    env = cli_env(CONSUL_AGENTS_REQUIRE_SIGNED_CARDS="true")
    keys_file = str(jwks_file(tmp_path, keys["trusted"][1], "trusted"))
    command = [*CLI, "serve", "--listen", "127.0.0.1:0", "-http-addr", consul_addr, "--card-keys", keys_file]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("serving on "), (line, proc.stderr.read() if proc.stderr else "")
            base = line.split()[-1]

            def post(card: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                data = json.dumps({"agent_type": unique, "card": card}).encode()
                request = urllib.request.Request(f"{base}/v1/cards", data=data, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        return response.status, json.loads(response.read())
                except urllib.error.HTTPError as exc:
                    with exc:
                        return exc.code, json.loads(exc.read())

            status, answer = post(agents["plain"].card())
            assert (status, answer["field"]) == (422, "card.signatures")
            status, answer = post(agents["signed"].card())
            assert status == 201, answer
            with urllib.request.urlopen(f"{base}/v1/agents/{answer['agent_id']}/card", timeout=10) as found:
                assert found.headers["Card-Verified"] == "true"
            request = urllib.request.Request(f"{base}/v1/agents/{answer['agent_id']}", method="DELETE")
            urllib.request.urlopen(request, timeout=10).close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
