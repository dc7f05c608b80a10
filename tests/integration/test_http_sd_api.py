"""GET /v1/prometheus/sd against real Consul: filters, token scoping, bad parameters, cache."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from acl_support import acl_consul, master_token, provisioned, registration
from aiohttp import test_utils
from support import consul_get

from consul_agents import AgentRegistry
from consul_agents.acl import ProvisionedToken
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer

SPECS = (
    {"name": "alpha-registrar", "kind": "registrar", "agent_types": ["alpha"]},
    {"name": "beta-registrar", "kind": "registrar", "agent_types": ["beta"]},
    {"name": "alpha-discoverer", "kind": "discoverer", "agent_types": ["alpha"]},
)


def ids(groups: list[dict[str, Any]]) -> set[str]:
    return {g["labels"]["agent_id"] for g in groups}


async def test_filters_and_metrics_path_apply(
    api: test_utils.TestClient[Any, Any], consul_addr: str, unique: str
) -> None:
    """The discovery filters of GET /v1/agents narrow the targets; metrics_path goes under the endpoint."""
    async with AgentRegistry(consul_addr) as registry:
        await registry.register_agent(registration(unique, f"{unique}-a", endpoint="http://h:1/v1"))
        await registry.register_agent(registration(unique, f"{unique}-b", capabilities=["code"]))
        try:
            answer = await api.get("/v1/prometheus/sd", params={"type": unique, "capability": "plan"})
            assert answer.status == 200
            groups = await answer.json()
            assert ids(groups) == {f"{unique}-a"}
            answer = await api.get("/v1/prometheus/sd", params={"type": unique, "metrics_path": "/prom"})
            paths = {g["labels"]["agent_id"]: g["labels"]["__metrics_path__"] for g in await answer.json()}
            assert paths == {f"{unique}-a": "/v1/prom", f"{unique}-b": "/prom"}
        finally:
            await registry.deregister_agent(f"{unique}-a")
            await registry.deregister_agent(f"{unique}-b")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"metrics_path": "/m?x"}, "metrics_path"),
        ({"max_load": "lots"}, "max_load"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    api: test_utils.TestClient[Any, Any], query: dict[str, str], field: str
) -> None:
    """An unknown parameter, a metrics_path that is not a path or an unparsable filter is a 400 naming it."""
    answer = await api.get("/v1/prometheus/sd", params=query)
    assert answer.status == 400
    body = await answer.json()
    assert body["error"] == "bad_request" and body["field"] == field


@pytest.mark.parametrize(
    ("authorization", "status"), [("Bearer", 200), ("Bearer   ", 200), ("Basic dXNlcjpwdw==", 400)]
)
async def test_an_empty_bearer_token_is_the_anonymous_token(
    api: test_utils.TestClient[Any, Any], authorization: str, status: int
) -> None:
    """`Authorization: Bearer $TOKEN` with $TOKEN empty acts as the anonymous token; other schemes are 400."""
    answer = await api.get("/v1/prometheus/sd", headers={"Authorization": authorization})
    assert answer.status == status


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(server: ConsulDevServer) -> dict[str, ProvisionedToken]:
    return provisioned(server, *SPECS)


@pytest.fixture
async def acl_api(server: ConsulDevServer) -> AsyncIterator[test_utils.TestClient[Any, Any]]:
    async with test_utils.TestClient(test_utils.TestServer(create_app(server.http_addr))) as client:
        yield client


async def test_targets_are_scoped_by_the_callers_token(
    server: ConsulDevServer,
    tokens: dict[str, ProvisionedToken],
    acl_api: test_utils.TestClient[Any, Any],
    unique: str,
) -> None:
    """A type-scoped discoverer's Prometheus sees only its type's targets; without a token, none."""
    async with (
        AgentRegistry(server.http_addr, tokens["alpha-registrar"].secret_id) as alpha,
        AgentRegistry(server.http_addr, tokens["beta-registrar"].secret_id) as beta,
    ):
        await alpha.register_agent(registration("alpha", f"{unique}-a"))
        await beta.register_agent(registration("beta", f"{unique}-b"))
        try:
            reader = {"Authorization": f"Bearer {tokens['alpha-discoverer'].secret_id}"}
            answer = await acl_api.get("/v1/prometheus/sd", headers=reader)
            assert answer.status == 200
            assert ids(await answer.json()) == {f"{unique}-a"}
            management = {"X-Consul-Token": master_token(server)}
            everything = ids(await (await acl_api.get("/v1/prometheus/sd", headers=management)).json())
            assert {f"{unique}-a", f"{unique}-b"} <= everything
            anonymous = await acl_api.get("/v1/prometheus/sd")
            assert anonymous.status == 200 and await anonymous.json() == []
            # A plain Consul client with that token: an empty list for the other type, not a denial (a 403
            # would raise here).
            body, _ = consul_get(
                server.http_addr, "/v1/health/service/agent-beta", reader["Authorization"][7:]
            )
            assert body == []
        finally:
            await alpha.deregister_agent(f"{unique}-a")
            await beta.deregister_agent(f"{unique}-b")
