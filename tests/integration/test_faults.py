"""The registry on a 3-server Consul cluster and on restarted agents: leader loss, restarts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

import pytest
from conftest import MakeConsul, throwaway_cluster
from support import consul_get, eventually

from benchmarks._leader_loss import fleet_sessions, run_leader_loss
from consul_agents import AgentRegistration, AgentRegistry, AgentStatus, DiscoveryRequest
from consul_agents.cluster import ConsulCluster

#: The gateway's request timeout (AgentRegistry's default): no write may take longer than this plus slack.
WRITE_BOUND_S = 10.0 + 1.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[ConsulCluster]:
    """One 3-server cluster with a client agent for this module; each test leaves every server running."""
    with throwaway_cluster() as started:
        yield started


def registration(agent_type: str, i: int, **overrides: object) -> AgentRegistration:
    fields: dict[str, object] = {
        "agent_type": agent_type,
        "capabilities": ["plan"],
        "endpoint": f"http://127.0.0.1:{30000 + i}",
        "metadata": {"i": i},
        "agent_id": f"{agent_type}-{i}",
    }
    fields.update(overrides)
    return AgentRegistration(**fields)  # type: ignore[arg-type]


def test_cluster_has_three_raft_peers_and_one_leader(cluster: ConsulCluster) -> None:
    """The harness starts three servers that all name the same leader and are all Raft peers."""
    leader = cluster.leader()
    assert sorted(cluster.peers()) == sorted(cluster.rpc_address(s) for s in cluster.servers)
    for server in cluster.servers:
        assert consul_get(server.http_addr, "/v1/status/leader")[0] == cluster.rpc_address(leader)
    members, _ = consul_get(cluster.http_addr, "/v1/agent/members")
    assert len([m for m in members if m["Status"] == 1]) == 4  # three servers and the client agent


async def test_leader_loss_under_load(cluster: ConsulCluster, unique: str) -> None:
    """While the leader is SIGKILLed under load, discovery never fails, every write succeeds or raises a
    ConsulAgentsError in bounded time, writes resume within 10 s of the new leader, and nothing acknowledged
    is lost."""
    await check_leader_loss(cluster, unique, agents=5, discoverers=4)


@pytest.mark.slow
async def test_leader_loss_under_heavier_load(cluster: ConsulCluster, unique: str) -> None:
    """The leader-loss guarantees hold with 50 heartbeating agents and 20 discoverers."""
    await check_leader_loss(cluster, unique, agents=50, discoverers=20)


async def check_leader_loss(cluster: ConsulCluster, unique: str, *, agents: int, discoverers: int) -> None:
    result = await run_leader_loss(
        cluster, unique, agents=agents, discoverers=discoverers, before=2.0, after=12.0
    )
    try:
        kill, new_leader = result.events["kill"], result.events["new_leader"]
        for kind in ("discover", "discover-direct"):  # from the cache, and straight from Consul (stale)
            discovers = [op for op in result.ops if op.kind == kind]
            assert discovers and not result.failures(kind), result.failures(kind)[:3]
            assert any(kill < op.start < new_leader for op in discovers), f"no {kind} during the election"

        writes = [op for op in result.ops if op.kind in ("register", "register-kv")]
        assert max(op.duration for op in writes) < WRITE_BOUND_S
        late = [op for op in writes if op.start > new_leader + 10]
        assert late and all(op.error is None for op in late), [op for op in late if op.error]
        kv_ok_after = [
            op.start + op.duration for op in writes if op.kind == "register-kv" and op.error is None
        ]
        assert any(new_leader < end < new_leader + 10 for end in kv_ok_after), "KV writes did not resume"

        assert result.acknowledged and not result.missing_after_recovery
        for agent_id, acked in result.acknowledged.items():
            assert result.visible_at[agent_id] < max(acked, new_leader) + 10, agent_id
        assert result.heartbeat_errors == 0
    finally:
        old = next(s for s in cluster.servers if s.node_name == result.old_leader)
        await asyncio.to_thread(cluster.start_server, old)


async def test_server_restarts_keep_agents(cluster: ConsulCluster, unique: str) -> None:
    """The leader restarted with its data dir, and then all three servers at once: the agents are still
    registered and passing on every server afterwards."""
    async with AgentRegistry(cluster.http_addr, stale_reads=True) as registry:
        ids = [await registry.register_agent(registration(unique, i)) for i in range(10)]
        request = DiscoveryRequest(agent_type=unique)

        async def all_there() -> bool:
            found = await registry.discover_agents(request)
            return sorted(a.agent_id for a in found) == sorted(ids)

        await eventually(all_there, what="agents registered")

        def passing_on(addr: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                services, _ = consul_get(addr, f"/v1/health/service/agent-{unique}?stale&passing")
                return sorted(s["Service"]["ID"] for s in services or []) == sorted(ids)

            return check

        leader = cluster.leader()
        await asyncio.to_thread(cluster.restart_server, leader)
        # A restarted server applies its Raft log once the leader tells it the commit index.
        await eventually(passing_on(leader.http_addr), what=f"agents on restarted {leader.node_name}")
        await asyncio.to_thread(cluster.restart_all)
        # No server kept anything in memory: the catalog came back from the data dirs.
        for server in cluster.servers:
            await eventually(
                passing_on(server.http_addr), what=f"agents on {server.node_name} after full stop"
            )
        for agent_id in ids:
            await registry.deregister_agent(agent_id)


async def test_single_server_restart_keeps_agents_and_checks(
    make_consul: MakeConsul, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Consul server restarted with its data dir still has the agents registered on it, with metadata
    and TTL checks, so heartbeats carry on without any re-registration."""
    server = make_consul(dev_mode=False)
    async with AgentRegistry(server.http_addr) as registry:
        big = {"notes": "x" * 2000}  # stored in Consul's KV store
        ids = [
            await registry.register_agent(registration(unique, i, metadata=big if i % 2 else {"i": i}))
            for i in range(10)
        ]
        await asyncio.to_thread(server.restart)
        with caplog.at_level(logging.WARNING, logger="consul_agents.registry"):
            for agent_id in ids:
                await registry.heartbeat(agent_id, load=0.5)
        assert "re-registering" not in caplog.text
        found = await registry.discover_agents(DiscoveryRequest(agent_type=unique))
        assert sorted(a.agent_id for a in found) == sorted(ids)
        for info in found:
            i = int(info.agent_id.rsplit("-", 1)[1])
            assert info.metadata == (big if i % 2 else {"i": i})
            assert info.status is AgentStatus.PASSING


async def test_dev_agent_restart_reregisters_within_one_heartbeat(
    make_consul: MakeConsul, unique: str
) -> None:
    """After a dev agent restarts empty, every live session's agent is back in the catalog, passing,
    within one heartbeat interval of the agent being ready."""
    server = make_consul()
    interval = 1.0
    fleet = [registration(unique, i, ttl=timedelta(seconds=3 * interval)) for i in range(20)]
    async with AgentRegistry(server.http_addr) as registry, fleet_sessions(registry, fleet) as sessions:
        await asyncio.to_thread(server.restart)
        ready = time.monotonic()
        back_at: dict[str, float] = {}

        async def all_back() -> bool:
            services, _ = consul_get(server.http_addr, f"/v1/health/service/agent-{unique}?passing")
            for entry in services or []:
                back_at.setdefault(entry["Service"]["ID"], time.monotonic() - ready)
            return len(back_at) == len(fleet)

        await eventually(all_back, timeout=10 * interval, what="every agent re-registered")
        # One interval, plus the time a heartbeat that raced the restart may have spent failing.
        slowest = max(back_at.values())
        assert slowest <= interval + 0.5, sorted(back_at.items(), key=lambda kv: kv[1])[-3:]
        assert all(s.last_error is None for s in sessions)
