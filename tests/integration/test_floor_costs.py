"""The read side's floor costs (issue 15), against real Consul: what a cached hit, a select with leases held
and a direct discovery no longer do per call, and that the answers they give are still exactly right."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY, metrics
from support import eventually, raw_agent, registration

from consul_agents import AgentRegistry, AgentStatus, DiscoveryRequest, SelectionCriteria
from consul_agents import _cache as cache_module
from consul_agents import _selection as selection_module
from consul_agents import _settings as settings_module
from consul_agents import _wire_read as wire_read

#: The metrics every registry call updates (the watch-lag histogram a watch updates may go on meanwhile).
_PER_CALL = {
    "consul_agents_operation_duration_seconds",
    "consul_agents_operations",
    "consul_agents_cache_requests",
}


@contextlib.contextmanager
def _per_call_metrics_refused(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """prometheus-client's Counter.inc and Histogram.observe raise for the per-call metrics while the
    block runs."""
    with monkeypatch.context() as patch:
        for kind, name in ((metrics.Counter, "inc"), (metrics.Histogram, "observe")):
            real = getattr(kind, name)

            def guarded(self: Any, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
                if getattr(self, "_name", "") in _PER_CALL:
                    raise AssertionError(f"prometheus-client {_name} was called for {self._name}")
                return _real(self, *args, **kwargs)

            patch.setattr(kind, name, guarded)
        yield


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextlib.contextmanager
def _refused(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Iterator[None]:
    """``owner.name`` raises while the block runs (the call must not happen there)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} was called")

    with monkeypatch.context() as patch:
        patch.setattr(owner, name, refuse)
        yield


async def _fleet(registry: AgentRegistry, agent_type: str, count: int) -> list[str]:
    ids = [await registry.register_agent(registration(agent_type, ttl=300)) for _ in range(count)]
    for agent_id in ids:
        await registry.heartbeat(agent_id, load=0.1)
    return ids


async def test_cached_hit_does_none_of_the_old_per_call_costs(
    registry: AgentRegistry, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated cached discovery updates no prometheus-client metric object, copies no result and builds
    no request key, yet is counted (operation, latency, cache hit) and answers a list of the caller's own."""
    await _fleet(registry, unique, 3)
    request = DiscoveryRequest(agent_type=unique)
    await eventually(lambda: _has(registry, request, 3), what="the fleet in the cache")
    view = _view(registry, unique)
    for _ in range(5):  # a late change from Consul (a check's output) makes a new view: measure again
        await registry.discover_agents(request)  # asked once: the next asks of this object are repeats
        view = _view(registry, unique)
        ok = _sample("consul_agents_operations_total", operation="discover", outcome="ok")
        hits = _sample("consul_agents_cache_requests_total", result="hit")
        latencies = _sample("consul_agents_operation_duration_seconds_count", operation="discover")
        try:
            with (
                _per_call_metrics_refused(monkeypatch),
                _refused(monkeypatch, dataclasses, "replace"),
                _refused(monkeypatch, cache_module, "request_key"),
            ):
                first = await registry.discover_agents(request)
                first.clear()  # the caller's own list: the next answer is whole
                second = await registry.discover_agents(request)
                result = await registry.discover(request)
        except AssertionError as exc:
            if "request_key" in str(exc) and _view(registry, unique) is not view:
                continue
            raise
        break
    assert len(second) == 3 and [a.agent_id for a in result.agents] == [a.agent_id for a in second]
    assert result.cached and result.datacenters_tried == (result.datacenter,)
    assert _sample("consul_agents_operations_total", operation="discover", outcome="ok") == ok + 3
    assert _sample("consul_agents_operation_duration_seconds_count", operation="discover") == latencies + 3
    assert _sample("consul_agents_cache_requests_total", result="hit") == hits + 3


def _view(registry: AgentRegistry, agent_type: str) -> object:
    """The cache's current view of the agents of ``agent_type`` (a new object on every change)."""
    return registry.discovery.cache._services["", f"agent-{agent_type}"].view


async def _has(registry: AgentRegistry, request: DiscoveryRequest, count: int) -> bool:
    """The cache answers ``count`` agents, every one with the load its heartbeat reported (settled)."""
    found = await registry.discover_agents(request)
    return len(found) == count and all(agent.current_load == 0.1 for agent in found)


async def test_cached_hit_of_the_same_request_object_follows_consul(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """A request object asked again is answered from what the cache remembers of it only while Consul's
    view is unchanged: an agent registered by someone else appears, this client's own write is seen at
    once, and an agent whose check turns critical leaves the answer."""
    ids = await _fleet(registry, unique, 2)
    request = DiscoveryRequest(agent_type=unique)
    await eventually(lambda: _has(registry, request, 2), what="the fleet in the cache")
    raw_agent(consul_addr, unique, f"{unique}-outside", meta={"agent-load": "0.1"})
    await eventually(lambda: _has(registry, request, 3), what="an outside registration in the answer")
    mine = await registry.register_agent(registration(unique, ttl=300))
    await registry.heartbeat(mine, load=0.2)
    assert mine in {a.agent_id for a in await registry.discover_agents(request)}  # read-your-writes
    await registry.heartbeat(ids[0], status=AgentStatus.CRITICAL)
    assert ids[0] not in {a.agent_id for a in await registry.discover_agents(request)}


async def test_select_with_leases_held_plans_once_per_set_of_leases(
    registry: AgentRegistry, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With leases held, least_loaded works out its tie once per set of requests in flight and then only
    draws; it never picks a leased agent while an equally loaded free one exists."""
    await _fleet(registry, unique, 6)
    criteria = SelectionCriteria(agent_type=unique, strategy="least_loaded")
    await eventually(lambda: _has(registry, criteria, 6), what="the fleet in the cache")
    plans = 0
    real = selection_module._LoadedPlan

    def counting(*args: Any) -> Any:
        nonlocal plans
        plans += 1
        return real(*args)

    monkeypatch.setattr(selection_module, "_LoadedPlan", counting)
    async with contextlib.AsyncExitStack() as leases:
        leased = {(await leases.enter_async_context(registry.lease(criteria))).agent_id for _ in range(3)}
        assert len(leased) == 3  # each lease went to a free agent
        before = plans
        picks = [await registry.select_agent(criteria) for _ in range(40)]
        assert plans == before + 1
    assert all(p is not None and p.agent_id not in leased for p in picks)
    assert len({p.agent_id for p in picks if p is not None}) == 3  # the free ones, drawn at random


async def test_direct_discovery_judges_each_entry_text_once(
    registry: AgentRegistry, consul_addr: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct discovery judges only entries it has not judged in exactly that text: a repeat judges
    none, a heartbeat that changes one agent's entry judges that one; an untrusted entry stays skipped."""
    ids = await _fleet(registry, unique, 4)
    raw_agent(consul_addr, unique, f"{unique}-nocheck", check=False)  # skipped: nothing proves it alive
    request = DiscoveryRequest(agent_type=unique)
    judged: list[str] = []
    real = wire_read.read_entry

    def counting(entry: Any, **kwargs: Any) -> Any:
        judged.append(entry["Service"]["ID"])
        return real(entry, **kwargs)

    monkeypatch.setattr(wire_read, "read_entry", counting)
    first = await registry.discover_agents(request, cached=False)
    assert sorted(a.agent_id for a in first) == sorted(ids)
    assert sorted(judged) == sorted([*ids, f"{unique}-nocheck"])
    judged.clear()
    again = await registry.discover_agents(request, cached=False)
    assert [a.agent_id for a in again] == [a.agent_id for a in first] and judged == []
    await registry.heartbeat(ids[0], load=0.9)
    changed = await registry.discover_agents(request, cached=False)
    assert judged == [ids[0]]
    assert {a.agent_id: a.current_load for a in changed}[ids[0]] == 0.9


async def test_direct_discovery_of_live_agents_leaves_out_critical_ones(
    registry: AgentRegistry, unique: str
) -> None:
    """Asked for every live agent of a type (sent without a filter), a direct discovery still returns no
    critical agent; asked for critical ones (sent with Consul's filter), it returns exactly those."""
    ids = await _fleet(registry, unique, 3)
    await registry.heartbeat(ids[1], status=AgentStatus.CRITICAL)
    live = await registry.discover_agents(DiscoveryRequest(agent_type=unique), cached=False)
    assert sorted(a.agent_id for a in live) == sorted([ids[0], ids[2]])
    critical = await registry.discover_agents(
        DiscoveryRequest(agent_type=unique, status=AgentStatus.CRITICAL), cached=False
    )
    assert [a.agent_id for a in critical] == [ids[1]]


async def test_requests_do_not_parse_consuls_address_each_time(
    consul_addr: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether Consul is on loopback is worked out once per client settings, not on every request."""
    parsed = 0
    real = ipaddress.ip_address

    def counting(address: Any) -> Any:
        nonlocal parsed
        parsed += 1
        return real(address)

    monkeypatch.setattr(settings_module.ipaddress, "ip_address", counting)
    async with AgentRegistry(consul_addr, cache=False) as registry:
        for _ in range(5):
            await registry.discover_agents(DiscoveryRequest(agent_type=unique))
    assert parsed <= 1


async def test_direct_discovery_filters_in_consul_while_a_fleet_is_mostly_down(
    registry: AgentRegistry, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live agents of a type are read without a filter, until an answer is mostly agents left out (a
    failing fleet Consul has not reaped yet): then the next reads let Consul filter, with the same agents."""
    ids = await _fleet(registry, unique, 12)
    sent: list[Any] = []
    gateway = registry.discovery.gateway
    real = gateway.get

    async def spying(operation: str, path: str, **kwargs: Any) -> Any:
        if path.startswith("/v1/health/service/"):
            sent.append(kwargs.get("params"))
        return await real(operation, path, **kwargs)

    monkeypatch.setattr(gateway, "get", spying)
    request = DiscoveryRequest(agent_type=unique)
    assert len(await registry.discover_agents(request, cached=False)) == 12
    for agent_id in ids[2:]:
        await registry.heartbeat(agent_id, status=AgentStatus.CRITICAL)
    down = await registry.discover_agents(request, cached=False)
    again = await registry.discover_agents(request, cached=False)
    assert sorted(a.agent_id for a in down) == sorted(ids[:2]) == sorted(a.agent_id for a in again)
    assert sent[0] is None and sent[1] is None
    assert sent[2] is not None and "filter" in sent[2]
