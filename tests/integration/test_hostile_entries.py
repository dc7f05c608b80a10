"""What comes back from Consul is untrusted input: entries and KV values this library could not have written,
put into a real Consul through its HTTP API, never break an answer and are never selected as agents.

Every test here uses a Consul agent of its own module: some hostile entries (ids with dot segments) can
never be deregistered over HTTP, and must not reach the other modules' agents.
"""

from __future__ import annotations

import asyncio
import logging
import string
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import test_utils
from conftest import skip_if_external
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from support import GOOD_META, consul_put, eventually, raw_agent, registration

from consul_agents import AgentNotFoundError, AgentRegistry, AgentStatus, DiscoveryRequest, SelectionCriteria
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer


@pytest.fixture(scope="module")
def addr() -> Iterator[str]:
    """A Consul agent for this module only."""
    skip_if_external()
    with ConsulDevServer() as server:
        yield server.http_addr


@pytest.fixture
async def both(addr: str) -> AsyncIterator[tuple[AgentRegistry, AgentRegistry]]:
    """A cached and a direct registry on the module's Consul."""
    async with AgentRegistry(addr, cache=True) as cached, AgentRegistry(addr, cache=False) as direct:
        yield cached, direct


def catalog_only(addr: str, agent_type: str, agent_id: str, node: str) -> None:
    """A service written straight into the catalog: no check at all, so Consul counts it passing forever
    and never reaps it."""
    consul_put(
        addr,
        "/v1/catalog/register",
        {
            "Node": node,
            "Address": "127.0.0.1",
            "SkipNodeUpdate": True,
            "Service": {
                "ID": agent_id,
                "Service": f"agent-{agent_type}",
                "Tags": ["plan"],
                "Port": 9001,
                "Meta": GOOD_META,
            },
        },
    )


def put_bytes(addr: str, path: str, data: bytes) -> bytes:
    """A plain HTTP PUT of ``data`` exactly as given (no JSON encoding); Consul's answer."""
    request = urllib.request.Request(f"{addr}{path}", data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: bytes = response.read()
        return answer


def kv_put_bytes(addr: str, key: str, value: bytes) -> None:
    assert put_bytes(addr, f"/v1/kv/{key}", value).strip() == b"true"


def skipped_count(reason: str) -> float:
    return REGISTRY.get_sample_value("consul_agents_entries_skipped_total", {"reason": reason}) or 0.0


async def all_answers(
    cached: AgentRegistry, direct: AgentRegistry, request: DiscoveryRequest
) -> tuple[list[str], list[str]]:
    """The agent ids of the cached and the direct answer to ``request``."""
    return (
        [a.agent_id for a in await cached.discover_agents(request)],
        [a.agent_id for a in await direct.discover_agents(request)],
    )


async def test_an_id_with_dot_segments_breaks_no_reader(
    addr: str, both: tuple[AgentRegistry, AgentRegistry], unique: str
) -> None:
    """An entry whose id holds '/' and dot segments (with its metadata said to be in KV) is skipped as
    bad_id: cross-type discovery, select and GET /v1/agents keep answering, cached and direct."""
    cached, direct = both
    cap = f"{unique}-cap"
    good = await direct.register_agent(
        registration(f"{unique}c", agent_id=f"{unique}-ok", capabilities=[cap])
    )
    await direct.heartbeat(good, load=0.5)
    meta: dict[str, str | None] = {"agent-metadata": "kv"}
    raw_agent(addr, f"{unique}e", f"{unique}/../../{unique}c/x", tags=[cap], meta=meta)
    raw_agent(addr, f"{unique}e", f"{unique}/x", tags=[cap], meta=meta)
    before = skipped_count("bad_id")
    request = DiscoveryRequest(capabilities=[cap])
    assert await all_answers(cached, direct, request) == ([good], [good])
    for registry in both:
        chosen = await registry.select_agent(SelectionCriteria(capabilities=[cap]))
        assert chosen is not None and chosen.agent_id == good
    assert skipped_count("bad_id") == before + 2
    async with test_utils.TestClient(test_utils.TestServer(create_app(addr))) as client:
        response = await client.get("/v1/agents", params={"capability": cap})
        assert response.status == 200, await response.text()
        assert [a["agent_id"] for a in await response.json()] == [good]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[" * 100_000, "too large"),
        (b"[" * 60_000, "too deep, within the size bound"),
        (b'{"a":' * 65 + b"1" + b"}" * 65, "one level deeper than the bound"),
        (b'\xff\xfe{"not": "utf-8"}', "not UTF-8"),
        (b'{"ok": "\xff"}', "not UTF-8 inside a JSON string"),
        (b"[1, 2]", "an array, not an object"),
        (b'{"x": NaN}', "NaN"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_hostile_kv_metadata_spoils_only_its_own_agent(
    addr: str, both: tuple[AgentRegistry, AgentRegistry], unique: str, value: bytes, reason: str
) -> None:
    """KV metadata this library could not have written (too large, too deep, not UTF-8, not an object)
    skips only its own agent as bad_metadata; the other agents of the type and of other types are
    answered, cached and direct, and the REST API answers 200."""
    cached, direct = both
    cap = f"{unique}-cap"
    ok_same = await direct.register_agent(registration(unique, agent_id=f"{unique}-a", capabilities=[cap]))
    ok_other = await direct.register_agent(
        registration(f"{unique}o", agent_id=f"{unique}-b", capabilities=[cap])
    )
    raw_agent(addr, unique, f"{unique}-kv", tags=[cap], meta={"agent-metadata": "kv"})
    kv_put_bytes(addr, f"consul-agents/metadata/{unique}/{unique}-kv", value)
    before = skipped_count("bad_metadata")
    for request in (DiscoveryRequest(capabilities=[cap]), DiscoveryRequest(agent_type=unique)):
        cached_ids, direct_ids = await all_answers(cached, direct, request)
        assert cached_ids == direct_ids
        assert f"{unique}-kv" not in direct_ids and ok_same in direct_ids
    assert await all_answers(cached, direct, DiscoveryRequest(capabilities=[cap])) == (
        [ok_same, ok_other],
        [ok_same, ok_other],
    )
    assert skipped_count("bad_metadata") == before + 1
    async with test_utils.TestClient(test_utils.TestServer(create_app(addr))) as client:
        response = await client.get("/v1/agents", params={"capability": cap})
        assert response.status == 200, await response.text()


HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("no_check", {"check": False}),
    ("bad_load", {"meta": {"agent-load": "abc"}}),
    ("bad_load", {"meta": {"agent-load": "NaN"}}),
    ("bad_load", {"meta": {"agent-load": "-1"}}),
    ("bad_load", {"meta": {"agent-load": None}}),
    ("bad_endpoint", {"meta": {"agent-endpoint": "not a url"}}),
    ("bad_endpoint", {"meta": {"agent-endpoint": "http://host-without-port"}}),
    ("bad_endpoint", {"meta": {"agent-endpoint": None}}),
    ("bad_heartbeat", {"meta": {"agent-heartbeat": "yesterday"}}),
    ("bad_heartbeat", {"meta": {"agent-heartbeat": "2026-01-01T00:00:00"}}),
    ("bad_capabilities", {"tags": ["plan", "Not A Label"]}),
    ("bad_tags", {"meta": {"agent-evil": "x"}}),
    ("bad_metadata", {"meta": {"agent-metadata": "[1]"}}),
]


@pytest.mark.parametrize(("reason", "fields"), HOSTILE, ids=[f"{r}-{i}" for i, (r, _) in enumerate(HOSTILE)])
async def test_an_entry_this_library_would_never_write_is_never_selected(
    addr: str,
    both: tuple[AgentRegistry, AgentRegistry],
    unique: str,
    reason: str,
    fields: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An entry without this library's check, or with Meta it would never write (load not a number,
    endpoint not a URL, heartbeat not a time...), looks more attractive than the real agent (load 0): it
    is skipped, counted once under its reason and logged once, and never selected or discovered."""
    cached, direct = both
    real = await direct.register_agent(registration(unique, agent_id=f"{unique}-real"))
    await direct.heartbeat(real, load=0.5)
    hostile = f"{unique}-hostile"
    tags = fields.get("tags")
    raw_agent(addr, unique, hostile, tags=tags, meta=fields.get("meta"), check=fields.get("check", True))
    before = skipped_count(reason)
    criteria = SelectionCriteria(agent_type=unique, strategy="least_loaded")
    with caplog.at_level(logging.WARNING, logger="consul_agents"):
        for _ in range(3):
            for registry in both:
                chosen = await registry.select_agent(criteria)
                assert chosen is not None and chosen.agent_id == real
            assert await all_answers(cached, direct, DiscoveryRequest(agent_type=unique)) == ([real], [real])
    assert skipped_count(reason) == before + 1
    logged = [r for r in caplog.records if hostile in r.getMessage()]
    assert len(logged) == 1 and f"({reason})" in logged[0].getMessage()


async def test_a_catalog_only_entry_is_not_an_agent(
    addr: str, both: tuple[AgentRegistry, AgentRegistry], unique: str
) -> None:
    """A service registered straight into the catalog (SkipNodeUpdate, no checks: "passing" forever, never
    reaped) is skipped as no_check, cached and direct, and never selected over the real agent."""
    cached, direct = both
    real = await direct.register_agent(registration(unique, agent_id=f"{unique}-real"))
    await direct.heartbeat(real, load=0.9)
    catalog_only(addr, unique, f"{unique}-ghost", node=f"node-{unique}")
    before = skipped_count("no_check")
    assert await all_answers(cached, direct, DiscoveryRequest(agent_type=unique)) == ([real], [real])
    for registry in both:
        chosen = await registry.select_agent(SelectionCriteria(agent_type=unique, strategy="least_loaded"))
        assert chosen is not None and chosen.agent_id == real
    assert skipped_count("no_check") == before + 1


async def test_checks_not_registered_by_this_library_can_only_lower_the_status(
    addr: str, both: tuple[AgentRegistry, AgentRegistry], unique: str
) -> None:
    """The status counts every check of the entry, as Consul DNS does: an extra check added through raw
    Consul that fails makes the agent critical, and an extra passing check never revives an agent whose
    own check is critical; cached and direct agree."""
    cached, direct = both
    failing = await direct.register_agent(registration(unique, agent_id=f"{unique}-a"))
    dead = await direct.register_agent(registration(unique, agent_id=f"{unique}-b"))
    await direct.heartbeat(dead, status=AgentStatus.CRITICAL)
    for service_id, status in ((failing, "critical"), (dead, "passing")):
        consul_put(
            addr,
            "/v1/agent/check/register",
            {
                "ID": f"extra-{service_id}",
                "Name": "extra",
                "ServiceID": service_id,
                "TTL": "3600s",
                "Status": status,
            },
        )
    request = DiscoveryRequest(agent_type=unique, status=AgentStatus.CRITICAL)

    async def both_critical() -> bool:
        return await all_answers(cached, direct, request) == ([failing, dead], [failing, dead])

    await eventually(both_critical, 5, "both agents critical in both answers")
    assert await all_answers(cached, direct, DiscoveryRequest(agent_type=unique)) == ([], [])
    for registry in both:
        assert await registry.select_agent(SelectionCriteria(agent_type=unique)) is None


# --- property: any mix of agents and hostile entries -------------------------------------------------------

_LETTERS = string.ascii_letters + " "


@dataclass(frozen=True)
class Planted:
    """One entry to put into Consul: an agent (``good``) or a hostile entry of some kind."""

    kind: str
    value: Any = None
    status: AgentStatus = AgentStatus.PASSING
    load: float = 0.0

    @property
    def good(self) -> bool:
        return self.kind == "agent"


planted = st.one_of(
    st.builds(
        Planted,
        st.just("agent"),
        status=st.sampled_from([AgentStatus.PASSING, AgentStatus.WARNING, AgentStatus.CRITICAL]),
        load=st.sampled_from([0.0, 0.3, 0.9]),
    ),
    st.builds(Planted, st.sampled_from(["no_check", "catalog_only", "slash_id", "dot_id"])),
    st.builds(Planted, st.just("load"), st.text(_LETTERS, min_size=1, max_size=12)),
    st.builds(Planted, st.just("endpoint"), st.text(_LETTERS, max_size=30)),
    st.builds(Planted, st.just("heartbeat"), st.text(_LETTERS, min_size=1, max_size=20)),
    st.builds(Planted, st.just("capability"), st.text(string.ascii_uppercase, min_size=1, max_size=10)),
    st.builds(Planted, st.just("meta_metadata"), st.sampled_from(["[1]", "{", "null", '"x"', "[" * 100])),
    st.builds(
        Planted,
        st.just("kv_metadata"),
        st.sampled_from([b"[]", b'"s"', b"[" * 70, b"[" * 100_000])
        | st.binary(max_size=30).map(b"\xff".__add__),
    ),
)


async def _plant(addr: str, registry: AgentRegistry, agent_type: str, position: int, entry: Planted) -> str:
    """Put ``entry`` into Consul; returns its id."""
    agent_id = f"{agent_type}-{position}"
    if entry.good:
        reg = registration(agent_type, agent_id=agent_id, capabilities=["plan"], load=entry.load, ttl=3600)
        await registry.register_agent(reg)
        if entry.status is not AgentStatus.PASSING:
            await registry.heartbeat(agent_id, status=entry.status)
        return agent_id
    meta: dict[str, str | None] = {}
    if entry.kind == "catalog_only":
        catalog_only(addr, agent_type, agent_id, node=f"node-{agent_type}")
        return agent_id
    if entry.kind in ("slash_id", "dot_id"):
        agent_id = (
            f"{agent_type}/{position}" if entry.kind == "slash_id" else f"x/../../{agent_type}/{position}"
        )
        meta["agent-metadata"] = "kv"
    tags = [entry.value] if entry.kind == "capability" else None
    if entry.kind in ("load", "endpoint", "heartbeat"):
        meta[f"agent-{entry.kind}"] = entry.value
    if entry.kind == "meta_metadata":
        meta["agent-metadata"] = entry.value
    if entry.kind == "kv_metadata":
        meta["agent-metadata"] = "kv"
        kv_put_bytes(addr, f"consul-agents/metadata/{agent_type}/{agent_id}", entry.value)
    raw_agent(addr, agent_type, agent_id, tags=tags, meta=meta, check=entry.kind != "no_check")
    return agent_id


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=st.lists(planted, min_size=1, max_size=6))
def test_any_mix_of_hostile_entries_answers_exactly_the_agents(addr: str, fleet: list[Planted]) -> None:
    """For any mix of agents and hostile entries of one type, cached and direct discovery answer exactly
    the agents, with the status each was given, select picks only among them, and nothing raises."""
    agent_type = "h" + uuid.uuid4().hex[:8]

    async def check() -> None:
        async with AgentRegistry(addr, cache=True) as cached, AgentRegistry(addr, cache=False) as direct:
            ids = [await _plant(addr, direct, agent_type, i, entry) for i, entry in enumerate(fleet)]
            expected = {
                status: sorted(i for i, e in zip(ids, fleet, strict=True) if e.good and e.status is status)
                for status in (AgentStatus.PASSING, AgentStatus.WARNING, AgentStatus.CRITICAL)
            }
            live = sorted(expected[AgentStatus.PASSING] + expected[AgentStatus.WARNING])
            critical, warning = AgentStatus.CRITICAL, AgentStatus.WARNING
            requests = [(DiscoveryRequest(agent_type=agent_type), live)] + [
                (DiscoveryRequest(agent_type=agent_type, status=s), expected[s]) for s in (critical, warning)
            ]
            for request, wanted in requests:

                async def agreed(r: DiscoveryRequest = request, w: list[str] = wanted) -> bool:
                    return await all_answers(cached, direct, r) == (w, w)

                await eventually(agreed, 5, f"{request} answers exactly {wanted}")
            for registry in (cached, direct):
                chosen = await registry.select_agent(SelectionCriteria(agent_type=agent_type))
                assert (chosen.agent_id in live) if chosen is not None else not live

    asyncio.run(check())


async def test_get_agent_of_a_skipped_entry_says_why_it_is_not_found(addr: str, unique: str) -> None:
    """get_agent of an id whose entry is skipped (here: load not a number) raises AgentNotFoundError saying
    the entry is not one this library could have written; the REST API answers 404."""
    raw_agent(addr, unique, f"{unique}-x", meta={"agent-load": "junk"})
    async with AgentRegistry(addr, cache=False) as registry:
        with pytest.raises(AgentNotFoundError, match="not one this library could have written"):
            await registry.get_agent(f"{unique}-x")
    async with test_utils.TestClient(test_utils.TestServer(create_app(addr))) as client:
        response = await client.get(f"/v1/agents/{unique}-x")
        assert response.status == 404, await response.text()


async def test_an_entry_nested_deeper_than_python_parses_spoils_only_itself(
    addr: str, both: tuple[AgentRegistry, AgentRegistry], unique: str
) -> None:
    """A Connect proxy registered under an agent type with a Config nested 3,000 deep (Consul accepts it;
    Python's JSON parser stops near 1,000) is skipped as malformed; the type's agents are still answered,
    cached and direct, also by a search across types."""
    cached, direct = both
    cap = f"{unique}-cap"
    good = await direct.register_agent(registration(unique, agent_id=f"{unique}-ok", capabilities=[cap]))
    config = "1"
    for _ in range(3000):
        config = '{"a":' + config + "}"
    body = (
        f'{{"ID":"{unique}-deep","Name":"agent-{unique}","Kind":"connect-proxy","Port":1,"Tags":["{cap}"],'
        f'"Proxy":{{"DestinationServiceName":"x","Config":{config}}}}}'
    )
    put_bytes(addr, "/v1/agent/service/register", body.encode())
    before = skipped_count("malformed")
    for request_ in (DiscoveryRequest(agent_type=unique), DiscoveryRequest(capabilities=[cap])):
        assert await all_answers(cached, direct, request_) == ([good], [good])
    assert skipped_count("malformed") == before + 1


async def test_a_service_name_that_is_not_an_agent_type_breaks_no_reader(
    addr: str, both: tuple[AgentRegistry, AgentRegistry], unique: str
) -> None:
    """Services named agent-<something that is not an agent type> (dot segments, '/', capitals, spaces),
    which an operator token or a Consul without ACLs can register, are not agent services: a search across
    types answers the real agents, cached and direct, and agent_types() does not list them."""
    cap = f"{unique}-cap"
    cached, direct = both
    good = await direct.register_agent(registration(unique, agent_id=f"{unique}-ok", capabilities=[cap]))
    names = [f"agent-{unique}/../x", f"agent-{unique}/x", f"agent-{unique}_X", f"agent-{unique} x"]
    for i, name in enumerate(names):
        agent_id = f"{unique}-n{i}"
        consul_put(
            addr,
            "/v1/agent/service/register",
            {
                "ID": agent_id,
                "Name": name,
                "Tags": [cap],
                "Port": 1,
                "Meta": GOOD_META,
                "Check": {"CheckID": f"service:{agent_id}", "TTL": "3600s", "Status": "passing"},
            },
        )
    assert await all_answers(cached, direct, DiscoveryRequest(capabilities=[cap])) == ([good], [good])
    types = await direct.agent_types()
    assert unique in types and not [t for t in types if t.startswith(unique) and t != unique]


async def test_the_cache_reuses_entries_beside_a_skipped_one(
    addr: str, both: tuple[AgentRegistry, AgentRegistry], unique: str
) -> None:
    """With a skipped entry among a type's agents, a change to one agent converts only that one: the others
    keep their AgentInfo (the same object) and the skipped entry stays remembered as not an agent."""
    cached, direct = both
    ids = [await direct.register_agent(registration(unique, agent_id=f"{unique}-{i}")) for i in range(3)]
    raw_agent(addr, unique, f"{unique}-junk", meta={"agent-load": "junk"})
    request = DiscoveryRequest(agent_type=unique)

    async def converged() -> bool:
        return await all_answers(cached, direct, request) == (ids, ids)

    await eventually(converged, 5, "cache caught up with the fleet")
    before = {a.agent_id: a for a in await cached.discover_agents(request)}
    await direct.heartbeat(ids[1], load=0.7)

    async def reported() -> bool:
        return [a.current_load for a in await cached.discover_agents(request)] == [0.0, 0.7, 0.0]

    await eventually(reported, 5, "cache caught up with the load report")
    after = {a.agent_id: a for a in await cached.discover_agents(request)}
    assert after[ids[0]] is before[ids[0]] and after[ids[2]] is before[ids[2]]
    assert after[ids[1]] is not before[ids[1]]
    watch = cached.discovery.cache._services[("", f"agent-{unique}")]
    assert sorted(info is None for info in watch._converted.values()) == [False, False, False, True]
