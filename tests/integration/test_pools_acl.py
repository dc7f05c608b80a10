"""Pool settings under Consul ACLs: a pool-admin token sets its own types' pools only, registrars set none,
readers of a type read its pool, and /metrics shows each scraper only the pools its token may see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from acl_support import acl_consul, master_token, provision_tokens, registration
from aiohttp import test_utils
from prometheus_client.parser import text_string_to_metric_families

from consul_agents import AgentRegistry, PermissionDeniedError, PoolSettings
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer

#: ``plan`` is a prefix of ``planner``: the pool-admin of one must not reach the other's pool.
PLAN, PLANNER = "plan", "planner"


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(server: ConsulDevServer) -> dict[str, str]:
    """Tokens by name, two pools with settings and one agent each (written with the master token)."""
    return asyncio.run(_setup(server))


async def _setup(server: ConsulDevServer) -> dict[str, str]:
    master = master_token(server)
    provisioned = await provision_tokens(
        server.http_addr,
        master,
        {"name": "plan-pools", "kind": "pool-admin", "agent_types": [PLAN]},
        {"name": "plan-registrar", "kind": "registrar", "agent_types": [PLAN]},
        {"name": "plan-reader", "kind": "discoverer", "agent_types": [PLAN]},
        {"name": "fleet-reader", "kind": "discoverer"},
    )
    secrets = {name: token.secret_id for name, token in provisioned.items()}
    async with AgentRegistry(server.http_addr, master) as registry:
        for agent_type in (PLAN, PLANNER):
            await registry.register_agent(registration(agent_type, f"{agent_type}-1", load=0.5))
            await registry.set_pool_settings(agent_type, PoolSettings(min_agents=2, max_agents=9))
    return secrets


def pool_types(text: str) -> set[str]:
    return {
        sample.labels["agent_type"]
        for family in text_string_to_metric_families(text)
        if family.name == "consul_agents_pool_desired_agents"
        for sample in family.samples
    }


async def test_a_pool_admin_sets_its_own_pools_only(server: ConsulDevServer, tokens: dict[str, str]) -> None:
    """The pool-admin of plan writes plan's settings and is denied planner's (an exact key, not a prefix)."""
    async with AgentRegistry(server.http_addr, tokens["plan-pools"]) as registry:
        await registry.set_pool_settings(PLAN, PoolSettings(min_agents=3, max_agents=9))
        assert (await registry.pool(PLAN)).settings == PoolSettings(min_agents=3, max_agents=9)
        with pytest.raises(PermissionDeniedError):
            await registry.set_pool_settings(PLANNER, PoolSettings(max_agents=1))
        with pytest.raises(PermissionDeniedError):
            await registry.set_pool_settings(PLANNER, None)
        await registry.set_pool_settings(PLAN, PoolSettings(min_agents=2, max_agents=9))


async def test_a_registrar_changes_no_pool(server: ConsulDevServer, tokens: dict[str, str]) -> None:
    """A registrar of plan may register plan agents but change neither its own pool nor another's."""
    async with AgentRegistry(server.http_addr, tokens["plan-registrar"]) as registry:
        for agent_type in (PLAN, PLANNER):
            with pytest.raises(PermissionDeniedError):
                await registry.set_pool_settings(agent_type, PoolSettings(max_agents=1))


async def test_readers_see_the_pools_of_their_types_only(
    server: ConsulDevServer, tokens: dict[str, str]
) -> None:
    """A discoverer of plan reads plan's pool and settings; planner's pool is neither listed nor readable."""
    async with AgentRegistry(server.http_addr, tokens["plan-reader"]) as registry:
        pool = await registry.pool(PLAN)
        assert (pool.passing, pool.settings) == (1, PoolSettings(min_agents=2, max_agents=9))
        other = await registry.pool(PLANNER)
        assert (other.passing, other.settings) == (0, None)
        assert {p.agent_type for p in await registry.pools()} == {PLAN}


async def test_metrics_pool_gauges_follow_each_scrapers_token(
    server: ConsulDevServer, tokens: dict[str, str]
) -> None:
    """A scrape with the fleet reader's token shows both pools; the next scrape, with plan's reader token,
    shows plan's only: nothing the first token saw is served to the second."""
    async with test_utils.TestClient(test_utils.TestServer(create_app(server.http_addr))) as api:

        async def scrape(token: str) -> Any:
            answer = await api.get("/metrics", headers={"X-Consul-Token": token})
            assert answer.status == 200
            return await answer.text()

        assert {PLAN, PLANNER} <= pool_types(await scrape(tokens["fleet-reader"]))
        assert pool_types(await scrape(tokens["plan-reader"])) == {PLAN}
        assert pool_types(await scrape(tokens["fleet-reader"])) >= {PLAN, PLANNER}
