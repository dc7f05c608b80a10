"""GET /v1/census, what the web page shows: every agent of every status in every datacenter, each datacenter
counted from its own answer (a per-status discovery without a region fails over on its own and mixes them)."""

from __future__ import annotations

from aiohttp import test_utils
from conftest import MakeConsul
from support import eventually, registration

from consul_agents import AgentRegistry, AgentStatus
from consul_agents.api import create_app
from consul_agents.api._keys import VIEWS


async def test_census_lists_each_datacenter_from_its_own_answer(make_consul: MakeConsul, unique: str) -> None:
    """dc1's passing agent and dc2's passing and critical ones are each listed under their own datacenter,
    and the census starts no watch in dc2."""
    dc1 = make_consul(datacenter="dc1")
    dc2 = make_consul(datacenter="dc2")
    dc1.join_wan(dc2)
    async with AgentRegistry(dc1.http_addr) as one, AgentRegistry(dc2.http_addr) as two:
        await one.register_agent(registration(unique, agent_id=f"{unique}-a"))
        await two.register_agent(registration(unique, agent_id=f"{unique}-b"))
        await two.register_agent(registration(unique, agent_id=f"{unique}-c"), status=AgentStatus.CRITICAL)

        async def both_known() -> bool:
            return len(await one.discovery.datacenters()) == 2

        await eventually(both_known, timeout=30, what="dc2 is known to dc1")
        app = create_app(dc1.http_addr)
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:
            async with client.get("/v1/census") as response:
                assert response.status == 200
                body = await response.json()
            mine = sorted(
                (a["agent_id"], a["datacenter"], a["status"]) for a in body if a["agent_type"] == unique
            )
            assert mine == [
                (f"{unique}-a", "dc1", "passing"),
                (f"{unique}-b", "dc2", "passing"),
                (f"{unique}-c", "dc2", "critical"),
            ]
            view = app[VIEWS].for_token(None)
            assert [w.name for w in view.discovery.cache.watches() if w.name.startswith("dc2")] == []


async def test_the_web_page_reads_the_census(api: test_utils.TestClient[object, object]) -> None:
    """The page's script asks /v1/census once per refresh, not one discovery per status."""
    async with api.get("/static/app.js") as response:
        script = await response.text()
    assert 'fetch("/v1/census"' in script
    assert "/v1/agents?" not in script
