"""Prometheus metrics: what registry operations record, what /metrics serves, and that promtool accepts it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import Any

import pytest
from aiohttp import test_utils
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from consul_agents import AgentNotFoundError, AgentRegistration, AgentRegistry, AgentStatus, DiscoveryRequest
from consul_agents._metrics import observe_watch_lag, record_cache

PROMTOOL = shutil.which("promtool")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_operations_record_latency_and_outcome(consul_addr: str, unique: str) -> None:
    """Each registry call adds one latency observation and one count under its outcome."""
    before_ok = sample("consul_agents_operations_total", operation="discover", outcome="ok")
    before_latency = sample("consul_agents_operation_duration_seconds_count", operation="discover")
    before_missing = sample("consul_agents_operations_total", operation="get_agent", outcome="not_found")
    async with AgentRegistry(consul_addr) as registry:
        await registry.discover_agents(DiscoveryRequest(agent_type=unique))
        await registry.discover_agents(DiscoveryRequest(agent_type=unique))
        with pytest.raises(AgentNotFoundError):
            await registry.get_agent(f"{unique}-nobody")
    assert sample("consul_agents_operations_total", operation="discover", outcome="ok") == before_ok + 2
    assert (
        sample("consul_agents_operation_duration_seconds_count", operation="discover") == before_latency + 2
    )
    after_missing = sample("consul_agents_operations_total", operation="get_agent", outcome="not_found")
    assert after_missing == before_missing + 1


def test_cache_hit_ratio_follows_hits_and_misses() -> None:
    """The hit ratio gauge is hits / (hits + misses) over the counters it sits beside."""
    record_cache(True)
    record_cache(False)
    hits = sample("consul_agents_cache_requests_total", result="hit")
    misses = sample("consul_agents_cache_requests_total", result="miss")
    assert sample("consul_agents_cache_hit_ratio") == pytest.approx(hits / (hits + misses))
    before = sample("consul_agents_watch_lag_seconds_count")
    observe_watch_lag(0.004)
    assert sample("consul_agents_watch_lag_seconds_count") == before + 1


async def test_metrics_endpoint_counts_agents_by_type_and_status(
    api: test_utils.TestClient[Any, Any], consul_addr: str, unique: str
) -> None:
    """/metrics serves the agents gauge by datacenter, type and status as the scraper's token sees them."""
    async with AgentRegistry(consul_addr) as registry:
        for n in range(3):
            reg = AgentRegistration(
                agent_type=unique, agent_id=f"{unique}-{n}", capabilities=["x"], endpoint="http://h:1", ttl=60
            )
            await registry.register_agent(reg)
        await registry.heartbeat(f"{unique}-2", status=AgentStatus.CRITICAL)
        try:
            answer = await api.get("/metrics")
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain")
            text = await answer.text()
        finally:
            for n in range(3):
                await registry.deregister_agent(f"{unique}-{n}")
    fleet = {
        (s.labels["agent_type"], s.labels["status"], s.labels["datacenter"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "consul_agents_agents"
        for s in family.samples
    }
    assert fleet[(unique, "passing", "dc1")] == 2
    assert fleet[(unique, "critical", "dc1")] == 1
    assert (unique, "warning", "dc1") not in fleet


@pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian's prometheus package; `make tools` installs it)",
)
async def test_exposition_passes_promtool_check_metrics(
    api: test_utils.TestClient[Any, Any], consul_addr: str, unique: str
) -> None:
    """`promtool check metrics` finds no problem in what /metrics serves after every kind of operation."""
    async with AgentRegistry(consul_addr) as registry:
        agent_id = await registry.register_agent(
            AgentRegistration(agent_type=unique, capabilities=["x"], endpoint="http://h:1")
        )
        await registry.heartbeat(agent_id, 0.5)
        await registry.select_agent()
        await registry.deregister_agent(agent_id)
    record_cache(True)
    observe_watch_lag(0.01)
    await api.get("/v1/agents")
    text = await (await api.get("/metrics")).text()
    assert PROMTOOL is not None
    command = [PROMTOOL, "check", "metrics"]
    checked = await asyncio.to_thread(
        subprocess.run, command, input=text, capture_output=True, text=True, check=False, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""
    assert (
        'consul_agents_http_request_duration_seconds_count{method="GET",route="/v1/agents",status="200"}'
        in text
    )
