"""What keeps this library's writes whole: per-agent write locks, who holds an id, whether an agent's catalog
entry is still the one its client registered, the KV entries of a registration Consul refused, and KV
metadata and cards no agent uses any more.

Each is a few reads through the gateway, kept off the hot path: the holder check runs once per new
registration, the entry check every ``verify_every`` heartbeats, the reaper when called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from consul_agents import _wire as wire
from consul_agents._errors import (
    ConsulAgentsError,
    ConsulRequestError,
    PermissionDeniedError,
    RegistryTimeoutError,
)
from consul_agents._gateway import ConsulGateway, time_left
from consul_agents._models import SERVICE_PREFIX, AgentRegistration

__all__ = [
    "AgentLocks",
    "delete_metadata",
    "drop_unused_metadata",
    "id_holder",
    "local_node",
    "metadata_index",
    "node_name",
    "reap_metadata",
    "registration_conflict",
    "undo_refused_registration",
]

log = logging.getLogger("consul_agents.registry")


class AgentLocks:
    """One asyncio.Lock per agent id, alive only while someone holds or awaits it (so never more locks than
    writes in flight). Serialising a process's writes to one agent means a heartbeat that re-publishes the
    load can never land after a deregistration of the same agent and bring it back."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, agent_id: str) -> AsyncIterator[None]:
        """Hold the agent's lock; a caller waits for it at most what is left of its own deadline (not the
        holder's): RegistryTimeoutError then, the holder going on."""
        lock, users = self._locks.setdefault(agent_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            left = time_left()
            try:
                async with asyncio.timeout(None if left is None else max(left, 0.0)) as scope:
                    await lock.acquire()
            except TimeoutError:
                if not scope.expired():
                    raise
                raise RegistryTimeoutError(
                    f"another write of agent {agent_id!r} by this client did not end within the call's "
                    "deadline (writes of one agent run one at a time)"
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[agent_id]


async def metadata_index(
    gateway: ConsulGateway, operation: str, agent_type: str, agent_id: str
) -> int | None:
    """The ModifyIndex of an agent's KV metadata entry; None when there is none, or when the token has no
    KV access on the type (it cannot have written any then)."""
    try:
        current = await gateway.get(
            operation, f"/v1/kv/{wire.metadata_key(agent_type, agent_id)}", allow_404=True
        )
    except PermissionDeniedError:
        return None
    return wire.kv_modify_index(current.body)


async def drop_unused_metadata(
    gateway: ConsulGateway, operation: str, agent_id: str, agent_type: str, index: int
) -> None:
    """Remove the KV metadata of ``agent_id`` under ``agent_type`` as it was at ``index`` (older, larger
    metadata may hold secrets), unless the local Consul agent's registration of that id now points at it.

    ``index`` is read before the caller's own service write; the deletion is a check-and-set on it. So a
    registration by another client that writes the entry after that read (it writes the entry, then its
    service, then the entry again) always keeps its entry: either the index moved and the deletion fails,
    or the deletion lands before its second write, which puts the entry back.
    """
    local = await gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
    if local.status != 404 and wire.local_agent_type(local.body) == (agent_type, True):
        return
    await gateway.delete(
        operation, f"/v1/kv/{wire.metadata_key(agent_type, agent_id)}", params={"cas": index}
    )


async def undo_refused_registration(
    gateway: ConsulGateway, operation: str, registration: AgentRegistration, agent_id: str
) -> None:
    """After Consul refused a registration's card or service write: delete the KV metadata entry and the
    A2A card it wrote before, so the refusal leaves nothing half-written, unless the local Consul agent's
    registration of the id (this client's earlier one, or another client's) uses them.

    Like :func:`drop_unused_metadata`, each index is read before the local registration and the deletion
    is a check-and-set on it: a registration of the same id in flight (entry, service, entry again) keeps
    its entry. Best effort: what cannot be read or deleted here (a token that may not read the local
    registration, Consul gone) stays for :func:`reap_metadata`.
    """
    agent_type = registration.agent_type
    in_kv = wire.encode_metadata(registration.metadata, private=registration.private_metadata)[1] is not None
    card_digest = None if registration.card_fields is None else registration.card_fields.digest
    keys = [wire.metadata_key(agent_type, agent_id)] if in_kv else []
    if card_digest is not None:
        keys.append(wire.card_key(agent_type, agent_id, card_digest))
    try:
        indexes = {}
        for key in keys:
            try:
                current = await gateway.get(operation, f"/v1/kv/{key}", allow_404=True)
            except PermissionDeniedError:
                continue  # the key whose write was refused: nothing was written there
            index = wire.kv_modify_index(current.body)
            if index is not None:
                indexes[key] = index
        if not indexes:
            return
        local = await gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
        if local.status != 404:
            local_type, in_kv = wire.local_agent_type(local.body)
            if local_type == agent_type:
                if in_kv:
                    indexes.pop(wire.metadata_key(agent_type, agent_id), None)
                digest = wire.local_card_digest(local.body)
                if digest == card_digest and card_digest is not None:
                    indexes.pop(wire.card_key(agent_type, agent_id, card_digest), None)
        for key, index in indexes.items():
            await gateway.delete(operation, f"/v1/kv/{key}", params={"cas": index})
    except ConsulAgentsError as exc:
        log.warning(
            "agent %s: could not remove the KV entries of a refused registration (reap-metadata will): %s",
            agent_id,
            exc,
        )


async def delete_metadata(
    gateway: ConsulGateway, operation: str, agent_type: str, agent_id: str, *, required: bool
) -> None:
    """Delete an agent's KV metadata; when its registration did not use KV (``required`` False), a token
    without KV access on the type is no error: it cannot have written any."""
    try:
        await gateway.delete(operation, f"/v1/kv/{wire.metadata_key(agent_type, agent_id)}")
    except PermissionDeniedError:
        if required:
            raise


async def id_holder(
    gateway: ConsulGateway, agent_id: str, service_name: str, node: str | None
) -> tuple[str, str] | None:
    """(id, service name) of a service other than ``service_name`` holding ``agent_id`` in any case, as far
    as the token can see; None when no such service is visible.

    With the local Consul agent's ``node`` known, one read-only transaction fetches the node's catalog
    entry for the id: Consul matches it whatever its case (which is how a case twin made agents vanish),
    and sees entries the agent endpoints do not know (catalog-only ones), at a cost independent of the
    fleet's size. Ids on other nodes are other entries and cannot be overwritten from here. Without the
    node, ``/v1/health/state/any`` is scanned instead (every check of the datacenter: once per client).
    """
    operation = f"check who holds agent id {agent_id!r}"
    if node is not None:
        held = wire.txn_service_id(await _catalog_entry(gateway, operation, node, agent_id))
        holders = {} if held is None else {held[0]: held[1]}
    else:
        catalog = await gateway.get(
            operation, "/v1/health/state/any", params={"filter": wire.id_filter(agent_id, "ServiceID")}
        )
        holders = wire.id_holders(catalog.body, "ServiceName", "ServiceID")
    for held_id, name in sorted(holders.items()):
        if name != service_name or held_id != agent_id:
            return held_id, name
    return None


async def _catalog_entry(gateway: ConsulGateway, operation: str, node: str, agent_id: str) -> Any:
    """The read-only transaction fetching a node's catalog entry for an id; None when there is none (Consul
    answers 409 "doesn't exist", or, with ACLs, an empty result for an entry the token cannot read)."""
    try:
        response = await gateway.put(operation, "/v1/txn", wire.txn_get_service(node, agent_id))
    except ConsulRequestError as exc:
        if exc.status == 409 and "doesn't exist" in str(exc):
            return None
        raise
    return response.body


async def node_name(gateway: ConsulGateway) -> str | None:
    """The node of the local Consul agent from ``/v1/agent/self``; None when the token may not read it
    (``agent:read``: registrars may not)."""
    try:
        response = await gateway.get("find the local Consul agent's node", "/v1/agent/self")
    except PermissionDeniedError:
        return None
    return wire.agent_node_name(response.body)


async def local_node(gateway: ConsulGateway, agent_id: str) -> str | None:
    """The node of the local Consul agent, read from the agent's own TTL check (``/v1/agent/self`` needs
    ``agent:read``, which a registrar does not have)."""
    response = await gateway.get(
        f"find the node of agent {agent_id!r}",
        "/v1/agent/checks",
        params={"filter": f"CheckID == {wire.quote(wire.check_id(agent_id))}"},
    )
    return wire.check_node(response.body)


async def registration_conflict(
    gateway: ConsulGateway, node: str, agent_id: str, expected: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """Why the catalog's entry of ``agent_id`` on ``node`` is no longer the ``expected`` service definition
    (None when it still is), and the name of the other service now holding the id when the token can see
    one. One read-only transaction: no Raft write, no ``node:read`` needed."""
    body = await _catalog_entry(gateway, f"verify the registration of agent {agent_id!r}", node, agent_id)
    holder = wire.txn_service_name(body)
    return wire.registration_mismatch(body, expected), (
        holder if holder is not None and holder != expected.get("Name") else None
    )


async def reap_metadata(
    gateway: ConsulGateway, *, dry_run: bool = False, agent_id: str | None = None
) -> list[str]:
    """Delete the KV metadata entries and A2A Agent Cards no agent uses any more; returns their keys.

    A metadata entry is in use when the catalog holds an agent with that id and type whose Meta says its
    metadata is in KV; a card, when such an agent's Meta names that card's digest. Others are left by
    agents Consul reaped, deregistered by hand, re-registered with small metadata or another card, or by a
    process that died between two writes. Each deletion is a check-and-set on the entry's index, so an
    entry rewritten meanwhile (a registration in flight) stays. Needs a token that reads nodes, agents and
    KV of the types reaped and writes their KV (an operator token): Consul hides health entries from a
    token without ``node:read``, which would make every entry look unused, so that is refused.
    ``agent_id`` limits it to that id's entries (of any type).
    """
    operation = "reap agent metadata"
    nodes = await gateway.get(operation, "/v1/catalog/nodes")
    if not nodes.body:
        raise PermissionDeniedError(
            operation,
            "the token cannot read nodes, so it cannot tell which agents exist: use an operator token",
        )
    listing = await gateway.get(operation, f"/v1/kv/{wire.KV_PREFIX}", params={"keys": ""}, allow_404=True)
    # (key, type, id, None for metadata or the card's digest)
    entries: list[tuple[str, str, str, str | None]] = [
        (key, agent_type, entry_id, None) for key, agent_type, entry_id in wire.metadata_keys(listing.body)
    ]
    entries += wire.card_keys(listing.body)
    in_use: dict[str, set[tuple[str, str | None]]] = {}
    reaped: list[str] = []

    async def users(agent_type: str, agent_id: str | None = None) -> set[tuple[str, str | None]]:
        """What the type's agents use: (id, None) for metadata in KV, (id, digest) for a card (only
        ``agent_id``'s, when given)."""
        only = {} if agent_id is None else {"filter": f"Service.ID == {wire.quote(agent_id)}"}
        health = await gateway.get(
            operation,
            f"/v1/health/service/{SERVICE_PREFIX}{agent_type}",
            params=only,
            decode=wire.health_entries,
        )
        used: set[tuple[str, str | None]] = {(used_id, None) for used_id in wire.ids_using_kv(health.body)}
        return used | set(wire.card_digests(health.body))

    for key, agent_type, entry_id, digest in entries:
        if agent_id is not None and entry_id != agent_id:
            continue
        if agent_type not in in_use:
            in_use[agent_type] = await users(agent_type)
        if (entry_id, digest) in in_use[agent_type]:
            continue
        current = await gateway.get(operation, f"/v1/kv/{key}", allow_404=True)
        index = wire.kv_modify_index(current.body)
        # Asked again after reading the index: a registration that wrote the entry before the first
        # answer may have registered its agent since (the check-and-set then covers anything later).
        if index is None:
            continue
        if (entry_id, digest) in await users(agent_type, entry_id):
            continue
        if not dry_run:
            deleted = await gateway.delete(operation, f"/v1/kv/{key}", params={"cas": index})
            if deleted.body is not True:
                continue
        what = "metadata" if digest is None else "card"
        log.info("reaped %s of agent %s (type %s): no agent uses it", what, entry_id, agent_type)
        reaped.append(key)
    return reaped
