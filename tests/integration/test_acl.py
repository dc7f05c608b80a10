"""ACL tokens on a real Consul with default_policy = "deny": provisioning, who may do what, revocation, DNS.

One ACL-enabled Consul serves the module; each test uses its own agent ids.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.resolver
import pytest
from acl_support import (
    CONFIG_DIR,
    acl_consul,
    acl_consul_kwargs,
    consul_state,
    gateway,
    master_token,
    provision_tokens,
    provisioned,
    registration,
)
from processes import CLI, cli_env
from support import eventually

from consul_agents import (
    AgentNotFoundError,
    AgentRegistry,
    DiscoveryRequest,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from consul_agents._acl_rules import AclConfig
from consul_agents._watch import WatchPolicy
from consul_agents.acl import ProvisionedToken, provision
from consul_agents.dev import ConsulDevServer
from consul_agents.dns import setup_prepared_query

SPECS = (
    {"name": "alpha-registrar", "kind": "registrar", "agent_types": ["alpha"]},
    {"name": "beta-registrar", "kind": "registrar", "agent_types": ["beta"]},
    {"name": "alpha-discoverer", "kind": "discoverer", "agent_types": ["alpha"]},
    {"name": "fleet-discoverer", "kind": "discoverer"},
    {"name": "operator", "kind": "operator"},
)
ACL_FILE = CONFIG_DIR / "acl.yaml"


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(server: ConsulDevServer) -> dict[str, ProvisionedToken]:
    return provisioned(server, *SPECS)


def registry(server: ConsulDevServer, token: str) -> AgentRegistry:
    return AgentRegistry(server.http_addr, token)


async def acl_indexes(server: ConsulDevServer) -> tuple[int, int]:
    async with gateway(server.http_addr, master_token(server)) as gw:
        policies = await gw.get("list", "/v1/acl/policies")
        tokens = await gw.get("list", "/v1/acl/tokens")
    return policies.meta.index, tokens.meta.index


def acl_setup(acl_file: Path, server: ConsulDevServer, *args: str) -> list[str]:
    """The ``consul-agents acl setup`` command line for ``acl_file`` against ``server``."""
    return [*CLI, "acl", "setup", str(acl_file), "-http-addr", server.http_addr, *args]


async def test_provisioning_twice_changes_nothing(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken]
) -> None:
    """A second provisioning run finds every policy and token in place: no write, ACL indexes unmoved."""
    assert {t.change for t in tokens.values()} == {"created"}
    before = await acl_indexes(server)
    again = await provision_tokens(server.http_addr, master_token(server), *SPECS)
    assert {t.change for t in again.values()} == {"unchanged"}
    assert {n: t.secret_id for n, t in again.items()} == {n: t.secret_id for n, t in tokens.items()}
    assert await acl_indexes(server) == before


async def test_provisioning_repairs_a_widened_policy(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken]
) -> None:
    """A policy someone widened by hand is put back to what the ACL file says, keeping the token."""
    master = master_token(server)
    async with gateway(server.http_addr, master) as gw:
        policies = (await gw.get("list", "/v1/acl/policies")).body
        policy = next(p for p in policies if p["Name"] == "consul-agents-alpha-discoverer")
        current = (await gw.get("read", f"/v1/acl/policy/{policy['ID']}")).body
        widened = current["Rules"] + 'service_prefix "" { policy = "write" }\n'
        await gw.put("widen", f"/v1/acl/policy/{policy['ID']}", {**current, "Rules": widened})
        repaired = await provision_tokens(server.http_addr, master, *SPECS)
        after = (await gw.get("read", f"/v1/acl/policy/{policy['ID']}")).body
    assert repaired["alpha-discoverer"].change == "updated"
    assert repaired["alpha-discoverer"].secret_id == tokens["alpha-discoverer"].secret_id
    assert after["Rules"] == current["Rules"]


def test_cli_setup_writes_tokens_to_an_owner_only_file(server: ConsulDevServer, tmp_path: Path) -> None:
    """`consul-agents acl setup config/acl.yaml -o FILE` provisions once, then reports all unchanged."""
    token_file = tmp_path / "management.token"
    token_file.write_text(master_token(server))
    output = tmp_path / "tokens.json"
    env = cli_env()
    command = acl_setup(ACL_FILE, server, "-token-file", str(token_file), "--output", str(output))
    runs = [
        subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    written = json.loads(output.read_text())
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert {v["kind"] for v in written.values()} == {
        "registrar",
        "discoverer",
        "dns",
        "operator",
        "pool-admin",
    }
    for run in runs:
        for value in written.values():
            assert value["secret_id"] not in run.stdout + run.stderr
    assert "created" in runs[0].stderr and "created" not in runs[1].stderr
    assert runs[1].stderr.count("unchanged") == len(written)
    to_stdout = subprocess.run(command[:-2], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert json.loads(to_stdout.stdout) == {name: {**v, "change": "unchanged"} for name, v in written.items()}


def test_cli_setup_refuses_an_unwritable_output_before_provisioning(
    server: ConsulDevServer, tmp_path: Path, unique: str
) -> None:
    """An --output in a missing folder exits 2 before any token is created."""
    token_file = tmp_path / "management.token"
    token_file.write_text(master_token(server))
    (tmp_path / "acl.yaml").write_text(f"tokens:\n  - {{name: never-{unique}, kind: dns}}\n")
    env = cli_env()
    missing = str(tmp_path / "missing" / "tokens.json")
    command = acl_setup(tmp_path / "acl.yaml", server, "-token-file", str(token_file), "--output", missing)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 2 and "not a writable folder" in result.stderr
    listed = asyncio.run(acl_descriptions(server))
    assert not [d for d in listed if unique in d]


async def acl_descriptions(server: ConsulDevServer) -> list[str]:
    async with gateway(server.http_addr, master_token(server)) as gw:
        return [t["Description"] for t in (await gw.get("list", "/v1/acl/tokens")).body]


def test_cli_setup_with_a_discovery_token_is_denied(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken]
) -> None:
    """Provisioning with a token that may not write ACLs exits 4 (denied) and prints no secret."""
    env = cli_env(CONSUL_HTTP_TOKEN=tokens["fleet-discoverer"].secret_id)
    result = subprocess.run(
        acl_setup(ACL_FILE, server), capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 4
    assert "permission denied" in result.stderr
    assert tokens["fleet-discoverer"].secret_id not in result.stdout + result.stderr


async def test_registrar_manages_agents_of_its_type(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken], unique: str
) -> None:
    """A registrar registers, heartbeats, pauses and deregisters its own type, metadata in KV included."""
    big = {"doc": "x" * 2000}
    async with (
        registry(server, tokens["alpha-registrar"].secret_id) as reg,
        registry(server, tokens["fleet-discoverer"].secret_id) as reader,
    ):
        agent_id = await reg.register_agent(registration("alpha", unique, metadata=big))
        await reg.heartbeat(agent_id, 0.5)
        await reg.set_maintenance(agent_id, True, "upgrade")
        await reg.set_maintenance(agent_id, False)
        info = await reader.get_agent(agent_id)
        assert (info.agent_type, info.metadata, info.current_load) == ("alpha", big, 0.5)
        assert await reg.deregister_agent(agent_id)
        with pytest.raises(AgentNotFoundError):
            await reader.get_agent(agent_id)
    assert not [k for k in (await consul_state(server.http_addr, master_token(server)))["kv"] if unique in k]


async def test_scoped_discoverer_sees_only_its_types(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken], unique: str
) -> None:
    """A type-A discovery token finds only type A agents, also in a capability search across types."""
    async with (
        registry(server, tokens["alpha-registrar"].secret_id) as alpha,
        registry(server, tokens["beta-registrar"].secret_id) as beta,
        registry(server, tokens["alpha-discoverer"].secret_id) as reader,
    ):
        await alpha.register_agent(registration("alpha", f"{unique}-a", metadata={"doc": "y" * 1000}))
        await beta.register_agent(registration("beta", f"{unique}-b"))
        try:
            found = await reader.discover_agents(DiscoveryRequest(capabilities=["plan"]))
            assert {a.agent_type for a in found} == {"alpha"}
            assert f"{unique}-a" in {a.agent_id for a in found}
            assert next(a for a in found if a.agent_id == f"{unique}-a").metadata == {"doc": "y" * 1000}
            assert await reader.discover_agents(DiscoveryRequest(agent_type="beta")) == []
            assert set(await reader.agent_types()) == {"alpha"}
            with pytest.raises(AgentNotFoundError):
                await reader.get_agent(f"{unique}-b")
        finally:
            await alpha.deregister_agent(f"{unique}-a")
            await beta.deregister_agent(f"{unique}-b")


async def test_anonymous_token_sees_nothing(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken], unique: str
) -> None:
    """Without a token, discovery finds no agent, lists no type, finds no id and cannot register."""
    async with (
        registry(server, tokens["alpha-registrar"].secret_id) as alpha,
        registry(server, "") as anonymous,
    ):
        await alpha.register_agent(registration("alpha", unique))
        try:
            assert await anonymous.discover_agents() == []
            assert await anonymous.agent_types() == {}
            with pytest.raises(AgentNotFoundError):
                await anonymous.get_agent(unique)
            with pytest.raises(PermissionDeniedError):
                await anonymous.register_agent(registration("alpha", f"{unique}-x"))
        finally:
            await alpha.deregister_agent(unique)


async def test_revoked_token_is_reported_as_denied(server: ConsulDevServer, unique: str) -> None:
    """Once its token is deleted, a client gets PermissionDeniedError (not "unavailable") in the ACL TTL."""
    master = master_token(server)
    name = f"revoke-{unique}"
    made = (await provision_tokens(server.http_addr, master, {"name": name, "kind": "discoverer"}))[name]
    # The cache's watch sees the revocation when its next blocking read starts: a 1 s wait instead of the
    # default 10 s lets it start soon (what is checked, cached discovery denied, is the same).
    async with AgentRegistry(server.http_addr, made.secret_id, watch_policy=WatchPolicy(wait=1.0)) as reader:
        await reader.discover_agents()
        async with gateway(server.http_addr, master) as gw:
            await gw.delete("revoke", f"/v1/acl/token/{made.accessor_id}")
        denials: list[PermissionDeniedError] = []

        async def denied() -> bool:
            try:
                await reader.discover_agents()
            except PermissionDeniedError as exc:
                denials.append(exc)
                return True
            except RegistryUnavailableError:  # pragma: no cover - the failure this test exists to catch
                pytest.fail("a revoked token was reported as Consul being unavailable")
            return False

        # token_ttl (30 s) plus a margin
        await eventually(denied, 35, "revoked token still accepted after the ACL TTL")
    assert "revoked" in str(denials[0]) and made.secret_id not in str(denials[0])
    with pytest.raises(PermissionDeniedError, match="revoked"):
        async with registry(server, made.secret_id) as again:
            await again.register_agent(registration("alpha", unique))


async def test_revoked_token_stops_working_on_a_client_agent_within_the_acl_ttl(
    make_consul: Any, unique: str
) -> None:
    """A Consul client agent honours a deleted token from its ACL cache at most token_ttl, then denies it."""
    ttl = 2.0
    server = make_consul(**acl_consul_kwargs(token_ttl=f"{ttl:g}s"))
    master = master_token(server)
    client = make_consul(
        **acl_consul_kwargs(master=master, token_ttl=f"{ttl:g}s", server=False),
        dev_mode=False,
        bootstrap_expect=0,
        retry_join=[f"{server.bind}:{server.serf_lan_port}"],
    )
    spec = {"name": "alpha-registrar", "kind": "registrar", "agent_types": ["alpha"]}
    made = (await provision_tokens(server.http_addr, master, spec))["alpha-registrar"]
    async with AgentRegistry(client.http_addr, made.secret_id) as reg:
        agent_id = await reg.register_agent(registration("alpha", unique))
        await reg.heartbeat(agent_id)
        async with gateway(server.http_addr, master) as gw:
            await gw.delete("revoke", f"/v1/acl/token/{made.accessor_id}")
        denials: list[PermissionDeniedError] = []

        async def denied() -> bool:
            try:
                await reg.heartbeat(agent_id)
            except PermissionDeniedError as exc:
                denials.append(exc)
                return True
            return False

        await eventually(denied, ttl + 5, "the client agent still honours a revoked token")
        assert "revoked" in str(denials[0])


async def resolve_srv(server: ConsulDevServer, name: str) -> list[str]:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [server.bind]
    resolver.port = server.dns_port
    resolver.lifetime = 5
    try:
        answer = await resolver.resolve(name, "SRV")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return sorted(str(record.port) for record in answer)


async def test_dns_token_lets_consul_dns_answer(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken], unique: str
) -> None:
    """Consul DNS answers for agents (service and operator-made query names) only with the dns token."""
    master = master_token(server)
    name = f"dns-{unique}"
    async with registry(server, tokens["alpha-registrar"].secret_id) as alpha:
        await alpha.register_agent(registration("alpha", unique, endpoint="http://127.0.0.1:9321"))
        try:
            assert await resolve_srv(server, "plan.agent-alpha.service.consul") == []
            await provision_tokens(
                server.http_addr, master, {"name": name, "kind": "dns", "set_as_agent_default": True}
            )
            try:
                assert "9321" in await resolve_srv(server, "plan.agent-alpha.service.consul")
                async with gateway(server.http_addr, tokens["operator"].secret_id) as gw:
                    assert await setup_prepared_query(gw) in ("created", "unchanged")
                assert "9321" in await resolve_srv(server, "agent-alpha.plan.query.consul")
            finally:
                async with gateway(server.http_addr, master) as gw:
                    await gw.put("reset", "/v1/agent/token/default", {"Token": ""})
            assert await resolve_srv(server, "plan.agent-alpha.service.consul") == []
        finally:
            await alpha.deregister_agent(unique)


async def test_provisioning_needs_acl_write(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken]
) -> None:
    """An operator token (agents, not ACLs) cannot provision: PermissionDeniedError naming the operation."""
    async with gateway(server.http_addr, tokens["operator"].secret_id) as gw:
        with pytest.raises(PermissionDeniedError, match="list ACL policies"):
            await provision(gw, AclConfig(tokens=[{"name": "x", "kind": "dns"}]))  # type: ignore[list-item]
