"""The REST face of A2A agents against real Consul: the card with its strong ETag, the card listing (filtered
like discovery, scoped by the caller's token), draining."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from acl_support import acl_consul, master_token, provision_tokens
from aiohttp import test_utils
from processes import CLI, A2AAgent, two_a2a_agents

from consul_agents import AgentRegistration, AgentRegistry, PermissionDeniedError
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer


@pytest.fixture(scope="module")
def agents() -> Iterator[tuple[A2AAgent, A2AAgent]]:
    """Two real A2A agents: alpha (skills echo, hello_world) and beta (summarize)."""
    with two_a2a_agents() as pair:
        yield pair


async def test_card_route_answers_with_a_strong_etag_and_304(
    api: test_utils.TestClient[Any, Any],
    registry: AgentRegistry,
    unique: str,
    agents: tuple[A2AAgent, A2AAgent],
) -> None:
    """GET /v1/agents/{id}/card returns the served card with a strong ETag and 304 to If-None-Match."""
    alpha, _ = agents
    served = alpha.card()
    agent_id = await registry.register_agent(AgentRegistration.from_agent_card(served, agent_type=unique))
    response = await api.get(f"/v1/agents/{agent_id}/card")
    assert response.status == 200
    assert await response.json() == served
    etag = response.headers["ETag"]
    assert etag.startswith('"sha256:') and not etag.startswith("W/")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await api.get(f"/v1/agents/{agent_id}/card", headers={"If-None-Match": header})
        assert again.status == 304, header
        assert again.headers["ETag"] == etag
    changed = await api.get(f"/v1/agents/{agent_id}/card", headers={"If-None-Match": '"sha256:0"'})
    assert changed.status == 200
    await registry.deregister_agent(agent_id)
    gone = await api.get(f"/v1/agents/{agent_id}/card")
    assert gone.status == 404


async def test_card_route_is_404_for_an_agent_without_card(
    api: test_utils.TestClient[Any, Any], registry: AgentRegistry, unique: str
) -> None:
    """An agent registered without a card has no card resource; a bad id is a 422."""
    agent_id = await registry.register_agent(
        AgentRegistration(agent_type=unique, capabilities=["plan"], endpoint="http://127.0.0.1:9")
    )
    response = await api.get(f"/v1/agents/{agent_id}/card")
    assert response.status == 404
    assert "without an A2A Agent Card" in (await response.json())["message"]
    assert (await api.get("/v1/agents/%20bad/card")).status == 422
    await registry.deregister_agent(agent_id)


async def test_card_listing_is_filtered_like_discovery(
    api: test_utils.TestClient[Any, Any],
    registry: AgentRegistry,
    unique: str,
    agents: tuple[A2AAgent, A2AAgent],
) -> None:
    """GET /v1/cards?capability=..&type=.. lists the matching agents' cards; draining ones only when asked."""
    ids = {}
    for agent in agents:
        card = agent.card()
        ids[agent.name] = await registry.register_agent(
            AgentRegistration.from_agent_card(card, agent_type=unique, agent_id=f"{unique}-{agent.name}")
        )
    plain = await registry.register_agent(
        AgentRegistration(agent_type=unique, capabilities=["echo"], endpoint="http://127.0.0.1:9")
    )
    response = await api.get("/v1/cards", params={"type": unique, "capability": "echo"})
    listing = (await response.json())["cards"]
    assert [e["agent_id"] for e in listing] == [ids["alpha"]]
    assert listing[0]["card"] == agents[0].card()
    assert listing[0]["status"] == "passing" and listing[0]["draining"] is False
    everything = await api.get("/v1/cards", params={"type": unique})
    assert [e["agent_id"] for e in (await everything.json())["cards"]] == sorted(ids.values())
    again = await api.get(
        "/v1/cards", params={"type": unique}, headers={"If-None-Match": everything.headers["ETag"]}
    )
    assert again.status == 304
    drain = await api.put(f"/v1/agents/{ids['beta']}/draining", data=json.dumps({"draining": True}))
    assert drain.status == 204
    live = await api.get("/v1/cards", params={"type": unique})
    assert [e["agent_id"] for e in (await live.json())["cards"]] == [ids["alpha"]]
    with_draining = await api.get("/v1/cards", params={"type": unique, "draining": "true"})
    flags = {e["agent_id"]: e["draining"] for e in (await with_draining.json())["cards"]}
    assert flags == {ids["alpha"]: False, ids["beta"]: True}
    agent = await api.get(f"/v1/agents/{ids['beta']}")
    assert (await agent.json())["draining"] is True
    bad = await api.put(f"/v1/agents/{ids['beta']}/draining", data=json.dumps({"draining": "yes"}))
    assert bad.status == 422
    for agent_id in [*ids.values(), plain]:
        await registry.deregister_agent(agent_id)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture
async def acl_api(acl_server: ConsulDevServer) -> AsyncIterator[test_utils.TestClient[Any, Any]]:
    async with test_utils.TestClient(test_utils.TestServer(create_app(acl_server.http_addr))) as client:
        yield client


async def test_card_listing_shows_only_what_the_token_may_read(
    acl_server: ConsulDevServer, acl_api: test_utils.TestClient[Any, Any], agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """With Consul ACLs, a discoverer of type A lists A's cards only, and a DNS token (no KV) lists none."""
    master = master_token(acl_server)
    tokens = await provision_tokens(
        acl_server.http_addr,
        master,
        {"name": "disc-a", "kind": "discoverer", "agent_types": ["cards-a"]},
        {"name": "dns", "kind": "dns"},
    )
    async with AgentRegistry(acl_server.http_addr, master) as admin:
        ids = [
            await admin.register_agent(AgentRegistration.from_agent_card(agent.card(), agent_type=agent_type))
            for agent, agent_type in zip(agents, ("cards-a", "cards-b"), strict=True)
        ]

        async def listed(token: str) -> list[str]:
            response = await acl_api.get("/v1/cards", headers={"X-Consul-Token": token})
            assert response.status == 200
            return [e["agent_id"] for e in (await response.json())["cards"]]

        assert sorted(await listed(master)) == sorted(ids)
        assert await listed(tokens["disc-a"].secret_id) == [ids[0]]
        assert await listed(tokens["dns"].secret_id) == []
        denied = await acl_api.get(
            f"/v1/agents/{ids[0]}/card", headers={"X-Consul-Token": tokens["dns"].secret_id}
        )
        assert denied.status == 403
        for agent_id in ids:
            await admin.deregister_agent(agent_id)


async def test_metrics_gauge_still_counts_a_draining_agent(
    api: test_utils.TestClient[Any, Any], registry: AgentRegistry, unique: str
) -> None:
    """A draining agent is alive: the agents gauge of /metrics keeps counting it as passing."""
    agent_id = await registry.register_agent(
        AgentRegistration(agent_type=unique, capabilities=["plan"], endpoint="http://127.0.0.1:9", ttl=60)
    )
    await registry.set_draining(agent_id)
    text = await (await api.get("/metrics")).text()
    await registry.deregister_agent(agent_id)
    assert f'consul_agents_agents{{agent_type="{unique}",datacenter="dc1",status="passing"}} 1.0' in text


def test_render_refuses_card_agents(tmp_path: Any) -> None:
    """`render` cannot know a card agent's capabilities: it exits 2 naming the entry's card field."""
    path = tmp_path / "cards.yaml"
    path.write_text("agents:\n  - agent_type: echo\n    endpoint: http://127.0.0.1:9301\n    card: true\n")
    done = subprocess.run(
        [*CLI, "render", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "agents[0].card" in done.stderr


async def test_a_registrar_token_registers_cards_and_drains_only_its_own_type(
    acl_server: ConsulDevServer, agents: tuple[A2AAgent, A2AAgent]
) -> None:
    """With Consul ACLs, a registrar of type A stores A's card (same KV rules as metadata) and drains A's
    agent; draining another type's agent or registering a card of another type is denied."""
    master = master_token(acl_server)
    tokens = await provision_tokens(
        acl_server.http_addr, master, {"name": "reg-a", "kind": "registrar", "agent_types": ["drain-a"]}
    )
    alpha, beta = agents
    async with (
        AgentRegistry(acl_server.http_addr, master) as admin,
        AgentRegistry(acl_server.http_addr, tokens["reg-a"].secret_id) as registrar,
    ):
        own = await registrar.register_agent(
            AgentRegistration.from_agent_card(alpha.card(), agent_type="drain-a")
        )
        other = await admin.register_agent(
            AgentRegistration.from_agent_card(beta.card(), agent_type="drain-b")
        )
        assert await admin.get_agent_card(own) == alpha.card()
        await registrar.set_draining(own)
        assert (await admin.get_agent(own)).draining
        with pytest.raises(PermissionDeniedError):
            await registrar.set_draining(other)
        assert not (await admin.get_agent(other)).draining
        with pytest.raises(PermissionDeniedError):
            await registrar.register_agent(
                AgentRegistration.from_agent_card(beta.card(), agent_type="drain-b")
            )
        await registrar.deregister_agent(own)
        await admin.deregister_agent(other)


async def test_register_from_card_over_rest(
    api: test_utils.TestClient[Any, Any],
    registry: AgentRegistry,
    unique: str,
    agents: tuple[A2AAgent, A2AAgent],
) -> None:
    """POST /v1/cards registers an agent from its card (skills as capabilities); bad bodies are 4xx."""
    alpha, _ = agents
    body = {"agent_type": unique, "card": alpha.card(), "tags": {"tier": "gold"}, "ttl": 60}
    response = await api.post("/v1/cards", data=json.dumps(body))
    assert response.status == 201, await response.text()
    agent_id = (await response.json())["agent_id"]
    assert response.headers["Location"] == f"/v1/agents/{agent_id}"
    info = await registry.get_agent(agent_id)
    assert info.capabilities == ["echo", "hello-world"] and info.tags == {"tier": "gold"}
    assert await registry.get_agent_card(agent_id) == alpha.card()
    bad_bodies = [
        {"agent_type": unique},
        {"agent_type": unique, "card": "not an object"},
        {"agent_type": unique, "card": alpha.card(), "cls": 1},
        {"agent_type": unique, "card": {**alpha.card(), "skills": []}},
    ]
    for bad in bad_bodies:
        answer = await api.post("/v1/cards", data=json.dumps(bad))
        assert answer.status == 422, (bad, await answer.text())
    await registry.deregister_agent(agent_id)
