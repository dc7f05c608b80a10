"""Provision the Consul ACL policies and tokens the registry needs, idempotently.

``consul-agents acl setup config/acl.yaml`` (or :func:`provision` from Python), run with a token that may
write ACLs (the bootstrap/management token), makes Consul hold exactly one policy and one token per entry
of the file; what :mod:`consul_agents._acl_rules` says each kind may do. Policies are found again by name
(``consul-agents-<name>``) and tokens by description (``consul-agents token <name>``), so a second run
finds everything in place and writes nothing: Consul's ACL indexes do not move.

Token secrets leave this module only through :func:`tokens_json`/:func:`write_tokens`, which the operator
points at a file (created 0600) or stdout. They are never logged, never in a repr, never in an exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from consul_agents import _acl_rules as rules
from consul_agents import _wire as wire
from consul_agents._acl_rules import AclConfig, TokenKind, TokenSpec
from consul_agents._errors import ConsulRequestError, InvalidAgentError
from consul_agents._gateway import ConsulGateway
from consul_agents._yaml import load_yaml

__all__ = [
    "AclConfig",
    "ProvisionedToken",
    "TokenSpec",
    "load_config",
    "provision",
    "tokens_json",
    "write_tokens",
]

log = logging.getLogger("consul_agents.acl")

Change = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class ProvisionedToken:
    """A token as provisioning left it. ``secret_id`` is the credential; it is kept out of ``repr``."""

    name: str
    kind: TokenKind
    accessor_id: str
    secret_id: str = field(repr=False)
    policy: str
    #: What this run did to the token or its policy (``unchanged``: nothing was written).
    change: Change


def load_config(path: str | Path) -> AclConfig:
    """Read and validate an ACL file; raises InvalidAgentError naming the file, the faulty field and its line.

    The file is read by the project's bounded YAML loader (:mod:`consul_agents._yaml`).
    """
    document = load_yaml(path)
    raw = document.data
    if not isinstance(raw, Mapping):
        raise InvalidAgentError(f"{path}: expected a mapping with a 'tokens' list", field="path")
    try:
        return AclConfig(**{str(key): value for key, value in raw.items()})
    except InvalidAgentError as exc:
        raise document.field_error(exc) from exc


async def _list(gateway: ConsulGateway, what: str, path: str) -> list[dict[str, Any]]:
    response = await gateway.get(f"list ACL {what}", path)
    return list(response.body or [])


async def _ensure_policy(
    gateway: ConsulGateway, spec: TokenSpec, existing: Mapping[str, dict[str, Any]]
) -> Change:
    name = rules.policy_name(spec)
    body = rules.policy_body(spec)
    stub = existing.get(name)
    if stub is None:
        await gateway.put(f"create ACL policy {name!r}", "/v1/acl/policy", body)
        log.info("created ACL policy %s", name)
        return "created"
    policy_id = wire.acl_text(stub, "ID")
    current = (await gateway.get(f"read ACL policy {name!r}", f"/v1/acl/policy/{policy_id}")).body
    if rules.policy_up_to_date(current, spec):
        return "unchanged"
    await gateway.put(f"update ACL policy {name!r}", f"/v1/acl/policy/{policy_id}", {**body, "ID": policy_id})
    log.info("updated ACL policy %s", name)
    return "updated"


async def _ensure_token(
    gateway: ConsulGateway, spec: TokenSpec, existing: Mapping[str, dict[str, Any]]
) -> tuple[Change, dict[str, Any]]:
    description = rules.token_description(spec)
    body = rules.token_body(spec)
    stub = existing.get(description)
    if stub is None:
        created = await gateway.put(f"create ACL token {spec.name!r}", "/v1/acl/token", body)
        log.info("created ACL token %s", spec.name)
        return "created", dict(created.body)
    accessor = wire.acl_text(stub, "AccessorID")
    current = (await gateway.get(f"read ACL token {spec.name!r}", f"/v1/acl/token/{accessor}")).body
    if rules.token_up_to_date(current, spec):
        return "unchanged", dict(current)
    updated = await gateway.put(
        f"update ACL token {spec.name!r}", f"/v1/acl/token/{accessor}", {**body, "AccessorID": accessor}
    )
    log.info("updated ACL token %s", spec.name)
    return "updated", dict(updated.body)


def _by_key(items: Sequence[dict[str, Any]], key: str, what: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in items:
        value = wire.acl_text(item, key)
        if value.startswith((rules.NAME_PREFIX, rules.TOKEN_DESCRIPTION_PREFIX)):
            if value in found:
                raise ConsulRequestError(
                    f"provision ACL {what}", 409, f"two ACL {what} share the {key} {value!r}; delete one"
                )
            found[value] = item
    return found


async def provision(gateway: ConsulGateway, config: AclConfig) -> list[ProvisionedToken]:
    """Create or update the policy and token of every entry of ``config``; return the tokens.

    ``gateway`` must carry a token with ``acl = "write"`` (the management token). Entries already as
    specified are left alone. A dns entry with ``set_as_agent_default`` also becomes the default token of
    the Consul agent ``gateway`` talks to (not persisted by Consul unless ``enable_token_persistence``).
    """
    policies = _by_key(await _list(gateway, "policies", "/v1/acl/policies"), "Name", "policies")
    tokens = _by_key(await _list(gateway, "tokens", "/v1/acl/tokens"), "Description", "tokens")
    result: list[ProvisionedToken] = []
    for spec in config.tokens:
        policy_change = await _ensure_policy(gateway, spec, policies)
        token_change, token = await _ensure_token(gateway, spec, tokens)
        change: Change = "unchanged"
        if "created" in (policy_change, token_change):
            change = "created"
        elif "updated" in (policy_change, token_change):
            change = "updated"
        if spec.set_as_agent_default:
            await gateway.put(
                f"set ACL token {spec.name!r} as the agent's default token",
                "/v1/agent/token/default",
                {"Token": wire.acl_text(token, "SecretID")},
            )
        result.append(
            ProvisionedToken(
                name=spec.name,
                kind=spec.kind,
                accessor_id=wire.acl_text(token, "AccessorID"),
                secret_id=wire.acl_text(token, "SecretID"),
                policy=rules.policy_name(spec),
                change=change,
            )
        )
    return result


def tokens_json(tokens: Sequence[ProvisionedToken]) -> str:
    """The tokens as JSON for the operator: ``{name: {kind, accessor_id, secret_id, policy, change}}``."""
    return json.dumps(
        {
            t.name: {
                "kind": t.kind,
                "accessor_id": t.accessor_id,
                "secret_id": t.secret_id,
                "policy": t.policy,
                "change": t.change,
            }
            for t in tokens
        },
        indent=2,
    )


def write_tokens(tokens: Sequence[ProvisionedToken], path: str | Path) -> None:
    """Write :func:`tokens_json` to ``path``, readable by its owner only (0600), replacing it atomically.

    The secrets go first to a temporary file that :func:`tempfile.mkstemp` creates in the target's folder
    (an unpredictable name, ``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600 from the start), which is then
    renamed over ``path``: another local user who can write the folder can neither pre-create nor link the
    file the secrets are written to, and a link planted at ``path`` is replaced, never written through.
    """
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(tokens_json(tokens) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
