"""The REST API's batch and replace routes against a real Consul."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import test_utils
from support import consul_get, eventually

Client = test_utils.TestClient[Any, Any]


def _item(agent_type: str, i: int, **fields: Any) -> dict[str, Any]:
    return {
        "agent_type": agent_type,
        "agent_id": f"{agent_type}-{i}",
        "capabilities": ["plan"],
        "endpoint": f"http://127.0.0.1:{32000 + i}",
        **fields,
    }


def _ids(consul_addr: str, agent_type: str) -> set[str]:
    entries, _ = consul_get(consul_addr, f"/v1/health/service/agent-{agent_type}")
    return {e["Service"]["ID"] for e in entries}


async def test_batch_register_and_deregister(api: Client, consul_addr: str, unique: str) -> None:
    """POST /v1/agents/batch registers every item and reports each; the deregister route removes them and
    reports an unknown id as not removed."""
    answer = await api.post("/v1/agents/batch", json={"agents": [_item(unique, i) for i in range(5)]})
    assert answer.status == 200
    body = await answer.json()
    assert (body["ok"], body["succeeded"], body["failed"]) == (True, 5, 0)
    assert [r["agent_id"] for r in body["results"]] == [f"{unique}-{i}" for i in range(5)]
    assert _ids(consul_addr, unique) == {f"{unique}-{i}" for i in range(5)}
    ids = [f"{unique}-{i}" for i in range(5)] + [f"{unique}-none"]
    answer = await api.post("/v1/agents/batch/deregister", json={"agent_ids": ids})
    body = await answer.json()
    assert answer.status == 200 and body["ok"]
    assert [r["removed"] for r in body["results"]] == [True] * 5 + [False]
    assert _ids(consul_addr, unique) == set()


async def test_an_invalid_batch_is_422_naming_each_item_and_writes_nothing(
    api: Client, consul_addr: str, unique: str
) -> None:
    """Invalid items are listed by index and field in a 422; the valid ones are not registered."""
    items = [_item(unique, 0), _item(unique, 1, weight=-3), _item(unique, 0), 7]
    answer = await api.post("/v1/agents/batch", json={"agents": items})
    assert answer.status == 422
    body = await answer.json()
    assert body["error"] == "invalid" and "nothing written" in body["message"]
    assert [(i["index"], i.get("field")) for i in body["invalid"]] == [
        (1, "weight"),
        (2, "agent_id"),
        (3, None),
    ]
    assert _ids(consul_addr, unique) == set()
    too_many = await api.post("/v1/agents/batch", json={"agents": [_item(unique, 0)], "concurrency": 1000})
    assert too_many.status == 422 and (await too_many.json())["field"] == "concurrency"
    bad_ids = await api.post("/v1/agents/batch/deregister", json={"agent_ids": ["ok-1", "../x", None]})
    assert [i["index"] for i in (await bad_ids.json())["invalid"]] == [1, 2]


async def test_replace_route(api: Client, consul_addr: str, unique: str) -> None:
    """POST /v1/agents/{id}/replace waits until the new agent passes (its process heartbeats it through
    the API), then deregisters the old one; an unknown old agent is 404 with nothing written."""
    assert (await api.post("/v1/agents", json=_item(unique, 0))).status == 201
    new = _item(unique, 1)
    replacing = asyncio.create_task(
        api.post(f"/v1/agents/{unique}-0/replace", json={"new": new, "timeout": 20, "drain_timeout": 1})
    )

    async def beat() -> bool:
        return (await api.put(f"/v1/agents/{unique}-1/heartbeat", json={})).status == 204

    await eventually(beat, what="new agent registered")
    answer = await asyncio.wait_for(replacing, 30)
    body = await answer.json()
    assert answer.status == 200, body
    assert (body["old_id"], body["new_id"], body["leases_left"]) == (f"{unique}-0", f"{unique}-1", 0)
    assert _ids(consul_addr, unique) == {f"{unique}-1"}
    missing = await api.post(f"/v1/agents/{unique}-0/replace", json={"new_id": f"{unique}-1"})
    assert missing.status == 404
    both = await api.post(f"/v1/agents/{unique}-1/replace", json={"new": new, "new_id": "x"})
    assert both.status == 422
    await api.delete(f"/v1/agents/{unique}-1")


async def test_a_failed_replacement_is_409_with_step_and_state(
    api: Client, consul_addr: str, unique: str
) -> None:
    """A new agent that never passes: 409 naming step wait_passing, cause TimeoutError and the state (old
    agent untouched, new one rolled back)."""
    assert (await api.post("/v1/agents", json=_item(unique, 0))).status == 201
    answer = await api.post(f"/v1/agents/{unique}-0/replace", json={"new": _item(unique, 1), "timeout": 0.5})
    body = await answer.json()
    assert answer.status == 409
    assert (body["step"], body["cause"], body["new_id"]) == ("wait_passing", "TimeoutError", f"{unique}-1")
    assert "rolled back" in body["state"]
    assert _ids(consul_addr, unique) == {f"{unique}-0"}
    await api.delete(f"/v1/agents/{unique}-0")


async def test_the_openapi_document_describes_the_new_routes(api: Client) -> None:
    """The served OpenAPI document has the batch and replace operations with their schemas."""
    document = await (await api.get("/openapi.json")).json()
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert {"registerMany", "deregisterMany", "replaceAgent"} <= operations
    assert {"BatchRegisterRequest", "ReplaceRequest", "BatchResponse"} <= set(
        document["components"]["schemas"]
    )
