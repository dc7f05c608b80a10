"""The a2a extra against real Consul and real a2a-sdk agents: select by skill, send_message through
a2a-sdk, move on when the chosen agent is killed, never reach a draining agent."""

from __future__ import annotations

import subprocess
import sys

import pytest
from a2a.helpers import get_message_text, new_text_message
from a2a.types import Role, SendMessageRequest
from processes import A2AAgent

from consul_agents import AgentRegistration, AgentRegistry, NoAgentAvailableError, SelectionCriteria
from consul_agents.a2a import a2a_client


def hello(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))


async def call(client: object, text: str) -> str:
    replies = [event async for event in client.send_message(hello(text))]  # type: ignore[attr-defined]
    assert len(replies) == 1
    return get_message_text(replies[0].message)


async def test_select_by_skill_round_trip_and_failover_when_the_agent_is_killed(
    registry: AgentRegistry, unique: str
) -> None:
    """send_message reaches an agent with the skill; after SIGKILL of that agent the next call reaches the
    other with no error surfaced, and the card is never fetched from the agents by the caller."""
    agents = [A2AAgent(name, "echo") for name in ("alpha", "gamma")]
    other = A2AAgent("beta", "summarize")
    try:
        for agent in [*agents, other]:
            card = agent.card()
            await registry.register_agent(
                AgentRegistration.from_agent_card(
                    card, agent_type=unique, agent_id=f"{unique}-{agent.name}", ttl=3600
                )
            )
        fetched = {agent.name: agent.control()["card_requests"] for agent in agents}
        criteria = SelectionCriteria(agent_type=unique, capabilities=["echo"])
        async with a2a_client(registry, criteria) as client:
            first = await call(client, "hi")
            name, _, text = first.partition(": ")
            assert name in ("alpha", "gamma") and text == "hi"
            assert client.last_agent is not None and client.last_agent.agent_id == f"{unique}-{name}"
            chosen = next(a for a in agents if a.name == name)
            survivor = next(a for a in agents if a.name != name)
            chosen.proc.kill()
            chosen.proc.wait()
            for attempt in range(4):
                assert await call(client, f"again {attempt}") == f"{survivor.name}: again {attempt}"
        assert survivor.control()["card_requests"] == fetched[survivor.name]
        # Every agent unreachable: a clear error, not a transport exception.
        survivor.proc.kill()
        survivor.proc.wait()
        async with a2a_client(registry, criteria) as client:
            with pytest.raises(NoAgentAvailableError, match="no reachable agent"):
                await call(client, "anyone?")
    finally:
        for agent in [*agents, other]:
            agent.close()
        for agent in [*agents, other]:
            await registry.deregister_agent(f"{unique}-{agent.name}")


async def test_a_draining_agent_is_never_called(registry: AgentRegistry, unique: str) -> None:
    """With one of two agents draining, every call reaches the other one."""
    agents = [A2AAgent(name, "echo") for name in ("alpha", "gamma")]
    try:
        for agent in agents:
            await registry.register_agent(
                AgentRegistration.from_agent_card(
                    agent.card(), agent_type=unique, agent_id=f"{unique}-{agent.name}"
                )
            )
        await registry.set_draining(f"{unique}-alpha")
        criteria = SelectionCriteria(agent_type=unique, capabilities=["echo"], strategy="round_robin")
        async with a2a_client(registry, criteria) as client:
            for attempt in range(6):
                assert await call(client, str(attempt)) == f"gamma: {attempt}"
    finally:
        for agent in agents:
            agent.close()
            await registry.deregister_agent(f"{unique}-{agent.name}")


def test_the_core_does_not_import_a2a_sdk() -> None:
    """Importing consul_agents (library, REST API, CLI, sidecar) loads no a2a module."""
    code = (
        "import sys, consul_agents, consul_agents.api, consul_agents.cli, consul_agents.sidecar; "
        "print(sorted(m for m in sys.modules if m == 'a2a' or m.startswith('a2a.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
