"""The long scale scenarios (`make test-slow`): 1,000 heartbeating agents, 10,000 agents, killed sidecars.

They run the same scenario code as the scale report (``make bench-scale``) and assert on its outcome;
the report records the figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import MakeConsul

from benchmarks._fleet import run_fleet_sweep
from benchmarks._sidecar_kill import run_sidecar_kill
from benchmarks._steady import run_steady
from consul_agents.dev import ConsulDevServer

pytestmark = pytest.mark.slow


@pytest.fixture
def own_consul(make_consul: MakeConsul) -> Iterator[ConsulDevServer]:
    """A fresh dev agent for one heavy scenario, past its warm-up window."""
    server = make_consul()
    server.wait_settled()
    yield server


async def test_thousand_agents_and_hundred_discoverers_for_a_minute(
    own_consul: ConsulDevServer, unique: str
) -> None:
    """1,000 agents heartbeating from one process and 100 concurrent discoverers for 60 s: no error, every
    agent passing at the end, and no index change of the fleet's services while nothing changes."""
    assert own_consul.pid is not None
    result = await run_steady(
        own_consul.http_addr, own_consul.pid, prefix=unique, agents=1000, discoverers=100
    )
    assert result.discoveries > 1000
    assert result.discovery_errors == 0, result.first_error
    assert result.heartbeat_failures == 0, result.first_heartbeat_error
    assert result.passing_at_end == 1000
    assert result.service_index_changes == 0


async def test_ten_thousand_agents(own_consul: ConsulDevServer, unique: str) -> None:
    """10,000 agents register, and discovery by type and of the whole fleet finds exactly them."""
    assert own_consul.pid is not None
    rows = await run_fleet_sweep(
        own_consul.http_addr,
        own_consul.pid,
        sizes=(10_000,),
        prefix=unique,
        samples=10,
        whole_fleet_samples=2,
    )
    (row,) = rows
    assert row["found"] == {"one_type": 100, "type_and_capability": 25, "all": 10_000}


async def test_sigkilled_sidecar_turns_critical_then_is_reaped(
    own_consul: ConsulDevServer, unique: str
) -> None:
    """A `consul-agents sidecar` killed with SIGKILL leaves its agent critical within TTL + 1 s, and
    Consul reaps it within DeregisterCriticalServiceAfter (1 min) + 30 s."""
    result = await run_sidecar_kill(own_consul.http_addr, unique, sidecars=3, ttl=2.0)
    assert not result["not_reaped"], result
    assert all(t <= 2.0 + 1.0 for t in result["critical_after_kill_s"].values()), result
    assert all(t <= 60 + 30 for t in result["reaped_after_critical_s"].values()), result
