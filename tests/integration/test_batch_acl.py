"""Batches under Consul's ACLs: a registrar's items of types it may not write fail one by one, named."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from acl_support import acl_consul, master_token, provisioned
from conftest import skip_if_external

from consul_agents import AgentRegistry
from consul_agents.acl import ProvisionedToken
from consul_agents.dev import ConsulDevServer


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    skip_if_external()
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def registrar(server: ConsulDevServer) -> ProvisionedToken:
    spec = {"name": "batch-registrar", "kind": "registrar", "agent_types": ["alpha"]}
    return provisioned(server, spec)["batch-registrar"]


def _item(agent_type: str, i: int) -> dict[str, object]:
    return {
        "agent_type": agent_type,
        "agent_id": f"{agent_type}-{i}",
        "capabilities": ["plan"],
        "endpoint": "http://h:1",
    }


async def test_denied_items_are_reported_and_the_allowed_ones_registered(
    server: ConsulDevServer, registrar: ProvisionedToken
) -> None:
    """A registrar of type alpha sending alpha and beta items: each beta item is PermissionDeniedError, with
    no token in its message; every alpha item is registered; the deregistration batch behaves the same."""
    async with AgentRegistry(server.http_addr, registrar.secret_id) as registry:
        result = await registry.register_many([_item("alpha", 0), _item("beta", 0), _item("alpha", 1)])
        assert [(r.index, r.ok, r.error) for r in result.results] == [
            (0, True, None),
            (1, False, "PermissionDeniedError"),
            (2, True, None),
        ]
        assert all(registrar.secret_id not in (r.message or "") for r in result.results)
        async with AgentRegistry(server.http_addr, master_token(server)) as admin:
            found = {a.agent_id for a in await admin.discover_agents(cached=False)}
        assert found >= {"alpha-0", "alpha-1"} and "beta-0" not in found
        removed = await registry.deregister_many(["alpha-0", "alpha-1"])
        assert removed.ok and [r.removed for r in removed.results] == [True, True]
    async with AgentRegistry(server.http_addr, master_token(server)) as admin:
        assert not {a.agent_id for a in await admin.discover_agents(cached=False)} & {"alpha-0", "alpha-1"}
