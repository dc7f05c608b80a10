"""Health scores from history against real Consul: flapping and failed leases lower an agent's score below
a steady one's, and weighted_random selection then chooses it less."""

from __future__ import annotations

from collections import Counter

import pytest
from support import eventually, registration

from consul_agents import AgentRegistry, AgentStatus, DiscoveryRequest, SelectionCriteria


async def _scores(registry: AgentRegistry, agent_type: str) -> dict[str, float]:
    found = await registry.discover_agents(DiscoveryRequest(agent_type=agent_type))
    return {agent.agent_id: agent.health_score for agent in found}


async def _picks(registry: AgentRegistry, agent_type: str, n: int) -> Counter[str]:
    criteria = SelectionCriteria(agent_type=agent_type, strategy="weighted_random")
    picks: Counter[str] = Counter()
    for _ in range(n):
        chosen = await registry.select_agent(criteria)
        assert chosen is not None
        picks[chosen.agent_id] += 1
    return picks


async def test_a_flapping_agent_scores_lower_than_a_steady_one_and_is_chosen_less(
    consul_addr: str, unique: str
) -> None:
    """An agent whose check went critical and back three times scores below a steady agent of the same type
    (cached discovery), and weighted_random picks it less than half as often; answers read without history
    (cached=False) carry the status score."""
    async with AgentRegistry(consul_addr) as registry:
        steady = await registry.register_agent(registration(unique, agent_id=f"{unique}-steady", ttl=60))
        flappy = await registry.register_agent(registration(unique, agent_id=f"{unique}-flappy", ttl=60))
        assert await _scores(registry, unique) == {steady: 1.0, flappy: 1.0}
        for _ in range(3):
            for status in (AgentStatus.CRITICAL, AgentStatus.PASSING):
                await registry.heartbeat(flappy, status=status)

                async def seen(status: AgentStatus = status) -> bool:
                    request = DiscoveryRequest(agent_type=unique, status=status)
                    return flappy in {a.agent_id for a in await registry.discover_agents(request)}

                await eventually(seen, timeout=10, what=f"the cache sees {flappy} {status.value}")
        scores = await _scores(registry, unique)
        assert scores[steady] == 1.0
        assert 0 < scores[flappy] < 0.5, scores
        picks = await _picks(registry, unique, 300)
        assert picks[flappy] < picks[steady] / 2, picks
        direct = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=False)
        assert {a.agent_id: a.health_score for a in direct} == {steady: 1.0, flappy: 1.0}


async def test_failed_leases_lower_the_score_within_the_resolution(consul_addr: str, unique: str) -> None:
    """Three failed leases of one agent lower its cached score to 1/(1+3) within the score's resolution,
    without any change in Consul, and weighted_random then prefers the other agent."""
    async with AgentRegistry(consul_addr) as registry:
        good = await registry.register_agent(registration(unique, agent_id=f"{unique}-good", ttl=60))
        bad = await registry.register_agent(registration(unique, agent_id=f"{unique}-bad", ttl=60))
        assert await _scores(registry, unique) == {good: 1.0, bad: 1.0}
        only_bad = SelectionCriteria(agent_type=unique, exclude=[good])
        for _ in range(3):
            with pytest.raises(ConnectionError):
                async with registry.lease(only_bad):
                    raise ConnectionError("the agent did not answer")

        async def lowered() -> bool:
            return (await _scores(registry, unique))[bad] == pytest.approx(0.25)

        await eventually(lowered, timeout=10, what=f"{bad}'s score drops to 0.25")
        assert (await _scores(registry, unique))[good] == 1.0
        picks = await _picks(registry, unique, 200)
        assert picks[bad] < picks[good] / 2, picks
