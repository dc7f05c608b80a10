"""Backup and restore on the 3-server harness, and a Consul agent serving `render` output from -config-dir.

What is true here (Consul 1.8.7), and what docs/operations.md says:

* ``consul snapshot save`` holds the catalog and KV: after the servers are wiped (stopped, data dirs
  deleted, started as a new cluster) and ``consul snapshot restore`` runs, every agent is back with its
  metadata, the KV part included.
* Without the restore, a wiped cluster has no KV at all: agents whose metadata lives in KV come back (through
  their Consul client agent's anti-entropy, once it is joined again) without it. Services live on their
  node's Consul agent; the snapshot is what brings the KV back.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import throwaway_cluster
from support import consul_get, eventually

from consul_agents import AgentRegistration, AgentRegistry
from consul_agents import _wire as wire
from consul_agents.cli import main
from consul_agents.cluster import ConsulCluster
from consul_agents.dev import ConsulDevServer, find_consul_binary


def _consul(*args: str) -> str:
    result = subprocess.run(
        [str(find_consul_binary()), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[ConsulCluster]:
    """A 3-server cluster with a client agent, for this module only (its servers get wiped)."""
    with throwaway_cluster() as started:
        yield started


def _registration(unique: str, i: int) -> AgentRegistration:
    # every third agent's metadata is too large for Consul's Meta: it lives in KV
    metadata = {"i": i, "blob": "x" * (700 if i % 3 == 0 else 10)}
    return AgentRegistration(
        agent_type=unique,
        agent_id=f"{unique}-{i}",
        capabilities=["plan"],
        endpoint=f"http://127.0.0.1:{34000 + i}",
        tags={"tier": "gold"},
        metadata=metadata,
        ttl=timedelta(minutes=5),
        deregister_after=timedelta(minutes=10),
    )


def _wipe(cluster: ConsulCluster) -> None:
    """Stop every server, delete its data dir, start them as a new cluster, and join the client again."""
    for server in cluster.servers:
        server.stop()
        assert server.data_dir is not None
        shutil.rmtree(server.data_dir)
    cluster.restart_all()
    assert cluster.client is not None
    _consul("join", f"-http-addr={cluster.client.http_addr}", cluster.serf_address(cluster.servers[0]))


async def test_snapshot_save_wipe_restore_brings_every_agent_back(
    cluster: ConsulCluster, unique: str, tmp_path: Path
) -> None:
    """Agents saved in a snapshot, servers wiped: KV metadata is gone until `consul snapshot restore`,
    after which every agent and its metadata (Meta and KV) reads back as registered."""
    registrations = [_registration(unique, i) for i in range(6)]
    async with AgentRegistry(cluster.http_addr) as registry:
        result = await registry.register_many(registrations)
        assert result.ok
        before = {r.agent_id: await registry.get_agent(r.agent_id or "") for r in registrations}
    held, _ = consul_get(cluster.http_addr, f"/v1/kv/{wire.metadata_key(unique, f'{unique}-0')}")
    assert held is not None, "agent 0's metadata was expected in KV"
    snapshot = tmp_path / "backup.snap"
    leader = cluster.leader()
    _consul("snapshot", "save", f"-http-addr={leader.http_addr}", str(snapshot))
    _consul("snapshot", "inspect", str(snapshot))

    await asyncio.to_thread(_wipe, cluster)
    kv_key = wire.metadata_key(unique, f"{unique}-0")
    gone, _ = consul_get(cluster.servers[0].http_addr, f"/v1/kv/{kv_key}")
    assert gone is None, "a wiped cluster still had the KV metadata"

    _consul("snapshot", "restore", f"-http-addr={cluster.leader().http_addr}", str(snapshot))
    async with AgentRegistry(cluster.http_addr) as registry:

        async def all_back() -> bool:
            entries, _ = consul_get(cluster.http_addr, f"/v1/health/service/agent-{unique}")
            return {e["Service"]["ID"] for e in entries} == set(before)

        await eventually(all_back, timeout=30, what="every agent back in the catalog")
        for agent_id, was in before.items():
            now = await registry.get_agent(agent_id)
            assert (now.metadata, now.endpoint, now.tags, now.capabilities) == (
                was.metadata,
                was.endpoint,
                was.tags,
                was.capabilities,
            )
        await registry.deregister_many(list(before))


def test_a_consul_agent_serves_rendered_agents_from_its_config_dir(
    tmp_path: Path, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`consul-agents render` output in a -config-dir is loaded by a Consul agent at start: its agents are in
    the catalog with their Meta, and Consul DNS answers their SRV records."""
    sidecar = tmp_path / "fleet.yaml"
    sidecar.write_text(
        "agents:\n"
        + "".join(
            f"  - {{agent_id: {unique}-{i}, agent_type: {unique}, capabilities: [plan], "
            f"endpoint: 'http://127.0.0.1:{35000 + i}'}}\n"
            for i in range(2)
        )
    )
    config_dir = tmp_path / "consul.d"
    config_dir.mkdir()
    assert main(["render", str(sidecar), "--check", "ttl"]) == 0
    (config_dir / "agents.json").write_text(capsys.readouterr().out)

    class WithConfigDir(ConsulDevServer):
        def command(self, consul_bin: Path) -> list[str]:
            return [*super().command(consul_bin), f"-config-dir={config_dir}"]

    with WithConfigDir() as server:
        deadline = time.monotonic() + 15
        while True:  # the agent syncs its services to the catalog just after it starts
            entries, _ = consul_get(server.http_addr, f"/v1/catalog/service/agent-{unique}")
            if len(entries) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sorted(e["ServiceID"] for e in entries) == [f"{unique}-0", f"{unique}-1"]
        assert sorted(e["ServiceMeta"]["agent-endpoint"] for e in entries) == [
            "http://127.0.0.1:35000",
            "http://127.0.0.1:35001",
        ]
        dig = shutil.which("dig")
        if dig is None:
            pytest.skip("dig (bind9-dnsutils) is not installed: the catalog part passed")
        answer = subprocess.run(
            [
                dig,
                "@127.0.0.1",
                "-p",
                str(server.dns_port),
                "+short",
                "SRV",
                f"agent-{unique}.service.consul",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        ports = sorted(int(line.split()[2]) for line in answer.splitlines() if line.strip())
        assert ports == [35000, 35001], answer
    json.loads((config_dir / "agents.json").read_text())  # what was loaded is plain JSON
