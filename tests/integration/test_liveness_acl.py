"""Process liveness under ACLs: a registrar keeps its type's anchor, and no other type's registrar can
register, take over, heartbeat or remove it (each attack against a real ACL-enabled Consul)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
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


async def _anchor_ids(server: ConsulDevServer, agent_type: str) -> list[str]:
    async with gateway(server.http_addr, master_token(server)) as gw:
        services = (await gw.get("read", "/v1/agent/services")).body or {}
    return [sid for sid, s in services.items() if s["Service"] == wire.anchor_service_name(agent_type)]


async def _status(server: ConsulDevServer, agent_id: str) -> AgentStatus:
    """Read with the master token: a registrar may write its types but not read nodes."""
    async with AgentRegistry(server.http_addr, master_token(server), cache=False) as reader:
        return await reader.get_agent_status(agent_id)


async def test_registrar_keeps_its_sessions_alive_through_its_anchor(
    server: ConsulDevServer, tokens: dict[str, str], unique: str
) -> None:
    """A registrar token of one type can run sessions: it may create, heartbeat and remove that type's
    anchor and the alias checks, and its agents are passing."""
    async with AgentRegistry(server.http_addr, tokens["alpha-registrar"], cache=False) as alpha:
        async with alpha.session(
            registration("alpha", agent_id=f"{unique}-a", ttl=2), liveness="process"
        ) as session:
            assert len(await _anchor_ids(server, "alpha")) == 1

            async def beating() -> bool:
                return session.heartbeats >= 3 and session.last_error is None

            await eventually(beating, timeout=10, what="three heartbeats")
            assert await _status(server, f"{unique}-a") is AgentStatus.PASSING
        assert await _anchor_ids(server, "alpha") == []


def wire_ttl() -> timedelta:
    return timedelta(seconds=30)


ATTACKS: dict[str, Any] = {
    "register the other type's anchor name": lambda anchor: (
        "PUT",
        "/v1/agent/service/register",
        wire.anchor_definition(
            "alpha", "consul-agents-liveness-alpha-intruder", ttl=wire_ttl(), deregister_after=wire_ttl()
        ),
    ),
    "take over its anchor's id": lambda anchor: (
        "PUT",
        "/v1/agent/service/register",
        wire.anchor_definition("beta", anchor, ttl=wire_ttl(), deregister_after=wire_ttl()),
    ),
    "heartbeat its anchor": lambda anchor: (
        "PUT",
        f"/v1/agent/check/update/{wire.anchor_check_id(anchor)}",
        {"Status": "passing"},
    ),
    "fail its anchor": lambda anchor: ("PUT", f"/v1/agent/check/fail/{wire.anchor_check_id(anchor)}", None),
    "deregister its anchor": lambda anchor: ("PUT", f"/v1/agent/service/deregister/{anchor}", None),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_other_type_registrar_cannot_touch_an_anchor(
    server: ConsulDevServer, tokens: dict[str, str], unique: str, attack: str
) -> None:
    """A registrar of type beta is denied every write to type alpha's anchor, which stays as it was."""
    alpha = AgentRegistry(server.http_addr, tokens["alpha-registrar"], cache=False)
    victim = registration("alpha", agent_id=f"{unique}-a", ttl=30)  # outlasts a loaded machine's late beat
    async with alpha, alpha.session(victim, liveness="process"):
        (anchor,) = await _anchor_ids(server, "alpha")
        method, path, body = ATTACKS[attack](anchor)
        async with gateway(server.http_addr, tokens["beta-registrar"]) as beta:
            with pytest.raises(PermissionDeniedError):
                await beta.request("attack", method, path, body=body)
        assert await _anchor_ids(server, "alpha") == [anchor]
        assert await _status(server, f"{unique}-a") is AgentStatus.PASSING
