"""REST API request bodies against real Consul: hostile bodies on every route that reads one answer 400 or
413 with the JSON error body, never a 500, and nothing reaches Consul."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aiohttp import test_utils
from support import consul_get

from consul_agents.api._body import MAX_BODY_BYTES, MAX_BODY_DEPTH

Client = test_utils.TestClient[Any, Any]


def nested(depth: int) -> str:
    """A JSON array nested ``depth`` levels deep."""
    return "[" * depth + "]" * depth


def body_routes(agent_id: str) -> list[tuple[str, str, str]]:
    """(method, path, a body template with {deep} where a nested value goes) for every route with a body."""
    return [
        (
            "POST",
            "/v1/agents",
            '{"agent_type": "t", "capabilities": ["a"], "endpoint": "http://h:1", '
            '"agent_id": "' + agent_id + '", "metadata": {"x": {deep}}}',
        ),
        ("PUT", f"/v1/agents/{agent_id}/heartbeat", '{"load": {deep}}'),
        ("PUT", f"/v1/agents/{agent_id}/maintenance", '{"enable": {deep}}'),
        ("POST", "/v1/select", '{"agent_type": "t", "exclude": {deep}}'),
    ]


ROUTE_IDS = ["register", "heartbeat", "maintenance", "select"]


async def expect_error(
    client: Client, method: str, path: str, data: bytes | str | io.BytesIO, status: int
) -> dict[str, Any]:
    response = await client.request(method, path, data=data, headers={"Content-Type": "application/json"})
    text = await response.text()
    assert response.status == status, text[:500]
    body: dict[str, Any] = json.loads(text)
    assert body["error"] == "bad_request" and body["message"], body
    return body


@pytest.mark.parametrize("route", range(4), ids=ROUTE_IDS)
@pytest.mark.parametrize("depth", [5000, 100_000])
async def test_deeply_nested_bodies_answer_400(
    api: Client, consul_addr: str, unique: str, route: int, depth: int
) -> None:
    """A body nested thousands deep answers 400 naming the depth bound, on every route that reads a body."""
    method, path, template = body_routes(unique)[route]
    body = await expect_error(api, method, path, template.replace("{deep}", nested(depth)), 400)
    assert f"more than {MAX_BODY_DEPTH} levels" in body["message"]
    services, _ = consul_get(consul_addr, "/v1/agent/services")
    assert unique not in services


@pytest.mark.parametrize("route", range(4), ids=ROUTE_IDS)
async def test_bodies_just_over_the_depth_bound_answer_400(api: Client, unique: str, route: int) -> None:
    """One level over the bound is refused before parsing; whole-body nesting counts the body itself."""
    method, path, _ = body_routes(unique)[route]
    body = await expect_error(api, method, path, nested(MAX_BODY_DEPTH + 1), 400)
    assert "levels" in body["message"]


@pytest.mark.parametrize("route", range(4), ids=ROUTE_IDS)
async def test_oversized_bodies_answer_413(api: Client, unique: str, route: int) -> None:
    """A body over the size bound answers 413 with the JSON error body, whatever its content."""
    method, path, _ = body_routes(unique)[route]
    data = ('{"padding": "' + "x" * MAX_BODY_BYTES + '"}').encode()
    await expect_error(api, method, path, io.BytesIO(data), 413)


@pytest.mark.parametrize("route", range(4), ids=ROUTE_IDS)
@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe{}", b'{"a": 1', b"[1, 2]", b'"text"', b"1e999999", b"9" * 5000, b"{" * 20],
    ids=["not-utf8", "truncated", "array", "string", "huge-exponent", "huge-int", "unclosed"],
)
async def test_malformed_bodies_answer_400(api: Client, unique: str, route: int, data: bytes) -> None:
    """Bodies that are not a JSON object (bad bytes, truncated, huge numbers, other types) answer 400 or 422,
    never 500."""
    method, path, _ = body_routes(unique)[route]
    response = await api.request(method, path, data=data)
    assert response.status in (400, 422), await response.text()
    assert (await response.json())["error"] in ("bad_request", "invalid")


async def test_brackets_inside_strings_do_not_count(api: Client, consul_addr: str, unique: str) -> None:
    """Brackets and escaped quotes inside string values are text, not nesting: such a registration works."""
    tricky = '\\"' + "[{" * 200
    data = json.dumps(
        {
            "agent_type": unique,
            "capabilities": ["a"],
            "endpoint": "http://127.0.0.1:9",
            "agent_id": f"{unique}-1",
            "metadata": {"note": tricky},
        }
    )
    response = await api.post("/v1/agents", data=data)
    assert response.status == 201, await response.text()
    try:
        agent = await (await api.get(f"/v1/agents/{unique}-1")).json()
        assert agent["metadata"]["note"] == tricky
    finally:
        await api.delete(f"/v1/agents/{unique}-1")
