"""One owner for connections and watches, and a cache that tells the truth, against real Consul.

The registry owns its connection pool and every watch of its with_token() views; a view released while
requests still use it keeps answering them; a caller cancelled while a watch starts cancels nobody else;
the cache reads back this client's own writes, watches KV metadata, and hands out answers nobody can
change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import test_utils
from conftest import MakeConsul
from relay import AnswerDroppingRelay
from support import consul_put, eventually, registration

from consul_agents import AgentRegistry, AgentStatus, DiscoveryRequest, SelectionCriteria
from consul_agents import _wire as wire
from consul_agents.api import create_app
from consul_agents.api._keys import VIEWS

BIG = {"blob": "x" * 600}  # too large for Meta: kept in KV


def consul_delete(addr: str, path: str) -> None:
    """A plain HTTP DELETE to Consul."""
    with urllib.request.urlopen(urllib.request.Request(addr + path, method="DELETE"), timeout=5):
        pass


def watch_tasks() -> list[asyncio.Task[Any]]:
    """The running background tasks of watches (their loops and their starts)."""
    return [
        t for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith(("watch:", "watch-start:"))
    ]


# -- ownership: views, the REST API's token LRU ---------------------------------------------------------


@pytest.mark.parametrize("datacenter", [None, "dc1"], ids=["local", "datacenter-set"])
async def test_rest_api_with_more_tokens_than_views_answers_every_request(
    consul_addr: str, unique: str, datacenter: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """120 concurrent requests, two for each of 60 distinct tokens (a view's cache starts with its second
    discovery), through an API keeping 2 views all answer 200 with the agents; afterwards no watch runs
    beyond the live views' and none outlives the app."""
    async with AgentRegistry(consul_addr) as writer:
        await writer.register_agent(registration(unique, agent_id=f"{unique}-1"))
        app = create_app(consul_addr, datacenter, max_token_views=2)
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:

            async def ask(n: int) -> tuple[int, Any]:
                headers = {"X-Consul-Token": f"token-{unique}-{n}"}
                async with client.get(f"/v1/agents?type={unique}", headers=headers) as response:
                    return response.status, await response.json()

            answers = await asyncio.gather(*(ask(n // 2) for n in range(120)))
            assert [status for status, _ in answers] == [200] * 120, [b for s, b in answers if s != 200][:2]
            assert all([a["agent_id"] for a in body] == [f"{unique}-1"] for _, body in answers)
            budget = app[VIEWS].base._watch_budget

            async def settled() -> bool:
                return budget.in_use() <= 2 and budget.running() <= 2

            await eventually(settled, timeout=10, what="released views' watches stop")
            fresh = app[VIEWS].for_token(f"token-{unique}-fresh")
            await fresh.discover(DiscoveryRequest(agent_type=unique))
            assert (await fresh.discover(DiscoveryRequest(agent_type=unique))).cached  # budget not exhausted
        assert watch_tasks() == []
        with caplog.at_level(logging.DEBUG, logger="consul_agents"):
            await asyncio.sleep(0)  # let any orphan loop run once more after the app closed
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_released_view_keeps_answering_the_request_that_holds_it(
    consul_addr: str, unique: str
) -> None:
    """A view released while its query waits for a watch to start (Consul's answers held back) answers
    that query from the cache, and a later call of the released view is answered by Consul directly; its
    watches then stop."""
    async with AnswerDroppingRelay(consul_addr) as relay, AgentRegistry(relay.address, timeout=20) as owner:
        await owner.register_agent(registration(unique, agent_id=f"{unique}-1"))
        view = owner.with_token(None)
        await view.discover(DiscoveryRequest(agent_type=f"{unique}-other"))  # a view's first is direct
        relay.mute = True
        pending = asyncio.create_task(view.discover(DiscoveryRequest(agent_type=unique)))
        await eventually(_started(view), timeout=5, what="the view's first watch is starting")
        view.release()
        relay.mute = False
        relay.reset()  # the held-back read fails and is retried on a new connection
        result = await asyncio.wait_for(pending, 30)
        assert [a.agent_id for a in result.agents] == [f"{unique}-1"] and result.cached
        later = await view.discover(DiscoveryRequest(agent_type=unique))
        assert [a.agent_id for a in later.agents] == [f"{unique}-1"] and not later.cached

        async def no_watch() -> bool:
            return view.discovery.cache.watch_count == 0 and owner._watch_budget.in_use() == 0

        await eventually(no_watch, timeout=5, what="the released view's watches stop")


def _started(view: AgentRegistry) -> Any:
    async def check() -> bool:
        return bool(view.discovery.cache._starting)

    return check


async def test_closing_the_owner_stops_every_view_watch(consul_addr: str, unique: str) -> None:
    """Views never closed by their users still stop every watch when the registry owning them closes."""
    async with AgentRegistry(consul_addr) as writer:
        await writer.register_agent(registration(unique))
    async with AgentRegistry(consul_addr) as owner:
        views = [owner.with_token(f"t{n}") for n in range(3)]
        for view in views:
            for _ in range(2):  # a view's cache starts with its second discovery
                await view.discover_agents(DiscoveryRequest(agent_type=unique))
        assert len(watch_tasks()) == 3
    assert watch_tasks() == []


# -- cancellation of a shared watch start -----------------------------------------------------------------


async def test_cancelling_one_caller_does_not_cancel_others_waiting_on_the_same_watch_start(
    consul_addr: str, unique: str
) -> None:
    """Two callers wait for the same watch to start while Consul's answers are held back; cancelling the
    first leaves the second to get the answer once Consul answers again."""
    async with (
        AnswerDroppingRelay(consul_addr) as relay,
        AgentRegistry(relay.address, timeout=20) as registry,
    ):
        await registry.register_agent(registration(unique, agent_id=f"{unique}-1"))
        request = DiscoveryRequest(agent_type=unique)
        await registry.discovery.local_datacenter()
        relay.mute = True
        first = asyncio.create_task(registry.discover_agents(request))
        second = asyncio.create_task(registry.discover_agents(request))
        await eventually(_started(registry), timeout=5, what="the watch start is under way")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert not second.done()
        relay.mute = False
        relay.reset()  # the held-back read fails and is retried on a new connection
        found = await asyncio.wait_for(second, 30)
        assert [a.agent_id for a in found] == [f"{unique}-1"]
        assert (await registry.discover(request)).cached


# -- concurrency of first watch starts -------------------------------------------------------------------


async def test_first_discovery_without_a_type_starts_its_watches_concurrently(
    consul_addr: str, unique: str
) -> None:
    """A first question naming no type, over five types, sends the five first reads together."""
    cap = f"{unique}c"
    async with AgentRegistry(consul_addr) as registry:
        for k in range(5):
            await registry.register_agent(registration(f"{unique}{k}", capabilities=[cap]))
        gateway = registry.gateway
        original = gateway.request
        in_flight = 0
        most = 0

        async def counting(operation: str, method: str, path: str, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            watched = operation.startswith("watch agents of service") and kwargs.get("index") is None
            in_flight += watched
            most = max(most, in_flight)
            try:
                return await original(operation, method, path, **kwargs)
            finally:
                in_flight -= watched

        gateway.request = counting  # type: ignore[method-assign]  # a spy: real Consul answers
        found = await registry.discover_agents(DiscoveryRequest(capabilities=[cap]))
        assert len(found) == 5
        assert most == 5


# -- read-your-writes ---------------------------------------------------------------------------------------


async def test_new_types_and_capabilities_are_read_back_without_a_type(consul_addr: str, unique: str) -> None:
    """After this client registers an agent of a new type, or gives an agent a new capability, its next
    cached discovery naming only the capability finds it, every time."""
    async with AgentRegistry(consul_addr) as registry:
        await registry.discover_agents(DiscoveryRequest(capabilities=["plan"]))  # the catalog is watched
        misses = []
        for n in range(20):
            cap = f"{unique}n{n}"
            agent_id = await registry.register_agent(registration(f"{unique}{n}", capabilities=[cap]))
            found = await registry.discover_agents(DiscoveryRequest(capabilities=[cap]))
            misses += [n] if [a.agent_id for a in found] != [agent_id] else []
        agent_id = f"{unique}0-again"
        await registry.register_agent(registration(f"{unique}0", agent_id=agent_id))
        for n in range(20):
            cap = f"{unique}m{n}"
            await registry.register_agent(registration(f"{unique}0", agent_id=agent_id, capabilities=[cap]))
            found = await registry.discover_agents(DiscoveryRequest(capabilities=[cap]))
            misses += [100 + n] if [a.agent_id for a in found] != [agent_id] else []
        assert misses == []


# -- KV metadata in the cache -----------------------------------------------------------------------------


async def test_cached_metadata_in_kv_follows_kv_writes(consul_addr: str, unique: str) -> None:
    """Metadata kept in KV changed by a plain `consul kv put` reaches the cached answer, which then agrees
    with a direct one, though the service itself did not change."""
    async with AgentRegistry(consul_addr) as registry:
        agent_id = await registry.register_agent(registration(unique, metadata=BIG))
        request = DiscoveryRequest(agent_type=unique)
        assert (await registry.discover_agents(request))[0].metadata == BIG
        changed = {"blob": "y" * 700, "n": [1, 2]}
        consul_put(consul_addr, f"/v1/kv/{wire.metadata_key(unique, agent_id)}", changed)

        async def agrees() -> bool:
            cached = await registry.discover_agents(request)
            direct = await registry.discover_agents(request, cached=False)
            return cached == direct and cached[0].metadata == changed

        await eventually(agrees, timeout=2, what="the cached metadata follows KV")


async def test_metadata_written_after_the_service_is_not_cached_as_empty(
    consul_addr: str, unique: str
) -> None:
    """An agent whose KV metadata does not exist yet at the first cached read (a rendered service file,
    then `consul kv put`) shows the metadata once it is written."""
    async with AgentRegistry(consul_addr) as registry:
        agent_id = await registry.register_agent(registration(unique, metadata=BIG))
        key = wire.metadata_key(unique, agent_id)
        consul_delete(consul_addr, f"/v1/kv/{key}")
        request = DiscoveryRequest(agent_type=unique)
        assert (await registry.discover_agents(request))[0].metadata == {}
        consul_put(consul_addr, f"/v1/kv/{key}", BIG)

        async def shown() -> bool:
            return (await registry.discover_agents(request))[0].metadata == BIG

        await eventually(shown, timeout=2, what="the KV metadata written late reaches the cache")


# -- answers nobody can change ------------------------------------------------------------------------------


async def test_one_callers_answer_cannot_change_anothers(consul_addr: str, unique: str) -> None:
    """The capabilities, tags and metadata (at any depth) of a cached answer refuse changes, so the next
    caller's answer is what Consul holds."""
    metadata = {"model": "m1", "limits": {"rpm": 10}, "langs": ["en"]}
    async with AgentRegistry(consul_addr) as registry:
        await registry.register_agent(registration(unique, tags={"tier": "gold"}, metadata=metadata))
        request = DiscoveryRequest(agent_type=unique)
        (info,) = await registry.discover_agents(request)
        attempts = [
            info.tags.clear,
            lambda: info.tags.update(tier="x"),
            info.capabilities.clear,
            lambda: info.capabilities.append("x"),
            lambda: info.metadata.pop("model"),
            lambda: info.metadata["limits"].update(rpm=0),
            lambda: info.metadata["langs"].append("fr"),
        ]
        for attempt in attempts:
            with contextlib.suppress(TypeError):
                attempt()
        (again,) = await registry.discover_agents(request)
        assert again.tags == {"tier": "gold"} and again.capabilities == ["plan"]
        assert again.metadata == metadata
        assert again.model_dump(mode="json")["metadata"] == metadata


# -- bounded state ------------------------------------------------------------------------------------------


async def test_selection_state_stays_bounded_under_distinct_requests(consul_addr: str, unique: str) -> None:
    """3,000 selections differing only in max_load keep one rotation per strategy, not one per request."""
    async with AgentRegistry(consul_addr) as registry:
        for n in range(5):
            await registry.register_agent(registration(unique, load=n / 10))
        for n in range(3000):
            for strategy in ("round_robin", "weighted_random"):
                criteria = SelectionCriteria(agent_type=unique, strategy=strategy, max_load=0.5 + n / 10_000)
                assert await registry.select_agent(criteria) is not None
        state = registry._selection
        assert len(state.cursors) == 1 and len(state.schedules) == 1


# -- /metrics and the census, per datacenter ---------------------------------------------------------------


@pytest.fixture
async def two_datacenters(make_consul: MakeConsul, unique: str) -> AsyncIterator[str]:
    """dc1 with a passing agent of type ``unique``, and dc2, WAN-joined and known to dc1, with a passing and
    a critical one; yields dc1's address."""
    dc1 = make_consul(datacenter="dc1")
    dc2 = make_consul(datacenter="dc2")
    dc1.join_wan(dc2)
    async with AgentRegistry(dc1.http_addr) as one, AgentRegistry(dc2.http_addr) as two:
        await one.register_agent(registration(unique, agent_id=f"{unique}-a"))
        await two.register_agent(registration(unique, agent_id=f"{unique}-b"))
        await two.register_agent(registration(unique, agent_id=f"{unique}-c"), status=AgentStatus.CRITICAL)

        async def both_known() -> bool:
            return len(await one.discovery.datacenters()) == 2

        await eventually(both_known, timeout=30, what="dc2 is known to dc1")
        yield dc1.http_addr


async def test_metrics_count_each_datacenter_from_its_own_answer(two_datacenters: str, unique: str) -> None:
    """The agents gauge counts dc1's and dc2's agents of every status, each from its own datacenter,
    and a scrape starts no watch in dc2."""
    app = create_app(two_datacenters)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        async with client.get("/metrics") as response:
            text = await response.text()
        rows = [line for line in text.splitlines() if line.startswith("consul_agents_agents{")]
        mine = sorted(line for line in rows if f'agent_type="{unique}"' in line)
        assert mine == [
            f'consul_agents_agents{{agent_type="{unique}",datacenter="dc1",status="passing"}} 1.0',
            f'consul_agents_agents{{agent_type="{unique}",datacenter="dc2",status="critical"}} 1.0',
            f'consul_agents_agents{{agent_type="{unique}",datacenter="dc2",status="passing"}} 1.0',
        ]
        view = app[VIEWS].for_token(None)
        assert [w.name for w in view.discovery.cache.watches() if w.name.startswith("dc2")] == []


async def test_census_lists_each_datacenter_from_its_own_answer(two_datacenters: str, unique: str) -> None:
    """GET /v1/census, what the web page shows, lists dc1's passing agent and dc2's passing and critical
    ones each under its own datacenter, and starts no watch in dc2."""
    app = create_app(two_datacenters)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        async with client.get("/v1/census") as response:
            assert response.status == 200
            body = await response.json()
        mine = sorted(
            (a["agent_id"], a["datacenter"], a["status"]) for a in body if a["agent_type"] == unique
        )
        assert mine == [
            (f"{unique}-a", "dc1", "passing"),
            (f"{unique}-b", "dc2", "passing"),
            (f"{unique}-c", "dc2", "critical"),
        ]
        view = app[VIEWS].for_token(None)
        assert [w.name for w in view.discovery.cache.watches() if w.name.startswith("dc2")] == []


async def test_the_web_page_reads_the_census(api: test_utils.TestClient[object, object]) -> None:
    """The page's script asks /v1/census once per refresh, not one failing-over discovery per status."""
    async with api.get("/static/app.js") as response:
        script = await response.text()
    assert 'fetch("/v1/census"' in script
    assert "/v1/agents?" not in script
