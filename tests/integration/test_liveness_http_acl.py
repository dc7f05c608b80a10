"""HTTP liveness under ACLs: a per-type registrar keeps its agents alive by Consul-run HTTP checks, and
another type's registrar can neither remove nor fail those checks (against a real ACL-enabled Consul)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from acl_support import acl_consul, gateway, master_token, token_secrets
from support import eventually, registration

from consul_agents import AgentRegistry, AgentStatus, PermissionDeniedError
from consul_agents import _wire as wire
from consul_agents.dev import ConsulDevServer

SPECS = (
    {"name": "alpha-registrar", "kind": "registrar", "agent_types": ["alpha"]},
    {"name": "beta-registrar", "kind": "registrar", "agent_types": ["beta"]},
)


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(server: ConsulDevServer) -> dict[str, str]:
    return token_secrets(server, *SPECS)


async def _checks(server: ConsulDevServer, agent_id: str) -> dict[str, dict[str, Any]]:
    async with gateway(server.http_addr, master_token(server)) as gw:
        checks = (await gw.get("read", "/v1/agent/checks")).body or {}
    return {cid: c for cid, c in checks.items() if c.get("ServiceID") == agent_id}


async def _status(server: ConsulDevServer, agent_id: str) -> AgentStatus:
    async with AgentRegistry(server.http_addr, master_token(server), cache=False) as reader:
        return await reader.get_agent_status(agent_id)


async def test_registrar_keeps_its_agents_alive_by_http_checks(
    server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """A registrar token of one type registers a session with liveness="http": Consul runs its HTTP check,
    the agent is passing, and its checks go with it."""
    agent_id = f"{unique}-a"
    async with AgentRegistry(server.http_addr, tokens["alpha-registrar"], cache=False) as alpha:
        async with alpha.session(registration("alpha", agent_id=agent_id, ttl=3), liveness="http"):

            async def checked() -> bool:
                alive = (await _checks(server, agent_id)).get(wire.alias_check_id(agent_id), {})
                return alive.get("Type") == "http" and "200 OK" in alive.get("Output", "")

            await eventually(checked, timeout=10, what="Consul ran the HTTP check")
            assert await _status(server, agent_id) is AgentStatus.PASSING
        assert await _checks(server, agent_id) == {}


ATTACKS: dict[str, Any] = {
    "deregister its HTTP check": lambda agent_id: (
        f"/v1/agent/check/deregister/{wire.alias_check_id(agent_id)}",
        None,
    ),
    "replace its HTTP check by a passing TTL": lambda agent_id: (
        "/v1/agent/check/register",
        {"ID": wire.alias_check_id(agent_id), "Name": "x", "ServiceID": agent_id, "TTL": "1h"},
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_other_type_registrar_cannot_touch_the_http_check(
    server: ConsulDevServer, tokens: dict[str, str], unique: str, attack: str
) -> None:
    """A registrar of type beta is denied every write to an alpha agent's HTTP check, which stays."""
    agent_id = f"{unique}-a"
    alpha = AgentRegistry(server.http_addr, tokens["alpha-registrar"], cache=False)
    async with alpha, alpha.session(registration("alpha", agent_id=agent_id, ttl=30), liveness="http"):
        path, body = ATTACKS[attack](agent_id)
        async with gateway(server.http_addr, tokens["beta-registrar"]) as beta:
            with pytest.raises(PermissionDeniedError):
                await beta.put("attack", path, body)
        assert (await _checks(server, agent_id))[wire.alias_check_id(agent_id)]["Type"] == "http"
