"""Helpers for the ACL test modules: Consul with ACLs on (config/consul-acl.json), tokens, state snapshots."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import support
from support import consul_get

from consul_agents import AgentRegistration, ConsulSettings
from consul_agents._acl_rules import AclConfig
from consul_agents._gateway import ConsulGateway
from consul_agents.acl import ProvisionedToken, provision
from consul_agents.dev import ConsulDevServer

CONFIG_DIR = Path(__file__).parents[2] / "config"


def acl_consul_kwargs(master: str | None = None, **acl: Any) -> dict[str, Any]:
    """ConsulDevServer arguments for the project's ACL config; a fresh random master token unless given.

    The master token is also the agent token here; in production each agent gets its own token with node
    write (see the README's security section). ``acl`` entries are added to the ``acl`` block, except
    ``server``, which goes to the top level.
    """
    config = json.loads((CONFIG_DIR / "consul-acl.json").read_text())
    master = master or str(uuid.uuid4())
    server = acl.pop("server", None)
    config["acl"].update(acl)
    config["acl"]["tokens"] = {"master": master, "agent": master}
    if server is not None:
        # A client agent leaves gracefully on SIGTERM by default, which costs seconds at teardown.
        config.update({"server": server, "leave_on_terminate": False})
    return {"extra_config": config}


def acl_consul(**kwargs: Any) -> ConsulDevServer:
    """A (not yet started) Consul with the project's ACL config and a fresh random master token."""
    arguments = acl_consul_kwargs()
    arguments["extra_config"].update(kwargs.pop("extra_config", {}))
    return ConsulDevServer(**arguments, **kwargs)


def master_token(server: ConsulDevServer) -> str:
    return str(server.build_config()["acl"]["tokens"]["master"])  # type: ignore[index]


def gateway(addr: str, token: str) -> ConsulGateway:
    return ConsulGateway(ConsulSettings.resolve(addr, token, env={}))


async def provision_tokens(addr: str, master: str, *specs: dict[str, Any]) -> dict[str, ProvisionedToken]:
    async with gateway(addr, master) as gw:
        tokens = await provision(gw, AclConfig(tokens=list(specs)))  # type: ignore[arg-type]
    return {t.name: t for t in tokens}


def provisioned(server: ConsulDevServer, *specs: dict[str, Any]) -> dict[str, ProvisionedToken]:
    """The tokens of ``specs`` made on ``server`` with its master token, by name (for sync fixtures)."""
    return asyncio.run(provision_tokens(server.http_addr, master_token(server), *specs))


def token_secrets(server: ConsulDevServer, *specs: dict[str, Any]) -> dict[str, str]:
    """The secret of each token of ``specs`` made on ``server``, by name."""
    return {name: token.secret_id for name, token in provisioned(server, *specs).items()}


def registration(agent_type: str, agent_id: str, **fields: Any) -> AgentRegistration:
    """A registration whose TTL outlasts the test, so its check cannot change while a test compares state."""
    return support.registration(agent_type, **{"agent_id": agent_id, "ttl": timedelta(hours=1), **fields})


async def consul_state(addr: str, master: str) -> dict[str, Any]:
    """Everything an attack could change: agent services (local and catalog), their checks, our KV.

    Read with plain HTTP (tests/support.py), independent of the gateway whose refusals are under test.
    """

    def read(path: str) -> Any:
        return consul_get(addr, path, token=master)[0]

    services = read("/v1/catalog/services")
    state: dict[str, Any] = {"services": services}
    for name in sorted(services):
        state[name] = sorted(
            json.dumps([e["ServiceID"], e["ServiceTags"], e["ServiceMeta"], e["ModifyIndex"]])
            for e in read(f"/v1/catalog/service/{name}")
        )
    local = read("/v1/agent/services")
    state["local"] = {k: [v["Service"], v["Tags"], v["Meta"]] for k, v in local.items()}
    state["checks"] = sorted(
        json.dumps([c["CheckID"], c["Status"], c["ModifyIndex"]]) for c in read("/v1/health/state/any")
    )
    state["kv"] = sorted(
        json.dumps([e["Key"], e["Value"], e["ModifyIndex"]])
        for e in read("/v1/kv/consul-agents/?recurse") or []
    )
    return state
