"""The REST API over real HTTP against a real Consul: every endpoint, error mapping, token forwarding."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import test_utils
from conftest import MakeConsul
from support import consul_get, consul_put, eventually

from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer

MASTER = "api-test-master-token"


def body(agent_type: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "agent_type": agent_type,
        "capabilities": ["plan", "code"],
        "endpoint": "http://127.0.0.1:9000",
        "tags": {"tier": "gold"},
        "ttl": 30,
    }
    fields.update(overrides)
    return fields


async def test_register_discover_heartbeat_select_deregister(
    api: test_utils.TestClient[Any, Any], consul_addr: str, unique: str
) -> None:
    """An agent registered through the API is found, heartbeats, is selected and is removed, all in Consul."""
    answer = await api.post("/v1/agents", json=body(unique, agent_id=f"{unique}-1"))
    assert answer.status == 201, await answer.text()
    assert await answer.json() == {"agent_id": f"{unique}-1"}
    assert answer.headers["Location"] == f"/v1/agents/{unique}-1"
    services, _ = consul_get(consul_addr, f"/v1/health/service/agent-{unique}")
    assert [s["Service"]["ID"] for s in services] == [f"{unique}-1"]
    assert (await api.post("/v1/agents", json=body(unique, agent_id=f"{unique}-2", load=0.9))).status == 201

    found = await (await api.get("/v1/agents", params=[("type", unique), ("tag", "tier=gold")])).json()
    assert [a["agent_id"] for a in found] == [f"{unique}-1", f"{unique}-2"]
    light = await api.get("/v1/agents", params={"type": unique, "max_load": "0.5"})
    assert await light.json() == [found[0]]

    beat = await api.put(f"/v1/agents/{unique}-1/heartbeat", json={"load": 0.95, "status": "warning"})
    assert beat.status == 204, await beat.text()
    one = await (await api.get(f"/v1/agents/{unique}-1")).json()
    assert (one["status"], one["current_load"], one["health_score"]) == ("warning", 0.95, 0.5)

    chosen = await api.post("/v1/select", json={"agent_type": unique, "strategy": "least_loaded"})
    assert (await chosen.json())["agent_id"] == f"{unique}-2"

    assert (await api.put(f"/v1/agents/{unique}-2/maintenance", json={"enable": True})).status == 204
    in_maintenance = await api.get("/v1/agents", params={"type": unique, "status": "maintenance"})
    assert [a["agent_id"] for a in await in_maintenance.json()] == [f"{unique}-2"]

    types = await (await api.get("/v1/types")).json()
    assert types[unique] == ["code", "plan"]

    gone = await api.delete(f"/v1/agents/{unique}-1")
    assert await gone.json() == {"agent_id": f"{unique}-1", "deregistered": True}
    assert (await api.get(f"/v1/agents/{unique}-1")).status == 404
    assert (await api.delete(f"/v1/agents/{unique}-1")).status == 404
    await api.delete(f"/v1/agents/{unique}-2")


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "error", "field"),
    [
        (
            "POST",
            "/v1/agents",
            {"agent_type": "Not A Label", "capabilities": ["x"], "endpoint": "http://h:1"},
            422,
            "invalid",
            "agent_type",
        ),
        ("POST", "/v1/agents", {"agent_type": "ok"}, 422, "invalid", "capabilities"),
        ("POST", "/v1/agents", [1, 2], 400, "bad_request", None),
        ("POST", "/v1/agents", "not json{", 400, "bad_request", None),
        ("POST", "/v1/agents", None, 400, "bad_request", None),
        ("GET", "/v1/agents?max_load=lots", None, 400, "bad_request", "max_load"),
        ("GET", "/v1/agents?max_load=2", None, 422, "invalid", "max_load"),
        ("GET", "/v1/agents?tag=novalue", None, 400, "bad_request", "tag"),
        ("GET", "/v1/agents?status=asleep", None, 422, "invalid", "status"),
        ("GET", "/v1/agents?type=a&type=b", None, 400, "bad_request", "type"),
        ("GET", "/v1/agents?colour=red", None, 400, "bad_request", "colour"),
        ("GET", "/v1/agents/-bad-id", None, 422, "invalid", "agent_id"),
        ("GET", "/v1/agents/nobody-here", None, 404, "not_found", None),
        ("PUT", "/v1/agents/nobody-here/heartbeat", {}, 404, "not_found", None),
        ("PUT", "/v1/agents/x1/heartbeat", {"load": 7}, 422, "invalid", "load"),
        ("PUT", "/v1/agents/x1/heartbeat", {"status": "maintenance"}, 422, "invalid", "status"),
        ("PUT", "/v1/agents/x1/maintenance", {}, 422, "invalid", "enable"),
        ("POST", "/v1/select", {"strategy": "best"}, 422, "invalid", "strategy"),
        ("POST", "/v1/select", {"agent_type": "no-such-type-anywhere"}, 404, "no_match", None),
        ("GET", "/v1/types?region=a/b", None, 422, "invalid", "region"),
        ("PATCH", "/v1/agents", None, 405, "method_not_allowed", None),
        ("GET", "/v2/nothing", None, 404, "not_found", None),
    ],
)
async def test_client_errors_are_4xx_with_a_json_body_naming_the_problem(
    api: test_utils.TestClient[Any, Any],
    method: str,
    path: str,
    payload: Any,
    status: int,
    error: str,
    field: str | None,
) -> None:
    """Each kind of bad request gets its own 4xx status and a JSON body naming the error and the field."""
    data = payload if isinstance(payload, str) else None
    answer = await api.request(method, path, json=None if data else payload, data=data)
    result = await answer.json()
    assert (answer.status, result["error"], result.get("field")) == (status, error, field), result
    assert result["message"]


async def test_health_reports_consul_and_its_leader(api: test_utils.TestClient[Any, Any]) -> None:
    """GET /health answers 200 with Consul's leader while Consul is up."""
    answer = await api.get("/health")
    result = await answer.json()
    assert answer.status == 200 and result["status"] == "ok" and result["leader"]


async def test_unreachable_consul_is_503_not_500(make_consul: MakeConsul, unique: str) -> None:
    """When Consul is gone, reads and writes answer 503 'unavailable' and /health says so."""
    server = make_consul()
    app = create_app(server.http_addr, timeout=2)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        assert (await client.get("/health")).status == 200
        server.stop()
        for method, path, payload in [
            ("GET", "/health", None),
            ("GET", "/v1/agents", None),
            ("POST", "/v1/agents", body(unique)),
            ("GET", f"/v1/agents/{unique}", None),
        ]:
            answer = await client.request(method, path, json=payload)
            assert answer.status == 503, (path, await answer.text())
            result = await answer.json()
            assert result.get("error", result.get("status")) == "unavailable"


def _acl_server(make_consul: MakeConsul) -> ConsulDevServer:
    return make_consul(
        extra_config={
            "primary_datacenter": "dc1",
            "acl": {"enabled": True, "default_policy": "deny", "tokens": {"master": MASTER}},
        }
    )


def _token(addr: str, name: str, rules: str) -> str:
    consul_put(addr, "/v1/acl/policy", {"Name": name, "Rules": rules}, token=MASTER)
    created = consul_put(addr, "/v1/acl/token", {"Policies": [{"Name": name}]}, token=MASTER)
    return str(created["SecretID"])


async def test_api_forwards_each_callers_token_and_never_mixes_answers(
    make_consul: MakeConsul, unique: str
) -> None:
    """Each caller acts with its own token: denied writes are 403; no token ever sees another's answer."""
    server = _acl_server(make_consul)
    addr = server.http_addr
    node_read = 'node_prefix "" { policy = "read" }\n'
    alpha = _token(addr, "alpha", node_read + f'service "agent-{unique}a" {{ policy = "write" }}')
    beta = _token(addr, "beta", node_read + f'service "agent-{unique}b" {{ policy = "write" }}')

    async with test_utils.TestClient(test_utils.TestServer(create_app(addr))) as client:
        headers_a = {"X-Consul-Token": alpha}
        headers_b = {"Authorization": f"Bearer {beta}"}
        ok_a = await client.post("/v1/agents", json=body(f"{unique}a", agent_id="ag-a"), headers=headers_a)
        assert ok_a.status == 201, await ok_a.text()
        ok_b = await client.post("/v1/agents", json=body(f"{unique}b", agent_id="ag-b"), headers=headers_b)
        assert ok_b.status == 201, await ok_b.text()

        denied = await client.post("/v1/agents", json=body(f"{unique}a", agent_id="ag-x"), headers=headers_b)
        assert (denied.status, (await denied.json())["error"]) == (403, "denied")
        anonymous = await client.post("/v1/agents", json=body(f"{unique}a", agent_id="ag-y"))
        assert anonymous.status == 403

        async def seen(headers: dict[str, str]) -> list[str]:
            answer = await client.get("/v1/agents", headers=headers)
            assert answer.status == 200, await answer.text()
            return [agent["agent_id"] for agent in await answer.json()]

        async def both_visible() -> bool:
            return await seen(headers_a) == ["ag-a"] and await seen(headers_b) == ["ag-b"]

        await eventually(both_visible, what="each token sees exactly its own agent")
        assert await seen({}) == []
        assert (await client.get("/v1/agents", headers={"Authorization": "Basic abc"})).status == 400
        # The same questions again, alternating tokens: no answer leaks from one token's view to another.
        for _ in range(3):
            assert await seen(headers_b) == ["ag-b"]
            assert await seen(headers_a) == ["ag-a"]
            assert await seen({}) == []
        assert (await client.get("/v1/agents/ag-b", headers=headers_a)).status == 404
        assert (await client.delete("/v1/agents/ag-b", headers=headers_a)).status in (403, 404)
        assert (await client.delete("/v1/agents/ag-b", headers=headers_b)).status == 200

    services, _ = consul_get(addr, "/v1/agent/services", token=MASTER)
    assert set(services) == {"ag-a"}


async def test_metrics_agents_gauge_is_never_served_to_another_token(
    make_consul: MakeConsul, unique: str
) -> None:
    """The agents gauge a privileged scrape saw is not in the next scrape by a token that sees nothing."""
    server = _acl_server(make_consul)
    addr = server.http_addr
    rules = 'node_prefix "" { policy = "read" }\n' + f'service "agent-{unique}" {{ policy = "write" }}'
    writer = _token(addr, "writer", rules)
    async with test_utils.TestClient(test_utils.TestServer(create_app(addr))) as client:
        headers = {"X-Consul-Token": writer}
        created = await client.post("/v1/agents", json=body(unique, agent_id=f"{unique}-1"), headers=headers)
        assert created.status == 201, await created.text()

        async def counted() -> bool:
            text = await (await client.get("/metrics", headers=headers)).text()
            return f'agent_type="{unique}"' in text

        await eventually(counted, what="the writer's scrape counts its agent")
        for other in ({"X-Consul-Token": "0b1d6a8e-0000-4000-8000-000000000000"}, {}):
            answer = await client.get("/metrics", headers=other)
            assert answer.status == 200
            assert f'agent_type="{unique}"' not in await answer.text()
