"""Prometheus HTTP service discovery: Debian's real Prometheus finds and scrapes a fleet through the REST API.

Debian's prometheus 2.42 is built without consul_sd_configs; its http_sd_configs reads GET /v1/prometheus/sd.
`make tools` installs it (as root, with apt-get); without the binary these tests skip.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import test_utils, web
from processes import TESTS, reap
from support import consul_get, eventually, registration

from consul_agents import AgentRegistry, AgentStatus, DiscoveryRequest

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="Debian's prometheus is not installed (`make tools` installs it as root)"
)

#: How often Prometheus asks the API for targets in these tests.
REFRESH = 1.0
#: Prometheus' discovery and scrape managers each pass target changes on at most every 5 s (so up to 10 s
#: after a refresh), plus slack for a loaded machine.
PROMETHEUS_THROTTLE = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """A real Prometheus process with one scrape job: http_sd at ``job`` when it is a URL."""

    def __init__(self, tmp: Path, job: str | dict[str, Any]) -> None:
        self.port = free_port()
        if isinstance(job, str):
            job = {
                "job_name": "agents",
                "http_sd_configs": [{"url": job, "refresh_interval": f"{REFRESH:g}s"}],
            }
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms"}, "scrape_configs": [job]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (tmp / "prometheus.log").open("w")
        assert PROMETHEUS is not None
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus' active targets (its /api/v1/targets), or [] while it is not up yet."""
        url = f"http://127.0.0.1:{self.port}/api/v1/targets?state=active"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                targets: list[dict[str, Any]] = json.loads(answer.read())["data"]["activeTargets"]
        except OSError:
            assert self.proc.poll() is None, "prometheus exited"
            return []
        return targets

    def close(self) -> None:
        reap(self.proc)
        self.log.close()


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text="agent_requests_total 7\n", content_type="text/plain")


@pytest.fixture
async def metrics_servers() -> AsyncIterator[list[int]]:
    """Four HTTP servers on loopback: the third serves only /v1/metrics, the others /metrics."""
    runners = []
    ports = []
    for path in ("/metrics", "/metrics", "/v1/metrics", "/metrics"):
        app = web.Application()
        app.router.add_get(path, _metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        ports.append(runner.addresses[0][1])
    yield ports
    for runner in runners:
        await runner.cleanup()


def by_id(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["labels"]["agent_id"]: t for t in targets if "agent_id" in t["labels"]}


async def test_prometheus_scrapes_the_agents_discovery_returns(
    api: test_utils.TestClient[Any, Any],
    consul_addr: str,
    unique: str,
    metrics_servers: list[int],
    tmp_path: Path,
) -> None:
    """Prometheus' targets are the live agents discovery returns, scraped under their endpoint's path; a
    draining agent, a critical one, one in maintenance and a deregistered one leave the targets within one
    refresh."""
    ports = metrics_servers
    ids = [f"{unique}-{n}" for n in range(5)]
    endpoints = [
        f"http://127.0.0.1:{ports[0]}",
        f"http://127.0.0.1:{ports[1]}/",
        f"http://127.0.0.1:{ports[2]}/v1",
        f"http://127.0.0.1:{free_port()}",  # registered critical: never a target
        f"http://127.0.0.1:{ports[3]}",  # drained later
    ]
    async with AgentRegistry(consul_addr) as registry:
        for agent_id, endpoint in zip(ids, endpoints, strict=True):
            reg = registration(unique, agent_id=agent_id, endpoint=endpoint, ttl=60, tags={"tier-x": "gold"})
            await registry.register_agent(reg)
        await registry.heartbeat(ids[3], status=AgentStatus.CRITICAL)
        prometheus = Prometheus(tmp_path, str(api.make_url(f"/v1/prometheus/sd?type={unique}")))
        try:
            discovered = {
                a.agent_id for a in await registry.discover_agents(DiscoveryRequest(agent_type=unique))
            }
            assert discovered == {*ids[:3], ids[4]}

            async def all_up() -> bool:
                targets = by_id(prometheus.targets())
                return set(targets) == discovered and all(t["health"] == "up" for t in targets.values())

            await eventually(all_up, timeout=60, what=f"prometheus scrapes {sorted(discovered)}")
            targets = by_id(prometheus.targets())
            assert targets[ids[2]]["scrapeUrl"] == f"http://127.0.0.1:{ports[2]}/v1/metrics"
            assert targets[ids[1]]["scrapeUrl"] == f"http://127.0.0.1:{ports[1]}/metrics"
            labels = targets[ids[0]]["labels"]
            assert (labels["agent_type"], labels["datacenter"], labels["job"]) == (unique, "dc1", "agents")
            meta = targets[ids[0]]["discoveredLabels"]
            assert meta["__meta_consul_agents_status"] == "passing"
            assert meta["__meta_consul_agents_capabilities"] == ",plan,"
            assert meta["__meta_consul_agents_tag_tier_x"] == "gold"

            for leave, agent_id in [
                (registry.set_draining(ids[4], True), ids[4]),
                (registry.heartbeat(ids[0], status=AgentStatus.CRITICAL), ids[0]),
                (registry.set_maintenance(ids[1], True, "upgrade"), ids[1]),
                (registry.deregister_agent(ids[2]), ids[2]),
            ]:
                await leave
                started = time.monotonic()

                async def not_served(agent_id: str = agent_id) -> bool:
                    answer = await api.get(f"/v1/prometheus/sd?type={unique}")
                    return agent_id not in {g["labels"]["agent_id"] for g in await answer.json()}

                # Prometheus' next refresh no longer gets it: the API answers from a cache Consul keeps fresh.
                await eventually(not_served, timeout=1.0, what=f"{agent_id} leaves the http_sd answer")

                async def gone(agent_id: str = agent_id) -> bool:
                    return agent_id not in by_id(prometheus.targets())

                await eventually(gone, timeout=30, what=f"{agent_id} leaves prometheus' targets")
                assert time.monotonic() - started < REFRESH + PROMETHEUS_THROTTLE
        finally:
            prometheus.close()
            for agent_id in ids:
                await registry.deregister_agent(agent_id)


def readme_consul_sd_relabelling() -> list[dict[str, Any]]:
    """The relabel_configs of the README's consul_sd recipe."""
    text = (TESTS.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    [recipe] = [yaml.safe_load(b) for b in blocks if "consul_sd_configs" in b]
    relabel: list[dict[str, Any]] = recipe["scrape_configs"][0]["relabel_configs"]
    return relabel


def consul_sd_labels(entry: dict[str, Any]) -> dict[str, Any]:
    """The target consul_sd (Prometheus' discovery/consul) makes of one /v1/health/service entry."""
    node, service, checks = entry["Node"], entry["Service"], entry["Checks"]
    statuses = {c["Status"] for c in checks}
    if any(c["CheckID"].startswith(("_service_maintenance:", "_node_maintenance")) for c in checks):
        health = "maintenance"
    else:
        health = next((s for s in ("critical", "warning") if s in statuses), "passing")
    labels = {
        "__meta_consul_address": node["Address"],
        "__meta_consul_dc": node["Datacenter"],
        "__meta_consul_health": health,
        "__meta_consul_node": node["Node"],
        "__meta_consul_service": service["Service"],
        "__meta_consul_service_id": service["ID"],
        "__meta_consul_service_address": service["Address"],
        "__meta_consul_service_port": str(service["Port"]),
        "__meta_consul_tags": "," + ",".join(service["Tags"]) + ",",
    }
    for key, value in service["Meta"].items():
        labels["__meta_consul_service_metadata_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    address = service["Address"] or node["Address"]
    return {"targets": [f"{address}:{service['Port']}"], "labels": labels}


async def test_readme_consul_sd_relabelling_keeps_live_agents_with_their_path(
    consul_addr: str, unique: str, tmp_path: Path
) -> None:
    """The README's consul_sd relabel_configs, run by Debian's Prometheus on consul_sd's labels of real
    entries, keep passing and warning agents, drop critical and maintenance ones, and scrape the path."""
    states = {"p": "passing", "w": "warning", "c": "critical", "m": "maintenance"}
    async with AgentRegistry(consul_addr) as registry:
        for suffix, state in states.items():
            endpoint = "http://127.0.0.1:9101/p/" if suffix == "p" else "http://h:1"
            await registry.register_agent(
                registration(unique, agent_id=f"{unique}-{suffix}", endpoint=endpoint)
            )
            if state in ("warning", "critical"):
                await registry.heartbeat(f"{unique}-{suffix}", status=AgentStatus(state))
            elif state == "maintenance":
                await registry.set_maintenance(f"{unique}-{suffix}", True, "upgrade")
        try:
            entries, _ = consul_get(consul_addr, f"/v1/health/service/agent-{unique}")
        finally:
            for suffix in states:
                await registry.deregister_agent(f"{unique}-{suffix}")
    assert len(entries) == len(states)
    (tmp_path / "consul_sd.json").write_text(json.dumps([consul_sd_labels(e) for e in entries]))
    job = {
        "job_name": "consul_sd_recipe",
        "file_sd_configs": [{"files": [str(tmp_path / "consul_sd.json")]}],
        "relabel_configs": readme_consul_sd_relabelling(),
    }
    prometheus = Prometheus(tmp_path, job)
    try:

        async def discovered() -> bool:
            return bool(prometheus.targets())

        await eventually(discovered, timeout=60, what="prometheus applies the recipe to the file_sd targets")
        targets = by_id(prometheus.targets())
    finally:
        prometheus.close()
    assert set(targets) == {f"{unique}-p", f"{unique}-w"}
    assert targets[f"{unique}-p"]["scrapeUrl"] == "http://127.0.0.1:9101/p/metrics"
    assert targets[f"{unique}-w"]["scrapeUrl"] == "http://h:1/metrics"
    assert targets[f"{unique}-p"]["labels"]["agent_type"] == unique
    assert targets[f"{unique}-p"]["labels"]["datacenter"] == "dc1"
