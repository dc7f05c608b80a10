"""Untrusted entries with ACLs on (default deny): what a registrar token of one type may write into its own
entries and KV breaks no reader of other types, whatever the reader's token."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from acl_support import acl_consul, provisioned, registration
from aiohttp import test_utils
from conftest import skip_if_external
from support import raw_agent

from consul_agents import AgentRegistry, DiscoveryRequest, SelectionCriteria
from consul_agents.acl import ProvisionedToken
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer

SPECS = [
    {"name": "evil-registrar", "kind": "registrar", "agent_types": ["evil"]},
    {"name": "coder-registrar", "kind": "registrar", "agent_types": ["coder"]},
    {"name": "fleet-discoverer", "kind": "discoverer"},
]


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    skip_if_external()
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(server: ConsulDevServer) -> dict[str, ProvisionedToken]:
    return provisioned(server, *SPECS)


def kv_put(addr: str, key: str, value: bytes, token: str) -> None:
    request = urllib.request.Request(
        f"{addr}/v1/kv/{key}", data=value, method="PUT", headers={"X-Consul-Token": token}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read().strip() == b"true"


async def test_a_registrar_of_one_type_breaks_no_reader_of_others(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken]
) -> None:
    """With only its registrar token, type evil registers an id with dot segments (metadata "in KV") and
    agents whose KV metadata is 100,000 '[' or not UTF-8: the discoverer token's searches across types, its
    selections and the REST API still answer every real agent, cached and direct; the three are skipped."""
    addr = server.http_addr
    evil, coder, reader = (
        tokens[name].secret_id for name in ("evil-registrar", "coder-registrar", "fleet-discoverer")
    )
    async with AgentRegistry(addr, coder) as registrar:
        real = await registrar.register_agent(registration("coder", "coder-1", capabilities=["code"]))
    async with AgentRegistry(addr, evil) as registrar:
        honest = await registrar.register_agent(registration("evil", "evil-1", capabilities=["code"]))
    kv = {"agent-metadata": "kv"}
    raw_agent(addr, "evil", "evil/../../coder/x", tags=["code"], meta=kv, token=evil)
    for agent_id, value in (("evil-deep", b"[" * 100_000), ("evil-bytes", b"\xff\xfe{}")):
        raw_agent(addr, "evil", agent_id, tags=["code"], meta=kv, token=evil)
        kv_put(addr, f"consul-agents/metadata/evil/{agent_id}", value, evil)
    request = DiscoveryRequest(capabilities=["code"])
    async with (
        AgentRegistry(addr, reader, cache=True) as cached,
        AgentRegistry(addr, reader, cache=False) as direct,
    ):
        for registry in (cached, direct):
            assert [a.agent_id for a in await registry.discover_agents(request)] == [real, honest]
            chosen = await registry.select_agent(SelectionCriteria(capabilities=["code"]))
            assert chosen is not None and chosen.agent_id in (real, honest)
    async with test_utils.TestClient(test_utils.TestServer(create_app(addr))) as client:
        response = await client.get(
            "/v1/agents", params={"capability": "code"}, headers={"X-Consul-Token": reader}
        )
        assert response.status == 200, await response.text()
        assert [a["agent_id"] for a in await response.json()] == [real, honest]
