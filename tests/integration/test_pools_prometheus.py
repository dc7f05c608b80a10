"""The scaling signal end to end: Debian's real Prometheus scrapes the REST API's /metrics while a pool's
load ramps up, the pool grows, and selections of an empty pool go unmet (docs/autoscaling.md's loop, less
the autoscaler, which needs Kubernetes)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from aiohttp import test_utils
from processes import TESTS
from support import eventually, registration
from test_prometheus_sd import PROMETHEUS, Prometheus, pytestmark  # noqa: F401 (skips without prometheus)

from consul_agents import AgentRegistry, PoolSettings, SelectionCriteria

Client = test_utils.TestClient[Any, Any]


DOC = TESTS.parent / "docs" / "autoscaling.md"


def query_all(prometheus: Prometheus, promql: str) -> list[dict[str, Any]]:
    """The series of an instant PromQL query ([] while Prometheus is not up or not ready); a query
    Prometheus refuses fails the test."""
    url = f"http://127.0.0.1:{prometheus.port}/api/v1/query?query={urllib.parse.quote(promql)}"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 503:  # still starting (replaying its write-ahead log): not ready to answer
                return []
            raise AssertionError(f"prometheus refused {promql!r}: {exc.read()[:300]!r}") from exc
    except OSError:
        assert prometheus.proc.poll() is None, "prometheus exited"
        return []
    return result


def query(prometheus: Prometheus, promql: str) -> float | None:
    """The value of an instant PromQL query with one series, or None while it has none."""
    result = query_all(prometheus, promql)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def documented_queries(agent_type: str) -> tuple[str, str, str]:
    """docs/autoscaling.md's KEDA query (for ``agent_type`` instead of planner), unmet-demand query and cost
    query, as written there."""
    text = DOC.read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)]
    [keda] = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "ScaledObject"]
    promql: str = keda["spec"]["triggers"][0]["metadata"]["query"]
    useful = text[text.index("Useful queries") :]
    unmet, cost = re.findall(r"`([^`]*\(consul_agents[^`]*)`", useful)[:2]
    return promql.replace('"planner"', f'"{agent_type}"'), unmet, cost


async def test_prometheus_sees_the_signal_rise_with_load_fall_with_growth_and_unmet_demand(
    api: Client, consul_addr: str, unique: str, tmp_path: Path
) -> None:
    """Scraped by Prometheus: desired_agents rises when the pool's agents report more load, falls when
    agents join and take their share, and an empty pool's unmet selections show with reason
    none_registered and raise its signal from 0 to 1; the queries docs/autoscaling.md gives KEDA and
    operators run and answer accordingly."""
    idle = f"{unique}-idle"
    # A scrape counts every agent of the tests' shared Consul: on a loaded machine it can take over a second.
    job = {
        "job_name": "pools",
        "scrape_interval": "2s",
        "scrape_timeout": "2s",
        "static_configs": [{"targets": [f"{api.host}:{api.port}"]}],
    }
    ids = [f"{unique}-{n}" for n in range(6)]
    async with AgentRegistry(consul_addr) as registry:
        settings = PoolSettings(min_agents=1, max_agents=20, target_load=0.5, cost_per_agent_hour=0.5)
        await registry.set_pool_settings(unique, settings)
        await registry.set_pool_settings(idle, PoolSettings(max_agents=5))
        for agent_id in ids[:2]:
            await registry.register_agent(registration(unique, agent_id=agent_id, load=0.2, ttl=60))
        prometheus = Prometheus(tmp_path, job)
        try:

            async def signal_is(value: float, agent_type: str = unique) -> None:
                promql = f'consul_agents_pool_desired_agents{{agent_type="{agent_type}"}}'

                async def seen() -> bool:
                    return query(prometheus, promql) == value

                await eventually(seen, timeout=90, what=f"prometheus sees {promql} == {value}")

            await signal_is(1)  # ceil(2 * 0.2 / 0.5)
            await signal_is(0, idle)
            for agent_id in ids[:2]:  # the load ramps up
                await registry.heartbeat(agent_id, load=0.9)
            await signal_is(4)  # ceil(2 * 0.9 / 0.5)
            for agent_id in ids[2:]:  # four agents join and the load spreads
                await registry.register_agent(registration(unique, agent_id=agent_id, load=0.15, ttl=60))
            for agent_id in ids[:2]:
                await registry.heartbeat(agent_id, load=0.2)
            await signal_is(2)  # ceil(6 * (2 * 0.2 + 4 * 0.15) / 6 / 0.5)
            answer = await api.post("/v1/select", json={"agent_type": idle})
            assert answer.status == 404
            unmet = f'consul_agents_selections_unmet_total{{agent_type="{idle}",reason="none_registered"}}'

            async def counted() -> bool:
                return query(prometheus, unmet) == 1

            await eventually(counted, timeout=90, what=f"prometheus sees {unmet} == 1")
            await signal_is(1, idle)  # demand for a pool with no agent: scale from zero

            keda, unmet_rate, cost = documented_queries(unique)
            assert query(prometheus, keda) == 2  # what KEDA would read

            async def rate_seen() -> bool:  # a rate needs two samples of the counter
                return idle in {r["metric"].get("agent_type") for r in query_all(prometheus, unmet_rate)}

            await eventually(rate_seen, timeout=90, what=f"the documented unmet query lists {idle}")
            costs = {r["metric"].get("agent_type"): float(r["value"][1]) for r in query_all(prometheus, cost)}
            assert costs[unique] == 3.0  # six agents at 0.5 an hour
        finally:
            prometheus.close()
            for agent_id in ids:
                await registry.deregister_agent(agent_id)
            for agent_type in (unique, idle):
                await registry.set_pool_settings(agent_type, None)


PROMTOOL = shutil.which("promtool")


async def test_pool_exposition_passes_promtool_check_metrics(
    api: Client, consul_addr: str, unique: str
) -> None:
    """`promtool check metrics` finds no problem in /metrics with pools (every setting), a lease in flight
    and unmet selections in it."""
    assert PROMTOOL is not None  # Debian's prometheus package brings it with prometheus
    async with AgentRegistry(consul_addr) as registry:
        settings = PoolSettings(min_agents=1, max_agents=3, desired_agents=2, cost_per_agent_hour=0.3)
        await registry.set_pool_settings(unique, settings)
        await registry.register_agent(registration(unique, agent_id=f"{unique}-1"))
        try:
            assert (await api.post("/v1/select", json={"agent_type": f"{unique}-none"})).status == 404
            async with registry.lease(SelectionCriteria(agent_type=unique)):
                text = await (await api.get("/metrics")).text()
        finally:
            await registry.deregister_agent(f"{unique}-1")
            await registry.set_pool_settings(unique, None)
    for name in ("consul_agents_pool_desired_agents", "consul_agents_pool_leases_in_flight"):
        assert f'{name}{{agent_type="{unique}",datacenter="dc1"}}' in text
    checked = await asyncio.to_thread(
        subprocess.run, [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and checked.stdout.strip() == "", checked.stdout + checked.stderr
