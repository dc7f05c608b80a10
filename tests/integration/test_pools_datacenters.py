"""Pools across two WAN-joined datacenters: each datacenter's pools come from its own agents and its own KV,
and an unmet selection is counted in the datacenter it was asked of."""

from __future__ import annotations

import pytest
from conftest import MakeConsul
from prometheus_client import REGISTRY
from support import eventually, registration

from consul_agents import AgentRegistry, InvalidAgentError, PoolSettings, SelectionCriteria


async def test_each_datacenter_has_its_own_pools(make_consul: MakeConsul, unique: str) -> None:
    """Settings written for dc2 through dc1 land in dc2's KV; pools() lists (type, dc1) and (type, dc2)
    each with its own agents and settings; a selection asked of dc2 that finds nobody is counted under
    dc2; an unknown datacenter is refused naming region."""
    dc1 = make_consul(datacenter="dc1")
    dc2 = make_consul(datacenter="dc2")
    dc1.join_wan(dc2)
    async with AgentRegistry(dc1.http_addr) as one, AgentRegistry(dc2.http_addr) as two:
        await one.register_agent(registration(unique, agent_id=f"{unique}-a", load=0.4))
        for n in range(2):
            await two.register_agent(registration(unique, agent_id=f"{unique}-b{n}", load=0.8))

        async def both_known() -> bool:
            return len(await one.discovery.datacenters()) == 2

        await eventually(both_known, timeout=30, what="dc2 is known to dc1")
        await one.set_pool_settings(unique, PoolSettings(max_agents=5))
        await one.set_pool_settings(unique, PoolSettings(min_agents=3, target_load=0.4), region="dc2")
        assert (await two.pool(unique)).settings == PoolSettings(min_agents=3, target_load=0.4)
        found = {(p.agent_type, p.datacenter): p for p in await one.pools()}
        local, remote = found[(unique, "dc1")], found[(unique, "dc2")]
        assert (local.passing, local.settings, local.desired_agents) == (1, PoolSettings(max_agents=5), 1)
        assert (remote.passing, remote.desired_agents) == (2, 4)  # ceil(2 * 0.8 / 0.4)
        assert (await one.pool(unique, region="dc2")).desired_agents == 4

        labels = {"agent_type": f"{unique}-x", "datacenter": "dc2", "reason": "none_registered"}
        before = REGISTRY.get_sample_value("consul_agents_selections_unmet_total", labels) or 0.0
        assert await one.select_agent(SelectionCriteria(agent_type=f"{unique}-x", region="dc2")) is None
        assert REGISTRY.get_sample_value("consul_agents_selections_unmet_total", labels) == before + 1
        with pytest.raises(InvalidAgentError) as refused:
            await one.set_pool_settings(unique, PoolSettings(), region="nowhere")
        assert refused.value.field == "region"
