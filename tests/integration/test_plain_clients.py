"""What plain Consul clients (HTTP API, DNS) see of the registry where it differs from discover, as the
README's "What plain Consul clients see" says."""

from __future__ import annotations

import dns.asyncquery
import dns.message
import dns.rdatatype
from support import consul_get, registration

from consul_agents import AgentRegistry, AgentStatus, DiscoveryRequest
from consul_agents.dev import ConsulDevServer


async def srv_answer(dns_port: int, name: str) -> list[tuple[str, int, int]]:
    """(target, port, weight) of each SRV record, over TCP (all records, no UDP truncation)."""
    query = dns.message.make_query(name, dns.rdatatype.SRV)
    response = await dns.asyncquery.tcp(query, "127.0.0.1", port=dns_port, timeout=5)
    return sorted(
        (record.target.to_text(), record.port, record.weight)
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.SRV
        for record in rrset
    )


async def test_passing_filter_dns_weights_and_hostname_targets(
    consul_server: ConsulDevServer, unique: str
) -> None:
    """`?passing` drops a warning agent that discover keeps; DNS gives it weight 1; a hostname endpoint's
    SRV target is that hostname, outside .consul."""
    addr = consul_server.http_addr
    async with AgentRegistry(addr) as registry:
        await registry.register_agent(registration(unique, agent_id=f"{unique}-ok", weight=10, ttl=60))
        await registry.register_agent(
            registration(
                unique, agent_id=f"{unique}-warn", weight=10, ttl=60, endpoint="http://127.0.0.1:9001"
            )
        )
        await registry.register_agent(
            registration(unique, agent_id=f"{unique}-host", ttl=60, endpoint="http://agent.example.com:9002")
        )
        await registry.heartbeat(f"{unique}-warn", status=AgentStatus.WARNING)
        try:
            found = {a.agent_id for a in await registry.discover_agents(DiscoveryRequest(agent_type=unique))}
            assert found == {f"{unique}-ok", f"{unique}-warn", f"{unique}-host"}
            passing, _ = consul_get(addr, f"/v1/health/service/agent-{unique}?passing=true")
            assert {e["Service"]["ID"] for e in passing} == {f"{unique}-ok", f"{unique}-host"}
            records = await srv_answer(consul_server.dns_port, f"agent-{unique}.service.consul")
            ports = {port: (target, weight) for target, port, weight in records}
            assert ports[9000][1] == 10 and ports[9001][1] == 1
            assert ports[9002][0] == "agent.example.com."
        finally:
            for suffix in ("ok", "warn", "host"):
                await registry.deregister_agent(f"{unique}-{suffix}")
