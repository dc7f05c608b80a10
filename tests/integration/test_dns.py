"""Consul DNS answers for agents (SRV by type and capability) and the cross-datacenter prepared query."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from processes import FakeAgent
from support import consul_get, eventually

from consul_agents import AgentRegistration, AgentRegistry, AgentStatus
from consul_agents.dev import ConsulDevServer
from consul_agents.dns import query_dns_name, rfc2782_name, service_dns_name, setup_prepared_query
from consul_agents.sidecar import Sidecar, load_config

Records = set[tuple[str, int, str]]  # (target, port, target's A address)


async def srv(dns_port: int, name: str) -> Records:
    """The SRV answer for ``name``: target, port and the target's address from the additional section."""
    query = dns.message.make_query(name, dns.rdatatype.SRV)
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=dns_port, timeout=3)
    if response.rcode() == dns.rcode.NXDOMAIN:
        return set()
    addresses = {
        rrset.name.to_text(): rrset[0].address
        for rrset in response.additional
        if rrset.rdtype == dns.rdatatype.A
    }
    return {
        (record.target.to_text(), record.port, addresses.get(record.target.to_text(), ""))
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.SRV
        for record in rrset
    }


def ports(records: Records) -> set[int]:
    return {port for _, port, _ in records}


async def answer_becomes(dns_port: int, name: str, expected_ports: set[int], timeout: float = 10) -> Records:
    seen: Records = set()

    async def check() -> bool:
        nonlocal seen
        seen = await srv(dns_port, name)
        return ports(seen) == expected_ports

    await eventually(check, timeout, f"{name} -> ports {sorted(expected_ports)}")
    return seen


def reg(agent_type: str, port: int, capabilities: list[str], host: str = "127.0.0.1") -> AgentRegistration:
    return AgentRegistration(
        agent_type=agent_type,
        capabilities=capabilities,
        endpoint=f"http://{host}:{port}",
        agent_id=f"{agent_type}-{port}",
    )


async def test_srv_by_type_and_capability(
    consul_server: ConsulDevServer, registry: AgentRegistry, unique: str
) -> None:
    """Type names list every agent; capability and RFC 2782 names only those with the capability."""
    await registry.register_agent(reg(unique, 9101, ["plan", "summarize"], host="127.0.0.2"))
    await registry.register_agent(reg(unique, 9102, ["summarize"]))
    port = consul_server.dns_port
    records = await answer_becomes(port, service_dns_name(unique), {9101, 9102})
    assert {address for _, _, address in records} == {"127.0.0.2", "127.0.0.1"}
    assert {(p, a) for _, p, a in records} == {(9101, "127.0.0.2"), (9102, "127.0.0.1")}
    assert ports(await srv(port, service_dns_name(unique, "plan"))) == {9101}
    assert ports(await srv(port, rfc2782_name(unique, "plan"))) == {9101}
    assert ports(await srv(port, service_dns_name(unique, "summarize"))) == {9101, 9102}
    assert await srv(port, service_dns_name(unique, "cite")) == set()


async def test_critical_agents_leave_dns_and_warning_ones_stay(
    consul_server: ConsulDevServer, registry: AgentRegistry, unique: str
) -> None:
    """A critical agent disappears from DNS answers; a warning one stays (Consul's only_passing=false)."""
    for agent_port in (9201, 9202, 9203):
        await registry.register_agent(reg(unique, agent_port, ["plan"]))
    port = consul_server.dns_port
    await answer_becomes(port, service_dns_name(unique, "plan"), {9201, 9202, 9203})
    await registry.heartbeat(f"{unique}-9201", status=AgentStatus.CRITICAL)
    await registry.heartbeat(f"{unique}-9202", status=AgentStatus.WARNING)
    await answer_becomes(port, service_dns_name(unique, "plan"), {9202, 9203})
    assert ports(await srv(port, service_dns_name(unique))) == {9202, 9203}
    assert ports(await srv(port, rfc2782_name(unique, "plan"))) == {9202, 9203}
    await registry.heartbeat(f"{unique}-9201")
    await answer_becomes(port, service_dns_name(unique, "plan"), {9201, 9202, 9203})


async def test_agent_registered_critical_never_resolves(
    consul_server: ConsulDevServer, registry: AgentRegistry, unique: str
) -> None:
    """An agent registered critical (as the sidecar does for a down agent) is never in an answer."""
    await registry.register_agent(reg(unique, 9301, ["plan"]), status=AgentStatus.CRITICAL)
    await registry.register_agent(reg(unique, 9302, ["plan"]))
    records = await answer_becomes(consul_server.dns_port, service_dns_name(unique, "plan"), {9302})
    assert ports(records) == {9302}


@pytest.fixture(scope="module")
def two_datacenters() -> Iterator[tuple[ConsulDevServer, ConsulDevServer]]:
    """Two dev datacenters, dc1 and dc2, joined over WAN."""
    with ConsulDevServer(datacenter="dc1") as dc1, ConsulDevServer(datacenter="dc2") as dc2:
        dc1.join_wan(dc2)
        yield dc1, dc2


async def test_prepared_query_setup_is_idempotent(
    two_datacenters: tuple[ConsulDevServer, ConsulDevServer],
) -> None:
    """Setting the template up twice writes once; changed options update the same query, never a second."""
    dc1, _ = two_datacenters
    async with AgentRegistry(dc1.http_addr) as registry:
        gateway = registry.gateway
        first = await setup_prepared_query(gateway)
        assert first in ("created", "unchanged")
        _, index_before = consul_get(dc1.http_addr, "/v1/query")
        assert await setup_prepared_query(gateway) == "unchanged"
        assert consul_get(dc1.http_addr, "/v1/query")[1] == index_before
        assert await setup_prepared_query(gateway, only_passing=True) == "updated"
        assert await setup_prepared_query(gateway) == "updated"
        queries, _ = consul_get(dc1.http_addr, "/v1/query")
        assert [q["Name"] for q in queries] == ["agent-"]
        assert queries[0]["Service"]["OnlyPassing"] is False


async def test_query_name_fails_over_to_nearest_datacenter(
    two_datacenters: tuple[ConsulDevServer, ConsulDevServer], unique: str
) -> None:
    """agent-T.cap.query.consul answers from dc1 while dc1 has healthy matches, otherwise from dc2."""
    dc1, dc2 = two_datacenters
    async with AgentRegistry(dc1.http_addr) as local, AgentRegistry(dc2.http_addr) as remote:
        assert await setup_prepared_query(local.gateway) in ("created", "unchanged")
        await remote.register_agent(reg(unique, 9401, ["plan"]))
        await remote.register_agent(reg(unique, 9402, ["cite"]))
        name = query_dns_name(unique, "plan")
        records = await answer_becomes(dc1.dns_port, name, {9401}, timeout=20)
        assert all(".dc2." in target for target, _, _ in records)
        assert ports(await srv(dc1.dns_port, query_dns_name(unique))) == {9401, 9402}

        await local.register_agent(reg(unique, 9501, ["plan"]))
        records = await answer_becomes(dc1.dns_port, name, {9501})
        assert all(".dc1." in target for target, _, _ in records)

        await local.heartbeat(f"{unique}-9501", status=AgentStatus.CRITICAL)
        await answer_becomes(dc1.dns_port, name, {9401})
        await remote.heartbeat(f"{unique}-9401", status=AgentStatus.CRITICAL)
        await answer_becomes(dc1.dns_port, name, set())


async def test_sidecar_agent_resolves(consul_server: ConsulDevServer, unique: str, tmp_path: Path) -> None:
    """An agent registered by the sidecar (in-process here) resolves by capability with its real port."""
    agent = FakeAgent()
    try:
        path = tmp_path / "a.yaml"
        path.write_text(
            f"agents:\n  - agent_type: {unique}\n    capabilities: [plan]\n    endpoint: {agent.endpoint}\n"
            "    ttl: 2\n    health: {interval: 0.5, timeout: 0.3}\n"
        )
        stop = asyncio.Event()
        async with AgentRegistry(consul_server.http_addr) as registry:
            task = asyncio.create_task(Sidecar(load_config(path), registry).run(stop))
            try:
                records = await answer_becomes(
                    consul_server.dns_port, service_dns_name(unique, "plan"), {agent.port}
                )
                assert {address for _, _, address in records} == {"127.0.0.1"}
            finally:
                stop.set()
                assert await task is True
        assert await srv(consul_server.dns_port, service_dns_name(unique)) == set()
    finally:
        agent.close()
