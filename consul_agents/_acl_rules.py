"""What each kind of consul-agents token may do, as Consul ACL policies (pure: no I/O).

This is the ACL half of the wire format: it renders a token specification into Consul 1.8 HCL rules and
into the JSON bodies of ``/v1/acl/policy`` and ``/v1/acl/token``, and decides whether what Consul holds is
already what the specification asks for (so that provisioning twice writes nothing).

The rules follow the registry's encoding (see :mod:`consul_agents._wire`): an agent of type T is the Consul
service ``agent-T``, and metadata too large for service Meta lives in KV under
``consul-agents/metadata/T/<agent id>``. Measured on Consul 1.8.7 with ``default_policy = "deny"``:

* registering, heartbeating, putting in maintenance and deregistering an agent through the local Consul
  agent needs ``service:write`` on its service name, nothing else (the agent's own token syncs the node);
  re-registering an existing service ID under another name also needs write on the old name;
* reading ``/v1/health/service`` needs ``service:read`` *and* ``node:read`` on the node the agent runs on;
  without node read, Consul answers 200 with the entries filtered out;
* ``/v1/catalog/services`` lists only the services the token may read, so discovering across types with
  a token for some types finds those types' agents instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from consul_agents._models import SERVICE_PREFIX, AgentType, _Model
from consul_agents._pools import POOL_PREFIX
from consul_agents._wire import ANCHOR_PREFIX, KV_PREFIX, anchor_service_name, metadata_prefix

__all__ = [
    "NAME_PREFIX",
    "TOKEN_DESCRIPTION_PREFIX",
    "AclConfig",
    "TokenKind",
    "TokenSpec",
    "policy_body",
    "policy_name",
    "policy_up_to_date",
    "render_rules",
    "token_body",
    "token_description",
    "token_up_to_date",
]

TokenKind = Literal["registrar", "discoverer", "dns", "operator", "pool-admin"]
#: Every policy this project creates is named ``consul-agents-<token name>``.
NAME_PREFIX = "consul-agents-"
#: Every token this project creates is described ``consul-agents token <token name>``.
TOKEN_DESCRIPTION_PREFIX = "consul-agents token "
_TOKEN_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?\Z")


class TokenSpec(BaseModel):
    """One token to provision: its name, its kind and, for scoped kinds, the agent types it covers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: TokenKind
    #: Registrar and pool-admin: required, the types it may register or whose pools it may set.
    #: Discoverer and dns: omitted means every type.
    agent_types: list[AgentType] | None = Field(default=None, min_length=1)
    #: dns only: also make it the default token of the Consul agent that provisioning talks to, which is
    #: the token Consul DNS answers with (it then also serves HTTP requests that carry no token).
    set_as_agent_default: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _TOKEN_NAME.match(value):
            raise ValueError(f"token name {value!r} must be 1 to 50 lowercase letters, digits or '-'")
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> TokenSpec:
        if self.kind == "registrar" and not self.agent_types:
            raise ValueError(f"registrar token {self.name!r} must list the agent_types it may register")
        if self.kind == "pool-admin" and not self.agent_types:
            raise ValueError(f"pool-admin token {self.name!r} must list the agent_types whose pools it sets")
        if self.kind == "operator" and self.agent_types is not None:
            raise ValueError(f"operator token {self.name!r} covers every agent type; remove agent_types")
        if self.set_as_agent_default and self.kind != "dns":
            raise ValueError(f"only a dns token can be set as the agent default, not {self.name!r}")
        if self.agent_types is not None and len(set(self.agent_types)) != len(self.agent_types):
            raise ValueError(f"token {self.name!r} lists an agent type twice")
        return self


class AclConfig(_Model):
    """The contents of ``config/acl.yaml``: the tokens to provision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: list[TokenSpec] = Field(min_length=1)

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, value: list[TokenSpec]) -> list[TokenSpec]:
        names = [spec.name for spec in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"token names must be unique; repeated: {', '.join(duplicates)}")
        return value


def _rule(resource: str, segment: str, policy: str) -> str:
    # Agent types are DNS labels and prefixes are our own constants, so nothing here needs escaping.
    return f'{resource} "{segment}" {{ policy = "{policy}" }}'


def _services(types: Sequence[str] | None, policy: str) -> list[str]:
    if types is None:
        return [_rule("service_prefix", SERVICE_PREFIX, policy)]
    return [_rule("service", SERVICE_PREFIX + agent_type, policy) for agent_type in types]


def _metadata(types: Sequence[str] | None, policy: str) -> list[str]:
    if types is None:
        return [_rule("key_prefix", KV_PREFIX, policy)]
    return [_rule("key_prefix", metadata_prefix(agent_type), policy) for agent_type in types]


def _pools(types: Sequence[str] | None, policy: str) -> list[str]:
    """A pool's settings are one exact key per type (``key``, not ``key_prefix``: the pool of ``plan``
    must not cover ``planner``'s)."""
    if types is None:
        return [_rule("key_prefix", POOL_PREFIX, policy)]
    return [_rule("key", POOL_PREFIX + agent_type, policy) for agent_type in types]


def render_rules(spec: TokenSpec) -> str:
    """The HCL rules of the token's policy (Consul 1.8 syntax, also accepted by current Consul)."""
    types = spec.agent_types
    node_read = _rule("node_prefix", "", "read")
    if spec.kind == "registrar":
        # Its types' liveness anchors too (see _liveness): exact names, so no other type's can match.
        anchors = [_rule("service", anchor_service_name(agent_type), "write") for agent_type in types or []]
        lines = _services(types, "write") + anchors + _metadata(types, "write")
    elif spec.kind == "discoverer":
        lines = [*_services(types, "read"), node_read, *_metadata(types, "read"), *_pools(types, "read")]
    elif spec.kind == "pool-admin":
        # sees the pools it sets (their agents) and writes their settings, nothing of any other type
        lines = [*_services(types, "read"), node_read, *_pools(types, "write")]
    elif spec.kind == "dns":
        lines = [*_services(types, "read"), node_read]
    else:
        lines = [
            *_services(None, "write"),
            _rule("service_prefix", ANCHOR_PREFIX, "write"),
            node_read,
            _rule("key_prefix", "consul-agents/", "write"),
            _rule("agent_prefix", "", "read"),
            # The prepared query template behind the agent-<type>.query.consul names (`dns setup`).
            _rule("query_prefix", SERVICE_PREFIX, "write"),
        ]
    return "\n".join(lines) + "\n"


_PURPOSE: Mapping[TokenKind, str] = {
    "registrar": "register, heartbeat and deregister agents of types",
    "discoverer": "discover agents of types",
    "dns": "resolve agents through Consul DNS, types",
    "operator": "manage every agent (register, deregister, maintenance, metadata, DNS query template)",
    "pool-admin": "read the agents of, and set the pool settings of, types",
}


def policy_name(spec: TokenSpec) -> str:
    return NAME_PREFIX + spec.name


def token_description(spec: TokenSpec) -> str:
    """The token's description, which is how provisioning finds it again: keep it stable per name."""
    return TOKEN_DESCRIPTION_PREFIX + spec.name


def _policy_description(spec: TokenSpec) -> str:
    purpose = _PURPOSE[spec.kind]
    if spec.kind == "operator":
        return f"consul-agents {spec.kind}: {purpose}"
    scope = ", ".join(spec.agent_types) if spec.agent_types else "all"
    return f"consul-agents {spec.kind}: {purpose} {scope}"


def policy_body(spec: TokenSpec) -> dict[str, Any]:
    """The body of ``PUT /v1/acl/policy`` (create) or ``/v1/acl/policy/:id`` (update)."""
    return {"Name": policy_name(spec), "Description": _policy_description(spec), "Rules": render_rules(spec)}


def token_body(spec: TokenSpec) -> dict[str, Any]:
    """The body of ``PUT /v1/acl/token`` (create) or ``/v1/acl/token/:accessor`` (update)."""
    return {
        "Description": token_description(spec),
        "Policies": [{"Name": policy_name(spec)}],
        "Local": False,
    }


def policy_up_to_date(existing: Mapping[str, Any], spec: TokenSpec) -> bool:
    """Whether a policy read from ``/v1/acl/policy/:id`` already says what ``spec`` asks."""
    wanted = policy_body(spec)
    return bool(
        existing.get("Rules") == wanted["Rules"]
        and existing.get("Description") == wanted["Description"]
        and not existing.get("Datacenters")
    )


def token_up_to_date(existing: Mapping[str, Any], spec: TokenSpec) -> bool:
    """Whether a token read from Consul carries exactly the spec's policy and nothing else."""
    names = sorted(str(link.get("Name", "")) for link in existing.get("Policies") or [])
    return bool(
        names == [policy_name(spec)]
        and not existing.get("Roles")
        and not existing.get("ServiceIdentities")
        and not existing.get("Local", False)
        and existing.get("Description") == token_description(spec)
    )
