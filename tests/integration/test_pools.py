"""Pools and demand against real Consul: unmet selections counted with their reason, pool settings in KV,
the pool gauges and the scaling signal on /metrics, the REST routes and the CLI."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from support import consul_put, registration

from consul_agents import AgentRegistry, AgentStatus, NoAgentAvailableError, SelectionCriteria
from consul_agents._pools import PoolSettings, pool_key
from consul_agents.cli import main

Client = test_utils.TestClient[Any, Any]


def kv_raw(addr: str, key: str, value: bytes | None, token: str | None = None) -> None:
    """Put the bytes ``value`` at ``key`` as any KV writer can (None deletes the key)."""
    method = "DELETE" if value is None else "PUT"
    headers = {"X-Consul-Token": token} if token else {}
    request = urllib.request.Request(f"{addr}/v1/kv/{key}", data=value, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=5):
        pass


def unmet(agent_type: str, reason: str, datacenter: str = "dc1") -> float:
    value = REGISTRY.get_sample_value(
        "consul_agents_selections_unmet_total",
        {"agent_type": agent_type, "datacenter": datacenter, "reason": reason},
    )
    return value or 0.0


def outcomes(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "consul_agents_operations_total", {"operation": "select", "outcome": outcome}
        )
        or 0.0
    )


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric ``name`` in an exposition, by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def pool_sample(text: str, name: str, agent_type: str, **labels: str) -> float | None:
    wanted = tuple(sorted({"agent_type": agent_type, "datacenter": "dc1", **labels}.items()))
    return samples(text, name).get(wanted)


async def test_a_selection_that_finds_nobody_is_counted_unmet_not_ok(
    registry: AgentRegistry, unique: str
) -> None:
    """select_agent returning None counts outcome "unmet" (not "ok") and one unmet selection, reason
    none_registered, for a type with no agent at all."""
    ok, missed, before = outcomes("ok"), outcomes("unmet"), unmet(unique, "none_registered")
    assert await registry.select_agent(SelectionCriteria(agent_type=unique)) is None
    assert outcomes("unmet") == missed + 1
    assert outcomes("ok") == ok
    assert unmet(unique, "none_registered") == before + 1


async def test_each_reason_of_an_unmet_selection(registry: AgentRegistry, unique: str) -> None:
    """none_passing (only a critical agent), over_max_load (every live agent over max_load) and
    all_excluded (the caller excluded the only one, or the only one drains) are told apart."""
    critical_type, loaded_type, alone_type = f"{unique}-c", f"{unique}-l", f"{unique}-x"
    await registry.register_agent(
        registration(critical_type, agent_id=f"{unique}-c1"), status=AgentStatus.CRITICAL
    )
    await registry.register_agent(registration(loaded_type, agent_id=f"{unique}-l1", load=0.9))
    await registry.register_agent(registration(alone_type, agent_id=f"{unique}-x1"))
    try:
        cases = [
            (SelectionCriteria(agent_type=critical_type), critical_type, "none_passing"),
            (SelectionCriteria(agent_type=loaded_type, max_load=0.5), loaded_type, "over_max_load"),
            (SelectionCriteria(agent_type=alone_type, exclude=[f"{unique}-x1"]), alone_type, "all_excluded"),
        ]
        for criteria, agent_type, reason in cases:
            before = unmet(agent_type, reason)
            assert await registry.select_agent(criteria) is None
            assert unmet(agent_type, reason) == before + 1, reason
        await registry.set_draining(f"{unique}-x1")
        before = unmet(alone_type, "all_excluded")
        assert await registry.select_agent(SelectionCriteria(agent_type=alone_type)) is None
        assert unmet(alone_type, "all_excluded") == before + 1
    finally:
        for agent_id in (f"{unique}-c1", f"{unique}-l1", f"{unique}-x1"):
            await registry.deregister_agent(agent_id)


async def test_an_unmet_lease_is_counted_and_leases_in_flight_per_pool(consul_addr: str, unique: str) -> None:
    """A lease that finds nobody raises NoAgentAvailableError and counts one unmet selection; leases in
    flight are counted per pool while the block runs, and no longer after."""
    async with AgentRegistry(consul_addr) as registry:
        before = unmet(unique, "none_registered")
        with pytest.raises(NoAgentAvailableError):
            async with registry.lease(SelectionCriteria(agent_type=unique)):
                pass
        assert unmet(unique, "none_registered") == before + 1
        await registry.register_agent(registration(unique, agent_id=f"{unique}-1"))
        await registry.register_agent(registration(unique, agent_id=f"{unique}-2"))
        try:
            criteria = SelectionCriteria(agent_type=unique, exclude=[f"{unique}-2"])
            async with registry.lease(criteria):
                labels = {"agent_type": unique, "datacenter": "dc1"}
                assert REGISTRY.get_sample_value("consul_agents_pool_leases_in_flight", labels) == 1
                assert (await registry.pool(unique)).leases_in_flight == 1
            assert REGISTRY.get_sample_value("consul_agents_pool_leases_in_flight", labels) == 0
        finally:
            for n in (1, 2):
                await registry.deregister_agent(f"{unique}-{n}")


async def test_rest_select_that_finds_nobody_is_counted(api: Client, unique: str) -> None:
    """POST /v1/select answering 404 no_match counts one unmet selection with its reason."""
    before = unmet(unique, "none_registered")
    answer = await api.post("/v1/select", json={"agent_type": unique})
    assert answer.status == 404
    assert unmet(unique, "none_registered") == before + 1


async def test_pool_settings_round_trip_and_the_signal(registry: AgentRegistry, unique: str) -> None:
    """Settings written with set_pool_settings come back from pool(); the signal follows the formula:
    ceil(passing * mean / target), clamped to min/max, pinned by desired_agents."""
    for n, load in enumerate((0.9, 0.9, 0.6)):
        await registry.register_agent(registration(unique, agent_id=f"{unique}-{n}", load=load, weight=2))
    try:
        settings = PoolSettings(min_agents=1, max_agents=10, target_load=0.5, cost_per_agent_hour=0.25)
        await registry.set_pool_settings(unique, settings)
        pool = await registry.pool(unique)
        assert pool.settings == settings
        assert (pool.passing, pool.capacity, pool.agents["passing"]) == (3, 6, 3)
        assert pool.load_max == pytest.approx(0.9)
        assert pool.desired_agents == 5  # ceil(3 * 0.8 / 0.5)
        await registry.set_pool_settings(unique, PoolSettings(max_agents=4, target_load=0.5))
        assert (await registry.pool(unique)).desired_agents == 4
        await registry.set_pool_settings(unique, PoolSettings(desired_agents=2))
        assert (await registry.pool(unique)).desired_agents == 2
        await registry.set_pool_settings(unique, None)
        pool = await registry.pool(unique)
        assert pool.settings is None and pool.desired_agents == 4  # ceil(3 * 0.8 / 0.7)
    finally:
        for n in range(3):
            await registry.deregister_agent(f"{unique}-{n}")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (b'{"min_agents": -1}', "min_agents"),
        (b'{"min_agents": "3"}', "min_agents"),
        (b'{"min_agents": 5, "max_agents": 2}', "below min_agents"),
        (b'{"target_load": 0}', "target_load"),
        (b'{"surprise": 1}', "surprise"),
        (b'{"a": ' * 50 + b"1" + b"}" * 50, "not JSON"),
        (b'{"cost_per_agent_hour": 1, "pad": "' + b"x" * 5000 + b'"}', "at most 4096"),
    ],
)
async def test_a_hostile_pool_value_spoils_only_its_own_pool(
    api: Client, consul_addr: str, unique: str, value: bytes, problem: str
) -> None:
    """A value in KV that is not valid settings gives its pool a settings_error and no signal, the
    settings_invalid gauge 1; /metrics still answers 200 and another pool keeps its settings."""
    bad, good = f"{unique}-bad", f"{unique}-good"
    consul_put(consul_addr, f"/v1/kv/{pool_key(good)}", {"min_agents": 2})
    kv_raw(consul_addr, pool_key(bad), value)
    try:
        answer = await api.get(f"/v1/pools/{bad}")
        assert answer.status == 200
        body = await answer.json()
        assert body["desired_agents"] is None and problem in body["settings_error"]
        metrics = await api.get("/metrics")
        assert metrics.status == 200
        text = await metrics.text()
        assert pool_sample(text, "consul_agents_pool_settings_invalid", bad) == 1
        assert pool_sample(text, "consul_agents_pool_desired_agents", bad) is None
        assert pool_sample(text, "consul_agents_pool_settings_invalid", good) == 0
        assert pool_sample(text, "consul_agents_pool_desired_agents", good) == 2
        listing = {(p["agent_type"], p["datacenter"]): p for p in await (await api.get("/v1/pools")).json()}
        assert listing[(good, "dc1")]["settings"]["min_agents"] == 2
    finally:
        for agent_type in (bad, good):
            kv_raw(consul_addr, pool_key(agent_type), None)


async def test_rest_pool_routes(api: Client, unique: str) -> None:
    """PUT /v1/pools/{type} stores validated settings (422 naming the field otherwise), GET returns the
    pool with them, DELETE removes them; an invalid type or an unknown datacenter is a 422, an unknown
    query parameter a 400."""
    answer = await api.put(f"/v1/pools/{unique}", json={"min_agents": 1, "max_agents": 3})
    assert answer.status == 200, await answer.text()
    pool = await (await api.get(f"/v1/pools/{unique}")).json()
    assert pool["settings"]["max_agents"] == 3 and pool["desired_agents"] == 1
    bad = await api.put(f"/v1/pools/{unique}", json={"min_agents": 4, "max_agents": 3})
    assert bad.status == 422 and "min_agents" in (await bad.json())["message"]
    assert (await api.put(f"/v1/pools/{unique}", json={"target_load": "x"})).status == 422
    assert (await api.get("/v1/pools/Not_A_Type")).status == 422
    assert (await api.get(f"/v1/pools/{unique}?regio=dc1")).status == 400
    for method in (api.get, api.delete):
        unknown = await method(f"/v1/pools/{unique}?region=nowhere")
        assert unknown.status == 422 and (await unknown.json())["field"] == "region"
    unknown = await api.put(f"/v1/pools/{unique}?region=nowhere", json={})
    assert unknown.status == 422 and (await unknown.json())["field"] == "region"
    assert (await api.delete(f"/v1/pools/{unique}")).status == 204
    pool = await (await api.get(f"/v1/pools/{unique}")).json()
    assert pool["settings"] is None and pool["desired_agents"] == 0


def test_cli_pool_set_show_pools_and_clear(
    consul_addr: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pool set` changes only the fields given (and exits 2 naming a bad one), `pool show` and `pools`
    print the pool with its signal, `pool clear` removes the settings (the CLI run in-process)."""

    def cli(*args: str) -> tuple[int, str, str]:
        code = main([*args, "-http-addr", consul_addr])
        out, err = capsys.readouterr()
        return code, out, err

    def cli_json(*args: str) -> Any:
        code, out, err = cli(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    stored = cli_json("pool", "set", unique, "--min", "2", "--max", "6")
    assert (stored["min_agents"], stored["max_agents"], stored["target_load"]) == (2, 6, 0.7)
    stored = cli_json("pool", "set", unique, "--cost", "0.5")
    assert (stored["min_agents"], stored["cost_per_agent_hour"]) == (2, 0.5)
    code, _, err = cli("pool", "set", unique, "--min", "9")
    assert code == 2 and "max_agents 6 is below min_agents 9" in err
    [shown] = cli_json("pool", "show", unique)
    assert (shown["desired_agents"], shown["settings"]["max_agents"]) == (2, 6)
    assert any(p["agent_type"] == unique for p in cli_json("pools"))
    code, out, _ = cli("pools")
    assert code == 0 and unique in out and "DESIRED" in out
    assert cli_json("pool", "clear", unique) == {"agent_type": unique, "cleared": True}
    [shown] = cli_json("pool", "show", unique)
    assert shown["settings"] is None


async def test_an_unmet_selection_span_says_unmet_and_why(
    registry: AgentRegistry, unique: str, spans: InMemorySpanExporter
) -> None:
    """The select span of a selection that found nobody has outcome "unmet" and the reason, is not an
    error, and the follow-up question that found the reason opens no span of its own."""
    assert await registry.select_agent(SelectionCriteria(agent_type=unique)) is None
    (select,) = [s for s in spans.get_finished_spans() if s.name == "consul_agents.select"]
    attributes = dict(select.attributes or {})
    assert (attributes["outcome"], attributes["selection.unmet"]) == ("unmet", "none_registered")
    assert select.status.status_code is not trace.StatusCode.ERROR
    assert not [s for s in spans.get_finished_spans() if s.name == "consul_agents.discover"]


async def test_a_selection_naming_no_type_is_counted_with_an_empty_type(
    registry: AgentRegistry, unique: str
) -> None:
    """A selection by capability alone that finds nobody is counted with agent_type "" (no type asked)."""
    before = unmet("", "none_registered")
    assert await registry.select_agent(SelectionCriteria(capabilities=[f"{unique}-cap"])) is None
    assert unmet("", "none_registered") == before + 1


async def test_keys_under_the_pool_prefix_that_name_no_pool_are_ignored(
    api: Client, consul_addr: str, unique: str
) -> None:
    """A key that names no valid agent type, or a nested key, under consul-agents/pools/ is left out of the
    pools (and logged), and /metrics answers 200."""
    keys = [f"consul-agents/pools/{unique}_Bad", f"consul-agents/pools/{unique}/nested"]
    for key in keys:
        kv_raw(consul_addr, key, b'{"min_agents": 1}')
    try:
        assert (await api.get("/metrics")).status == 200
        listing = await (await api.get("/v1/pools")).json()
        assert not [p for p in listing if p["agent_type"].startswith(unique)]
    finally:
        for key in keys:
            kv_raw(consul_addr, key, None)


async def test_the_documented_python_example_runs(registry: AgentRegistry) -> None:
    """docs/autoscaling.md's Python example runs as written against real Consul."""
    text = (Path(__file__).parents[2] / "docs" / "autoscaling.md").read_text()
    [block] = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/autoscaling.md", "exec"), namespace)
    try:
        await namespace["configure"](registry)
        assert (await registry.pool("planner")).settings == PoolSettings(
            min_agents=1, max_agents=20, target_load=0.6
        )
    finally:
        await registry.set_pool_settings("planner", None)


async def test_deregistering_an_unknown_agent_counts_not_found(registry: AgentRegistry, unique: str) -> None:
    """The sibling of an unmet select: a deregistration that found no agent (False) counts outcome
    not_found, not ok, and a real one still counts ok."""

    def count(outcome: str) -> float:
        labels = {"operation": "deregister", "outcome": outcome}
        return REGISTRY.get_sample_value("consul_agents_operations_total", labels) or 0.0

    ok, missing = count("ok"), count("not_found")
    assert await registry.deregister_agent(f"{unique}-nobody") is False
    assert (count("ok"), count("not_found")) == (ok, missing + 1)
    await registry.register_agent(registration(unique, agent_id=f"{unique}-1"))
    assert await registry.deregister_agent(f"{unique}-1") is True
    assert (count("ok"), count("not_found")) == (ok + 1, missing + 1)
