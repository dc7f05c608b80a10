"""What a registration may hold and what the write path answers: metadata depth, maintenance of an unknown
agent, and who can read metadata (the dns token). Against real Consul, with ACLs where tokens matter."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from acl_support import acl_consul, token_secrets
from aiohttp import test_utils
from processes import CLI, cli_env
from support import consul_get, registration

from consul_agents import (
    AgentNotFoundError,
    AgentRegistry,
    DiscoveryRequest,
    InvalidAgentError,
    SelectionCriteria,
)
from consul_agents._models import MAX_METADATA_DEPTH
from consul_agents.api import create_app
from consul_agents.cli import main
from consul_agents.dev import ConsulDevServer


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """A JSON object nesting ``depth`` levels deep (``{"n": 1}`` is depth 1)."""
    value: Any = leaf
    for _ in range(depth):
        value = {"n": value}
    return value  # type: ignore[no-any-return]


@pytest.mark.parametrize("depth", [MAX_METADATA_DEPTH + 1, 300, 1_000, 100_000])
def test_metadata_deeper_than_the_bound_is_refused(depth: int) -> None:
    """Metadata nested past the bound is InvalidAgentError naming metadata (before: accepted at 300, then a
    RecursionError at about 1,000)."""
    with pytest.raises(InvalidAgentError) as refused:
        registration("deep", metadata=nested(depth))
    assert refused.value.field == "metadata" and str(MAX_METADATA_DEPTH) in str(refused.value)


@pytest.mark.parametrize(("depth", "status"), [(MAX_METADATA_DEPTH + 8, 422), (300, 400)])
async def test_rest_refuses_deep_metadata(consul_addr: str, unique: str, depth: int, status: int) -> None:
    """POST /v1/agents with metadata nested past the bound registers nothing: 422 naming metadata, or 400
    when the body itself nests past the REST bound (before: 201 at 300 levels, then every REST reader of the
    type answered 500)."""
    body = {
        "agent_type": unique,
        "agent_id": f"{unique}-deep",
        "capabilities": ["plan"],
        "endpoint": "http://127.0.0.1:9000",
        "metadata": nested(depth),
    }
    async with test_utils.TestClient(test_utils.TestServer(create_app(consul_addr))) as api:
        answer = await api.post("/v1/agents", json=body)
        assert answer.status == status
        if status == 422:
            assert (await answer.json())["field"] == "metadata"
        assert (await api.get(f"/v1/agents/{unique}-deep")).status == 404


@pytest.mark.parametrize("in_kv", [False, True], ids=["meta", "kv"])
async def test_metadata_at_the_bound_is_readable_through_every_face(
    consul_addr: str, unique: str, in_kv: bool
) -> None:
    """Metadata as deep as the bound allows reads back whole through the library (direct and cached), the
    REST API (agent, discovery, selection) and the CLI (status, discover)."""
    metadata = nested(MAX_METADATA_DEPTH - 1, {"pad": "p" * 600} if in_kv else 1)
    async with AgentRegistry(consul_addr) as registry:
        agent_id = await registry.register_agent(
            registration(unique, agent_id=f"{unique}-edge", metadata=metadata, ttl=timedelta(hours=1))
        )
        try:
            assert (await registry.get_agent(agent_id)).metadata == metadata
            for cached in (False, True):
                found = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=cached)
                assert [a.metadata for a in found] == [metadata]
            assert (await registry.select_agent(SelectionCriteria(agent_type=unique))) is not None
            async with test_utils.TestClient(test_utils.TestServer(create_app(consul_addr))) as api:
                answers = [
                    await api.get(f"/v1/agents/{agent_id}"),
                    await api.get("/v1/agents", params={"type": unique}),
                    await api.post("/v1/select", json={"agent_type": unique}),
                ]
                for answer in answers:
                    assert answer.status == 200, await answer.text()
                    assert json.dumps(metadata) in json.dumps(await answer.json())
            for command in (["status", agent_id], ["discover", "--type", unique]):
                done = await asyncio.to_thread(
                    subprocess.run,
                    [*CLI, *command, "-http-addr", consul_addr, "--json"],
                    env=cli_env(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert done.returncode == 0, done.stderr
                assert json.loads(done.stdout)[0]["metadata"] == metadata
        finally:
            await registry.deregister_agent(agent_id)


async def test_maintenance_of_an_unknown_agent_is_not_found(consul_addr: str, unique: str) -> None:
    """Maintenance on an agent Consul does not know, without ACLs (Consul answers 404): AgentNotFoundError,
    REST 404."""
    async with AgentRegistry(consul_addr) as registry:
        with pytest.raises(AgentNotFoundError):
            await registry.set_maintenance(f"{unique}-nobody", True)
    async with test_utils.TestClient(test_utils.TestServer(create_app(consul_addr))) as api:
        answer = await api.put(f"/v1/agents/{unique}-nobody/maintenance", json={"enable": True})
        assert answer.status == 404 and (await answer.json())["error"] == "not_found"


# -- with ACLs ----------------------------------------------------------------------------------------------

SPECS = (
    {"name": "coder-registrar", "kind": "registrar", "agent_types": ["coder"]},
    {"name": "fleet-dns", "kind": "dns"},
    {"name": "fleet-discoverer", "kind": "discoverer"},
)


@pytest.fixture(scope="module")
def acl_server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(acl_server: ConsulDevServer) -> dict[str, str]:
    return token_secrets(acl_server, *SPECS)


async def test_maintenance_of_an_unknown_agent_is_not_found_with_acls(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """With ACLs on (Consul 1.8 then answers 500 "Unknown service"), maintenance of an agent that does not
    exist is AgentNotFoundError and REST 404 (before: ConsulRequestError and REST 502)."""
    addr, token = acl_server.http_addr, tokens["coder-registrar"]
    async with AgentRegistry(addr, token) as registry:
        with pytest.raises(AgentNotFoundError):
            await registry.set_maintenance(f"{unique}-nobody", True)
    async with test_utils.TestClient(test_utils.TestServer(create_app(addr))) as api:
        answer = await api.put(
            f"/v1/agents/{unique}-nobody/maintenance",
            json={"enable": True},
            headers={"X-Consul-Token": token},
        )
        assert answer.status == 404 and (await answer.json())["error"] == "not_found"


def metadata_visible_to(addr: str, token: str, agent_id: str) -> str:
    """Everything a token reads of an agent through the health endpoint and the KV store, as text."""
    health = consul_get(addr, "/v1/health/service/agent-coder", token)[0]
    try:
        kv = consul_get(addr, f"/v1/kv/consul-agents/metadata/coder/{agent_id}?raw", token)[0]
    except Exception:  # 403: no KV read
        kv = None
    return json.dumps([health, kv])


async def test_dns_token_reads_metadata_in_meta_but_not_private_metadata(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """The dns token reads small metadata (it travels in Meta) but not ``private_metadata`` nor metadata too
    large for Meta (KV only); a discoverer reads all three."""
    addr = acl_server.http_addr
    secrets = {"public": "s-meta", "private": "s-private", "large": "s-large" + "x" * 600}
    async with AgentRegistry(addr, tokens["coder-registrar"]) as coder:
        ids = {
            name: await coder.register_agent(
                registration(
                    "coder",
                    agent_id=f"{unique}-{name}",
                    metadata={"secret": secret},
                    private_metadata=name == "private",
                )
            )
            for name, secret in secrets.items()
        }
        try:
            for name, agent_id in ids.items():
                seen_by_dns = metadata_visible_to(addr, tokens["fleet-dns"], agent_id)
                assert (secrets[name][:9] in seen_by_dns) is (name == "public"), name
                assert secrets[name][:9] in metadata_visible_to(addr, tokens["fleet-discoverer"], agent_id)
            async with AgentRegistry(addr, tokens["fleet-discoverer"]) as reader:
                found = await reader.discover_agents(DiscoveryRequest(agent_type="coder"), cached=False)
                assert {a.metadata["secret"] for a in found} >= set(secrets.values())
        finally:
            for agent_id in ids.values():
                await coder.deregister_agent(agent_id)


async def test_other_writes_to_an_unknown_agent_are_not_found_with_acls(
    acl_server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """The siblings of maintenance, with ACLs on: heartbeat and verification of an unknown agent raise
    AgentNotFoundError, and deregistering it answers False."""
    async with AgentRegistry(acl_server.http_addr, tokens["coder-registrar"]) as registry:
        with pytest.raises(AgentNotFoundError):
            await registry.heartbeat(f"{unique}-nobody", 0.5)
        with pytest.raises(AgentNotFoundError):
            await registry.verify_registration(f"{unique}-nobody")
        assert await registry.deregister_agent(f"{unique}-nobody") is False


def test_sidecar_file_keeps_private_metadata_out_of_meta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sidecar file's ``private_metadata: true`` renders Meta ``kv`` and names the KV key to store, even
    for metadata small enough for Meta."""
    path = tmp_path / "private.yaml"
    path.write_text(
        "agents:\n  - {agent_id: P-1, agent_type: big, capabilities: [x], endpoint: 'http://h:1',\n"
        "     private_metadata: true, metadata: {secret: s}}\n"
    )
    assert main(["render", str(path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["services"][0]["meta"]["agent-metadata"] == "kv"
    assert "consul kv put consul-agents/metadata/big/p-1" in captured.err
