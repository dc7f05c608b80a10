"""The sidecar with A2A agents: a real `consul-agents sidecar` process registers real a2a-sdk agents from the
cards they serve, follows card changes within one interval, marks an agent without a valid card critical,
and toggles draining on SIGUSR1."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils
from processes import A2AAgent, FakeAgent, SidecarProcess, two_a2a_agents, write_sidecar_file
from support import eventually

from consul_agents import AgentNotFoundError, AgentRegistry, AgentStatus, DiscoveryRequest, InvalidAgentError
from consul_agents.sidecar import load_config
from consul_agents.sidecar.cards import fetch_card

INTERVAL = 0.5


@pytest.fixture
def agents() -> Iterator[list[A2AAgent]]:
    with two_a2a_agents() as pair:
        yield list(pair)


@pytest.fixture
def sidecar_files(tmp_path: Path) -> Iterator[list[SidecarProcess]]:
    started: list[SidecarProcess] = []
    yield started
    for sidecar in started:
        sidecar.close()


def card_entry(agent_type: str, agent: A2AAgent, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "agent_id": f"{agent_type}-{agent.name}",
        "agent_type": agent_type,
        "endpoint": agent.endpoint,
        "card": True,
        "ttl": 3,
        "health": {"interval": INTERVAL, "timeout": 0.4},
    }
    fields.update(overrides)
    return fields


async def test_sidecar_registers_cards_follows_changes_and_drains(
    consul_addr: str,
    registry: AgentRegistry,
    api: test_utils.TestClient[Any, Any],
    unique: str,
    agents: list[A2AAgent],
    sidecar_files: list[SidecarProcess],
    tmp_path: Path,
) -> None:
    """Agents registered through the sidecar from their cards are found by skill with the served card (and
    the REST card answers 304 to its ETag); a new skill is discoverable within one interval; SIGUSR1 drains
    and undrains; an agent that stops serving a valid card turns critical."""
    alpha, beta = agents
    config = write_sidecar_file(tmp_path / "a2a.yaml", [card_entry(unique, alpha), card_entry(unique, beta)])
    sidecar = SidecarProcess(config, consul_addr, tmp_path / "sidecar.log")
    sidecar_files.append(sidecar)
    alpha_id, beta_id = f"{unique}-alpha", f"{unique}-beta"

    async def both_registered() -> bool:
        found = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=False)
        return {a.agent_id for a in found} == {alpha_id, beta_id}

    await eventually(both_registered, 15, "both card agents registered")
    found = await registry.discover_agents(DiscoveryRequest(capabilities=["hello-world"]), cached=False)
    assert [a.agent_id for a in found if a.agent_type == unique] == [alpha_id]
    assert await registry.get_agent_card(alpha_id) == alpha.card()
    response = await api.get(f"/v1/agents/{beta_id}/card")
    assert await response.json() == beta.card()
    again = await api.get(f"/v1/agents/{beta_id}/card", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304

    # A new skill: discoverable within one interval (plus the time to register it).
    alpha.control(skill="translate")
    changed_at = time.monotonic()

    async def translates() -> bool:
        request = DiscoveryRequest(capabilities=["translate"])
        found = await registry.discover_agents(request, cached=False)
        return [a.agent_id for a in found if a.agent_type == unique] == [alpha_id]

    await eventually(translates, 10, "the new skill discoverable")
    assert time.monotonic() - changed_at < INTERVAL + 1.0
    assert await registry.get_agent_card(alpha_id) == alpha.card()

    # SIGUSR1 drains every agent of the file; a second one undrains.
    sidecar.signal(signal.SIGUSR1)

    async def draining(expected: bool) -> bool:
        infos = [await registry.get_agent(agent_id) for agent_id in (alpha_id, beta_id)]
        return all(info.draining is expected for info in infos)

    await eventually(lambda: draining(True), 10, "agents draining after SIGUSR1")
    assert await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=False) == []
    sidecar.signal(signal.SIGUSR1)
    await eventually(lambda: draining(False), 10, "agents undrained after a second SIGUSR1")

    # No valid card any more: critical.
    beta.control(card="broken")

    async def beta_critical() -> bool:
        return (await registry.get_agent(beta_id)).status is AgentStatus.CRITICAL

    await eventually(beta_critical, 10, "agent without a valid card turns critical")
    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait() == 0
    assert (
        await registry.discover_agents(DiscoveryRequest(agent_type=unique, status=AgentStatus.CRITICAL)) == []
    )


async def test_card_fetch_revalidates_with_the_etag(agents: list[A2AAgent]) -> None:
    """The sidecar's fetch sends If-None-Match: 304 for an unchanged card, the new card after a change; a huge
    answer or one that is not JSON is an error naming the problem."""
    alpha, _ = agents
    url = f"{alpha.endpoint}/.well-known/agent-card.json"
    async with aiohttp.ClientSession() as session:
        first = await fetch_card(session, url, None, 2)
        assert first.card == alpha.card() and first.etag
        second = await fetch_card(session, url, first.etag, 2)
        assert second.unchanged and second.card is None
        alpha.control(skill="more")
        third = await fetch_card(session, url, first.etag, 2)
        assert third.card == alpha.card() and third.etag != first.etag
        for mode, problem in (("huge", "larger than"), ("broken", "not JSON")):
            alpha.control(card=mode)
            failed = await fetch_card(session, url, None, 2)
            assert failed.card is None and problem in failed.error, failed
        alpha.control(card="big")
        big = await fetch_card(session, url, None, 2)
        assert big.card is not None and len(big.card["description"]) == 100_000, big.error
        alpha.control(card="ok")


def test_card_entries_need_no_capabilities_and_bad_card_values_are_named(tmp_path: Path) -> None:
    """`card: true` needs no capabilities and points at the well-known card; a bad value is named."""
    good = write_sidecar_file(
        tmp_path / "good.yaml", [{"agent_type": "t", "endpoint": "http://127.0.0.1:9/a2a", "card": True}]
    )
    spec = load_config(good).agents[0]
    assert spec.card == "http://127.0.0.1:9/.well-known/agent-card.json"
    assert spec.extra_capabilities == [] and not spec.probe_health
    bad = write_sidecar_file(
        tmp_path / "bad.yaml", [{"agent_type": "t", "endpoint": "http://h:9", "card": 3}]
    )
    with pytest.raises(InvalidAgentError, match=r"agents\[0\]\.card"):
        load_config(bad)


async def test_health_answer_field_drains_and_undrains(
    consul_addr: str,
    registry: AgentRegistry,
    unique: str,
    sidecar_files: list[SidecarProcess],
    tmp_path: Path,
) -> None:
    """With health.draining_field, the agent's own answer (true/false there) drains and undrains it."""
    fake = FakeAgent()
    try:
        entry = {
            "agent_id": f"{unique}-1",
            "agent_type": unique,
            "capabilities": ["plan"],
            "endpoint": fake.endpoint,
            "ttl": 3,
            "health": {"interval": INTERVAL, "timeout": 0.4, "draining_field": "draining"},
        }
        sidecar = SidecarProcess(
            write_sidecar_file(tmp_path / "d.yaml", [entry]), consul_addr, tmp_path / "d.log"
        )
        sidecar_files.append(sidecar)

        async def draining(expected: bool) -> bool:
            try:
                return (await registry.get_agent(f"{unique}-1")).draining is expected
            except AgentNotFoundError:
                return False

        await eventually(lambda: draining(False), 15, "agent registered, not draining")
        fake.set(draining="true")
        await eventually(lambda: draining(True), 10, "agent draining after its answer said so")
        fake.set(draining="false")
        await eventually(lambda: draining(False), 10, "agent undrained after its answer said so")
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait() == 0
    finally:
        fake.close()
