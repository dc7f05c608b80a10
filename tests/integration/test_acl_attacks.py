"""Attacks from the security issue, each against a real ACL-enabled Consul: each must fail and change nothing.

"Nothing changed" is checked by comparing Consul's agent services (catalog and local agent), checks and the
project's KV, modify indexes included, before and after each attack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from acl_support import (
    acl_consul,
    consul_state,
    gateway,
    master_token,
    registration,
    token_secrets,
)

from consul_agents import (
    AgentRegistration,
    AgentRegistry,
    AgentStatus,
    ConsulAgentsError,
    DiscoveryRequest,
    InvalidAgentError,
    PermissionDeniedError,
)
from consul_agents.dev import ConsulDevServer

SPECS = (
    {"name": "alpha-registrar", "kind": "registrar", "agent_types": ["alpha"]},
    {"name": "beta-registrar", "kind": "registrar", "agent_types": ["beta"]},
    {"name": "fleet-discoverer", "kind": "discoverer"},
)


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(server: ConsulDevServer) -> dict[str, str]:
    return token_secrets(server, *SPECS)


@pytest.fixture
async def victim(server: ConsulDevServer, tokens: dict[str, str], unique: str) -> AsyncIterator[str]:
    """A type-beta agent (metadata in KV) registered by its rightful registrar; removed after the test."""
    async with AgentRegistry(server.http_addr, tokens["beta-registrar"]) as beta:
        agent_id = await beta.register_agent(
            registration("beta", f"{unique}-victim", tags={"env": "prod"}, metadata={"doc": "v" * 1000})
        )
        yield agent_id
        await beta.deregister_agent(agent_id)


@asynccontextmanager
async def unchanged(server: ConsulDevServer) -> AsyncIterator[None]:
    """Asserts that Consul's agent state is the same after the block as before it."""
    before = await consul_state(server.http_addr, master_token(server))
    yield
    assert await consul_state(server.http_addr, master_token(server)) == before


Attack = Callable[[AgentRegistry, str], Awaitable[Any]]


async def attempt(
    server: ConsulDevServer, token: str, victim: str, attack: Attack, error: type[ConsulAgentsError]
) -> ConsulAgentsError:
    async with unchanged(server), AgentRegistry(server.http_addr, token) as attacker:
        with pytest.raises(error) as caught:
            await attack(attacker, victim)
    assert token not in str(caught.value)
    return caught.value


FAKE = "http://10.6.6.6:6666"


@pytest.mark.parametrize(
    ("name", "attack"),
    [
        ("register", lambda r, v: r.register_agent(registration("beta", "fake-1", endpoint=FAKE))),
        ("register", lambda r, v: r.register_agent(registration("alpha", "fake-2", endpoint=FAKE))),
        ("overwrite", lambda r, v: r.register_agent(registration("beta", v, endpoint=FAKE))),
        ("heartbeat", lambda r, v: r.heartbeat(v, 0.0)),
        ("maintenance", lambda r, v: r.set_maintenance(v, True, "pwned")),
        ("deregister", lambda r, v: r.deregister_agent(v)),
    ],
)
async def test_discovery_token_cannot_write(
    server: ConsulDevServer, tokens: dict[str, str], victim: str, name: str, attack: Attack
) -> None:
    """A discovery token cannot register a fake agent nor touch a real one: denied, nothing changed."""
    denied = await attempt(server, tokens["fleet-discoverer"], victim, attack, PermissionDeniedError)
    assert isinstance(denied, PermissionDeniedError) and denied.operation


@pytest.mark.parametrize(
    ("name", "attack"),
    [
        (
            "fake agent of another type",
            lambda r, v: r.register_agent(registration("beta", "fake-3", endpoint=FAKE)),
        ),
        ("hijack id as own type", lambda r, v: r.register_agent(registration("alpha", v, endpoint=FAKE))),
        ("hijack id as its type", lambda r, v: r.register_agent(registration("beta", v, endpoint=FAKE))),
        ("heartbeat", lambda r, v: r.heartbeat(v, 1.0)),
        ("critical", lambda r, v: r.heartbeat(v, status=AgentStatus.CRITICAL)),
        ("maintenance", lambda r, v: r.set_maintenance(v, True)),
        ("deregister", lambda r, v: r.deregister_agent(v)),
    ],
)
async def test_type_scoped_token_cannot_touch_another_type(
    server: ConsulDevServer, tokens: dict[str, str], victim: str, name: str, attack: Attack
) -> None:
    """A registrar of type alpha cannot register, take over, heartbeat, pause or remove a beta agent."""
    denied = await attempt(server, tokens["alpha-registrar"], victim, attack, PermissionDeniedError)
    assert ("fake-3" if name == "fake agent of another type" else victim) in str(denied)


async def test_raw_writes_to_another_types_agent_are_denied(
    server: ConsulDevServer, tokens: dict[str, str], victim: str
) -> None:
    """Bypassing AgentRegistry, raw Consul writes to the victim's service, check and KV are denied too."""
    writes = [
        ("PUT", f"/v1/agent/service/deregister/{victim}", None),
        ("PUT", f"/v1/agent/check/fail/service:{victim}", None),
        ("PUT", f"/v1/kv/consul-agents/metadata/beta/{victim}", '{"doc": "evil"}'),
        ("DELETE", f"/v1/kv/consul-agents/metadata/beta/{victim}", None),
        ("PUT", "/v1/kv/consul-agents/metadata/alpha/../beta/x", "{}"),
    ]
    async with unchanged(server), gateway(server.http_addr, tokens["alpha-registrar"]) as gw:
        for method, path, body in writes:
            with pytest.raises((PermissionDeniedError, InvalidAgentError)):
                await gw.request(f"attack {path}", method, path, body=body)


@pytest.mark.parametrize(
    "fields",
    [
        {"capabilities": ["plan.evil"]},  # would add a DNS label: plan.evil.agent-beta.service.consul
        {"capabilities": ["plan evil"]},
        {"capabilities": ['plan" or "x" in Service.Tags or "']},
        {"capabilities": ["_plan"]},
        {"agent_type": "beta..x"},
        {"agent_type": "beta/../alpha"},
        {"agent_type": "Beta\n"},
        {"tags": {"agent-endpoint": FAKE}},  # our own Meta keys cannot be forged through tags
        {"tags": {"agent-load": "0"}},
        {"tags": {"consul-version": "1"}},
        {"tags": {"env prod": "x"}},
        {"tags": {'env"]': "x"}},
        {"agent_id": "../../kv/consul-agents/x"},
        {"agent_id": "x?token=y"},
        {"metadata": {"n": float("nan")}},
    ],
)
async def test_injection_through_registration_fields_is_refused(
    server: ConsulDevServer, tokens: dict[str, str], victim: str, fields: dict[str, Any]
) -> None:
    """Capabilities, types, tags, ids or metadata that would bend DNS labels, filters or our encoding fail."""

    async def attack(r: AgentRegistry, v: str) -> None:
        await r.register_agent(registration(**{"agent_type": "beta", "agent_id": "inj-1", **fields}))

    await attempt(server, tokens["beta-registrar"], victim, attack, InvalidAgentError)


async def test_capabilities_named_like_the_encoding_change_nothing_else(
    server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """Capabilities spelled like our Meta keys stay plain tags: endpoint, load and metadata are untouched."""
    fields = {"capabilities": ["agent-endpoint", "agent-load", "agent-metadata"], "metadata": {"k": "v"}}
    async with (
        AgentRegistry(server.http_addr, tokens["beta-registrar"]) as beta,
        AgentRegistry(server.http_addr, tokens["fleet-discoverer"]) as reader,
    ):
        agent_id = await beta.register_agent(registration("beta", f"{unique}-caps", load=0.25, **fields))
        try:
            info = await reader.get_agent(agent_id)
        finally:
            await beta.deregister_agent(agent_id)
    assert (info.endpoint, info.current_load, info.metadata) == ("http://127.0.0.1:9000", 0.25, {"k": "v"})
    assert info.capabilities == fields["capabilities"] and info.tags == {}


@pytest.mark.parametrize(
    "fields",
    [
        {"agent_type": "b" * 58},
        {"capabilities": ["c" * 64]},
        {"capabilities": [f"c{i}" for i in range(2)] + ["c" * 70]},
        {"agent_id": "a" * 129},
        {"tags": {"k": "v" * 513}},
        {"tags": {"k" * 129: "v"}},
        {"tags": {f"k{i}": "v" for i in range(60)}},
        {"metadata": {"doc": "m" * (64 * 1024)}},
        {"endpoint": "http://" + "h" * 300 + ":1/" + "p" * 5000},
    ],
)
async def test_overlong_values_are_refused(
    server: ConsulDevServer, tokens: dict[str, str], victim: str, fields: dict[str, Any]
) -> None:
    """Values longer than Consul or DNS allow are refused before anything is written."""

    async def attack(r: AgentRegistry, v: str) -> None:
        await r.register_agent(registration(**{"agent_type": "beta", "agent_id": "long-1", **fields}))

    await attempt(server, tokens["beta-registrar"], victim, attack, InvalidAgentError)


@pytest.mark.parametrize(
    "value",
    [
        'x" or Service.Meta.env == "prod',
        'x\\" or Service.Meta.env == \\"prod',
        "x` or Service.Meta.env == `prod",
        'x" or "1" == "1',
        "\u0000prod",
    ],
)
async def test_filter_values_cannot_escape_the_filter(
    server: ConsulDevServer, tokens: dict[str, str], victim: str, value: str
) -> None:
    """A tag value built to close the filter's string literal matches literally: no agent, no error."""
    async with AgentRegistry(server.http_addr, tokens["fleet-discoverer"]) as reader:
        assert [a.agent_id for a in await reader.discover_agents(DiscoveryRequest(tags={"env": "prod"}))] == [
            victim
        ]
        assert await reader.discover_agents(DiscoveryRequest(tags={"env": value})) == []
        assert await reader.discover_agents(DiscoveryRequest(agent_type="beta", tags={"env": value})) == []


@pytest.mark.parametrize(
    "address_suffix",
    ["/?token={token}", "/v1/agent/service/register?token={token}", "#token={token}"],
)
async def test_token_in_url_query_is_refused(
    server: ConsulDevServer, tokens: dict[str, str], victim: str, address_suffix: str
) -> None:
    """A Consul address carrying a token in its query is refused before any request, without echoing it."""
    master = master_token(server)
    async with unchanged(server):
        with pytest.raises(InvalidAgentError) as caught:
            AgentRegistry(server.http_addr + address_suffix.format(token=master), "")
    assert master not in str(caught.value)


async def test_token_smuggled_into_a_query_parameter_is_not_honoured(
    server: ConsulDevServer, tokens: dict[str, str], victim: str
) -> None:
    """A maintenance reason carrying "&token=<management token>" stays one encoded value: still denied."""
    master = master_token(server)

    async def attack(r: AgentRegistry, v: str) -> None:
        await r.set_maintenance(v, True, f"x&token={master}")

    await attempt(server, tokens["fleet-discoverer"], victim, attack, PermissionDeniedError)


async def test_agent_id_cannot_traverse_to_another_endpoint(
    server: ConsulDevServer, tokens: dict[str, str], victim: str
) -> None:
    """An agent id like "../../kv/..." is refused instead of reaching another Consul endpoint."""
    for operation in ("deregister_agent", "heartbeat", "set_maintenance", "get_agent"):

        async def attack(r: AgentRegistry, v: str, operation: str = operation) -> None:
            method = getattr(r, operation)
            args = (True,) if operation == "set_maintenance" else ()
            await method(f"../../../kv/consul-agents/metadata/beta/{v}", *args)

        denied = await attempt(server, tokens["beta-registrar"], victim, attack, InvalidAgentError)
        assert denied.field == "agent_id"  # type: ignore[attr-defined]


def test_registrations_in_this_module_are_valid() -> None:
    """The helper's baseline registration is valid, so each refusal above is due to the attack's field."""
    assert isinstance(registration("beta", "ok-1"), AgentRegistration)
