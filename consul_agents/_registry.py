"""AgentRegistry: register, heartbeat, discover, inspect and deregister agents, with Consul as the only store.

Reads (``discover_agents``, ``get_agent``, ``get_agent_status``) all come from Consul's catalog through
``/v1/health/service``, so they agree with each other and work through any Consul agent of the datacenter.
Writes that concern one agent (register, heartbeat, deregister) go to the local Consul agent, which owns
the agent's TTL check and keeps the catalog in sync (anti-entropy).

Heartbeat cost: a TTL update costs a Consul agent with a data dir a state-file write (about a millisecond
of its CPU) even when nothing changed. Agents registered with ``liveness="process"`` share one TTL check
per process and type (see :mod:`consul_agents._liveness`); their heartbeats write only what changed.
The load is re-published (one catalog write) only when it has moved by at least ``load_threshold`` since
the last report, or reached 0 or 1.

Identity and integrity (see :mod:`consul_agents._integrity`): ids are lowercase; a new registration is
refused when another service holds its id; a process's writes to one agent hold that agent's lock, so a
deregistration that returned True is never undone by a heartbeat; KV metadata follows the registration that
uses it; and every ``verify_every`` heartbeats the client checks that the catalog still holds what it
registered, reporting a conflict (log, metric, ``AgentSession.conflict``) instead of believing all is well.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self

from cachetools import LRUCache

from consul_agents import _batch as batch
from consul_agents import _card_ops as cards
from consul_agents import _integrity as integrity
from consul_agents import _pool_ops as pool_ops
from consul_agents import _wire as wire
from consul_agents._cache import WatchBudget
from consul_agents._cards import CardError, CardPolicy, CardVerifier
from consul_agents._discovery import Discoverer
from consul_agents._errors import (
    AgentNotFoundError,
    ConsulAgentsError,
    ConsulRequestError,
    InvalidAgentError,
    NoAgentAvailableError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from consul_agents._gateway import ConsulGateway, detach_deadline
from consul_agents._instrument import instrumented
from consul_agents._lease import OutlierDetector, OutlierPolicy
from consul_agents._lease_retry import ANY_EXCEPTION, Lease
from consul_agents._liveness import ProcessLiveness
from consul_agents._metrics import record_conflict
from consul_agents._models import (
    AGENT_ID_PATTERN,
    AgentInfo,
    AgentRegistration,
    AgentStatus,
    DiscoveryRequest,
    DiscoveryResult,
    SelectionCriteria,
    normalise_agent_id,
    utcnow,
)
from consul_agents._pools import PoolSettings, PoolStatus, lease_ended, lease_started
from consul_agents._replace import Replacement, replace_agent
from consul_agents._selection import SelectionState, select, selection_key
from consul_agents._settings import ConsulSettings
from consul_agents._tracing import annotate
from consul_agents._watch import WatchPolicy

__all__ = ["AgentRegistry", "AgentSession"]

log = logging.getLogger("consul_agents.registry")


@dataclass
class _Registered:
    """What this client remembers of an agent it registered: enough to re-register it after a loss."""

    registration: AgentRegistration
    reported_load: float
    #: The status this client last sent; None until its first heartbeat (a re-registration keeps Consul's).
    sent_status: AgentStatus | None = None
    #: Heartbeats since the catalog entry was last verified.
    beats: int = 0
    #: The local Consul agent's node, once known (for verifying the catalog entry).
    node: str | None = None
    #: What the last verification found wrong with the catalog entry; None when all was well.
    conflict: str | None = None
    #: The other service the last verification found holding the id; heartbeats stop touching it then.
    holder: str | None = None
    #: Whether this client marked it draining (restored with the registration after a loss).
    draining: bool = False
    #: The anchor the agent's alias check follows (process liveness, see _liveness), or its HTTP check
    #: (see _liveness_http); None: its own TTL.
    anchor: str | wire.HttpAlive | None = None
    #: The output this client last sent (an anchored agent's check is updated only when it changes).
    sent_output: str | None = None
    #: The local Consul agent lost the agent's anchor: the next heartbeat re-registers the agent.
    lost: bool = False


def _check_load(load: float) -> float:
    if not isinstance(load, int | float) or isinstance(load, bool) or math.isnan(load) or not 0 <= load <= 1:
        raise InvalidAgentError(f"invalid load: {load!r} is not a number between 0 and 1", field="load")
    return float(load)


def _check_agent_id(agent_id: str) -> str:
    """The id in its one spelling (lowercase, see _models); refuses ids that no registration could have:
    they end up in URL paths ("../kv/..." would escape)."""
    if not isinstance(agent_id, str) or not AGENT_ID_PATTERN.fullmatch(agent_id):
        raise InvalidAgentError(
            f"invalid agent_id: {agent_id!r} is not an agent id (letters, digits, '-', '_', '.', ':')",
            field="agent_id",
        )
    return normalise_agent_id(agent_id)


def _holder_text(service_name: str) -> str:
    if wire.is_agent_service(service_name):
        return f"an agent of type {wire.agent_type_of(service_name)!r}"
    return f"the Consul service {service_name!r}"


def _is_unknown_service(exc: ConsulRequestError) -> bool:
    """With ACLs on, Consul 1.8 answers 500 "Unknown service" for a service its agent does not know."""
    return exc.status == 500 and "Unknown service" in str(exc)


def _is_unknown_check(exc: ConsulRequestError) -> bool:
    """Consul 1.8 answers 500 "does not have associated TTL", newer ones 404 "Unknown check ID"."""
    return exc.status in (404, 500) and ("associated TTL" in str(exc) or "nknown check" in str(exc))


class AgentRegistry:
    """A client of the agent registry. Use as ``async with AgentRegistry(...) as registry``.

    With no arguments it reads Consul's own environment variables; explicit arguments win
    (see :mod:`consul_agents._settings` for the full precedence).

    Client layer (see :mod:`consul_agents._discovery`): with ``cache=True`` discovery answers from memory,
    kept current by Consul blocking queries; when Consul cannot be reached the last known state keeps
    answering for ``max_stale`` seconds (each AgentInfo says how stale), then RegistryUnavailableError.
    Watches unused for ``cache_idle`` seconds stop. Without a ``region``, discovery fails over from the
    local datacenter to up to ``max_failover`` others, nearest first or in ``failover_datacenters`` order.
    ``outlier_policy`` governs the passive ejection of agents whose leases keep failing.
    ``stale_reads=True`` lets any Consul server answer direct discovery from its own copy of the catalog
    (``?stale``), so discovery keeps working while the servers elect a leader, at the price of answers that
    may lag the leader by a few milliseconds (the cache's watches always read stale).
    ``card_verifier`` checks A2A Agent Card signatures (see ``consul_agents.a2a.card_verifier``): readers
    then see whether each card verified; with ``require_signed_cards`` unsigned or badly signed cards are
    refused at registration.
    """

    #: Every this many heartbeats of an agent it registered, the client verifies that the catalog still
    #: holds what it registered (:meth:`verify_registration`); 0 never does.
    verify_every: int = 12

    def __init__(
        self,
        consul_url: str | None = None,
        token: str | None = None,
        datacenter: str | None = None,
        *,
        ca_cert: str | None = None,
        verify: bool | None = None,
        timeout: float = 10.0,
        load_threshold: float = 0.05,
        rng: random.Random | None = None,
        cache: bool = True,
        max_stale: float = 60.0,
        cache_idle: float = 300.0,
        watch_policy: WatchPolicy | None = None,
        failover_datacenters: Sequence[str] | None = None,
        max_failover: int = 2,
        outlier_policy: OutlierPolicy | None = None,
        stale_reads: bool = False,
        card_verifier: CardVerifier | None = None,
        require_signed_cards: bool = False,
    ) -> None:
        self.settings = ConsulSettings.resolve(
            consul_url, token, datacenter, ca_cert=ca_cert, verify=verify, timeout=timeout
        )
        if not 0 <= load_threshold <= 1:
            raise InvalidAgentError(
                f"load_threshold {load_threshold!r} must be between 0 and 1", field="load_threshold"
            )
        self.load_threshold = load_threshold
        # Discovery from any server's local copy keeps answering while the cluster elects a leader.
        self._discovery_consistency = "stale" if stale_reads else None
        self._gateway = ConsulGateway(self.settings)
        #: Per-agent write locks, shared with with_token views.
        self._write_locks = integrity.AgentLocks()
        self._rng = rng or random.Random()
        if math.isnan(max_stale) or max_stale < 0:
            raise InvalidAgentError(f"max_stale {max_stale!r} must be a number >= 0", field="max_stale")
        if max_failover < 0:
            raise InvalidAgentError(f"max_failover {max_failover!r} must be >= 0", field="max_failover")
        self._client_options: dict[str, Any] = {
            "cache": cache,
            "max_stale": max_stale,
            "cache_idle": cache_idle,
            "watch_policy": watch_policy,
            "failover_datacenters": failover_datacenters,
            "max_failover": max_failover,
            "outlier_policy": outlier_policy,
            "stale_reads": stale_reads,
        }
        #: The registry that owns the connection pool and every watch; None for the owner itself.
        self._parent: AgentRegistry | None = None
        #: Owns every watch of this registry and of its with_token() views (one connection pool).
        self._watch_budget = WatchBudget()
        try:
            self._card_policy = CardPolicy(card_verifier, require_signed_cards)
        except CardError as exc:
            raise InvalidAgentError(str(exc), field="require_signed_cards") from exc
        self._init_client_state()

    def _init_client_state(self, cache_admit_after: int = 1) -> None:
        """What each client keeps for itself (a registry, and each of its with_token() views): its
        registrations, selection state, outlier records and discovery cache."""
        self._registered: dict[str, _Registered] = {}
        #: The local Consul agent's node (None until known) and whether /v1/agent/self was tried for it.
        self._node: str | None = None
        self._node_asked = False
        #: Registrations whose write got no answer (Consul may have applied them), by agent id.
        self._uncertain: dict[str, AgentRegistration] = {}
        self._service_names: LRUCache[str, str] = LRUCache(maxsize=10_000)
        self._selection = SelectionState()
        self.outliers = OutlierDetector(self._client_options["outlier_policy"])
        skip = ("outlier_policy", "stale_reads")
        options = {k: v for k, v in self._client_options.items() if k not in skip}
        self._discovery = Discoverer(
            self._gateway,
            consistency=self._discovery_consistency,
            watch_budget=self._watch_budget,
            cache_admit_after=cache_admit_after,
            **options,
        )
        #: A2A Agent Cards read by this client, by digest (per client: per token).
        self._cards = cards.CardCache(self._card_policy)
        #: The anchors of the agents this client keeps alive as long as its process (see _liveness).
        self._liveness = ProcessLiveness(self._gateway, self._anchor_lost, self.settings)
        self._recovering: set[asyncio.Task[None]] = set()

    def _anchor_lost(self, agent_ids: set[str]) -> None:
        """The local Consul agent had lost an anchor (a restart): re-register its agents now, each in a task
        of its own, rather than at their next heartbeat."""
        for agent_id in agent_ids:
            known = self._registered.get(agent_id)
            if known is not None:
                known.lost = True
                task = asyncio.create_task(self._recover(agent_id), name=f"recover:{agent_id}")
                self._recovering.add(task)
                task.add_done_callback(self._recovering.discard)

    async def _recover(self, agent_id: str) -> None:
        known = self._registered.get(agent_id)
        if known is None or not known.lost:
            return
        try:
            await self.heartbeat(
                agent_id, status=known.sent_status or AgentStatus.PASSING, output=known.sent_output
            )
        except ConsulAgentsError as exc:
            log.warning(
                "agent %s not re-registered after its anchor was lost (next heartbeat retries): %s",
                agent_id,
                exc,
            )

    def __repr__(self) -> str:
        return f"AgentRegistry(address={self.settings.address!r}, datacenter={self.settings.datacenter!r})"

    async def __aenter__(self) -> Self:
        if self._parent is None:
            await self._gateway.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._reconcile_on_close()
        for task in list(self._recovering):
            task.cancel()
        await self._liveness.close()
        if self._parent is not None:
            closing = self._discovery.release()
            if closing is not None:
                await asyncio.shield(closing)
            return
        await self._discovery.close()
        await self._watch_budget.close()  # the views' watches too: none may outlive the pool
        await self._gateway.close()

    async def _reconcile_on_close(self) -> None:
        if not self._uncertain:
            return
        try:
            await asyncio.wait_for(self.reconcile(), self.settings.timeout)
        except (ConsulAgentsError, TimeoutError) as exc:
            log.warning(
                "%d registration(s) without an answer left unreconciled: %s", len(self._uncertain), exc
            )

    def release(self) -> None:
        """For a with_token() view: its owner no longer needs it. Its cache stops its watches once no
        call still running holds it; a later call answers from Consul directly. The connection pool
        stays open (it is the owning registry's)."""
        self._discovery.release()

    @property
    def gateway(self) -> ConsulGateway:
        return self._gateway

    @property
    def discovery(self) -> Discoverer:
        """The read path: its ``cache`` holds the watches."""
        return self._discovery

    def _wrote(self, agent_id: str, *, registered: bool = False) -> None:
        """After a write by this client, the cache re-reads the agent's service once (read-your-writes);
        after a registration, which may add an agent type or a capability, the list of services too."""
        self._discovery.cache.invalidate(self._service_names.get(agent_id), catalog=registered)

    def with_token(self, token: str | None) -> AgentRegistry:
        """A view acting with ``token`` (None: anonymous) over this registry's connection pool.

        A view is a cheap handle: it shares this registry's connection pool and watch budget, and keeps
        its own client state (remembered registrations, selection state, discovery cache), so nothing
        Consul showed one token is ever served to another (Consul's ACLs filter what each token sees).
        This registry owns the view's watches: closing it stops them. Leaving a view's ``async with``, or
        :meth:`release`, lets the view's cache go once no call of the view is still running.
        """
        view: AgentRegistry = object.__new__(AgentRegistry)
        view.settings = dataclasses.replace(self.settings, token=token or None)
        view.load_threshold = self.load_threshold
        view._discovery_consistency = self._discovery_consistency
        view._gateway = self._gateway.with_token(token)
        view._rng = random.Random(self._rng.getrandbits(64))
        view._client_options = self._client_options
        owner = self._parent or self
        view._parent = owner
        view._watch_budget = owner._watch_budget
        view._card_policy = self._card_policy
        view._write_locks = owner._write_locks
        view.verify_every = self.verify_every
        # A view's cache starts watching from its second discovery: a token seen once (callers cycling
        # through more tokens than a server keeps views for) is answered directly and never starts a
        # watch it would stop again at once (each such start and stop costs Consul a connection).
        view._init_client_state(cache_admit_after=2)
        view._discovery.share_location(owner._discovery)
        return view

    # -- writes -------------------------------------------------------------------------------------------
    #
    # Every write concerning one agent holds that agent's lock (shared with with_token views): a heartbeat
    # that re-publishes the load can never land after a deregistration of the same agent and bring it back.

    @instrumented("register")
    async def register_agent(
        self,
        registration: AgentRegistration,
        *,
        status: AgentStatus = AgentStatus.PASSING,
        liveness: Literal["agent", "process", "http"] = "agent",
    ) -> str:
        """Register (or, for a known id, update) an agent; returns its id, the Consul service ID.

        ``status`` is the health a new agent starts with (an already registered one keeps its own).
        ``liveness="agent"``: each :meth:`heartbeat` resets the agent's own TTL check (whoever sends it, from
        wherever). ``"process"``: the agent lives as long as this process heartbeats its anchor (one TTL
        check per process and type, see :mod:`consul_agents._liveness`); a heartbeat then writes to
        Consul only when the agent's status, output or load changes. Sessions and the sidecar use it.
        ``"http"``: as ``"process"``, but Consul itself checks the agent through this process's health
        server (one HTTP check per agent, no TTL update, see :mod:`consul_agents._liveness_http`).
        An id already held by a service of another type (or, in another case, by any service) is refused
        with InvalidAgentError naming the holder, as far as the token can see it; beyond that, the local
        Consul agent's ACLs refuse a registrar an id held there by a type it cannot write.
        """
        if status is AgentStatus.MAINTENANCE:
            raise InvalidAgentError("invalid status: use set_maintenance() for maintenance", field="status")
        if liveness not in ("agent", "process", "http"):
            raise InvalidAgentError(
                f"invalid liveness {liveness!r}: use 'agent', 'process' or 'http'", field="liveness"
            )
        cards.check_signatures(self._card_policy, registration)
        agent_id = registration.agent_id or f"{registration.agent_type}-{uuid.uuid4().hex[:12]}"
        async with self._write_locks.hold(agent_id):
            await self._settle(agent_id)
            previous = self._registered.get(agent_id)
            if previous is None or previous.registration.service_name != registration.service_name:
                await self._refuse_held_id(agent_id, registration.service_name)
            anchor = (
                await self._liveness.attach(registration, agent_id, http=liveness == "http")
                if liveness != "agent"
                else None
            )
            try:
                await self._write_registration(agent_id, registration, registration.load, status, anchor)
            except ConsulAgentsError as exc:
                if anchor is not None and previous is None and not isinstance(exc, RegistryUnavailableError):
                    await self._liveness.detach(agent_id, clean=True)  # nothing registered aliases it
                if not isinstance(exc, RegistryUnavailableError):
                    raise
                # No answer: Consul may have applied the write all the same. Remember it, so that a later
                # call of this client converges (see _settle) instead of leaving an agent nobody tracks.
                self._uncertain[agent_id] = registration
                exc.add_note(
                    f"agent {agent_id!r} may have been registered nonetheless: this client's next call (or "
                    "reconcile()) re-reads what Consul holds and removes it unless it is heartbeated"
                )
                raise
            if self._node is None:
                # Learnt once from this agent's check, so later id checks cost one transaction.
                with suppress(ConsulAgentsError):
                    await self._local_node(agent_id)
            if anchor is None and self._liveness.anchor_of(agent_id) is not None:
                await self._liveness.detach(agent_id, clean=True)  # its alias went with the rewrite
            self._registered[agent_id] = _Registered(registration, registration.load, anchor=anchor)
            self._service_names[agent_id] = registration.service_name
            self._wrote(agent_id, registered=True)
        return agent_id

    async def _local_node(self, agent_id: str | None = None) -> str | None:
        """The local Consul agent's node: from /v1/agent/self (once), else from ``agent_id``'s own check."""
        if self._node is None and not self._node_asked:
            self._node_asked = True
            self._node = await integrity.node_name(self._gateway)
        if self._node is None and agent_id is not None:
            self._node = await integrity.local_node(self._gateway, agent_id)
        return self._node

    async def _refuse_held_id(self, agent_id: str, service_name: str) -> None:
        node = await self._local_node()
        holder = await integrity.id_holder(self._gateway, agent_id, service_name, node)
        if holder is None:
            return
        held_id, name = holder
        who = _holder_text(name)
        spelled = "" if held_id == agent_id else f" (as {held_id!r}; Consul matches ids whatever their case)"
        raise InvalidAgentError(
            f"invalid agent_id: {agent_id!r} is already held by {who}{spelled}; "
            "deregister that one first or choose another id",
            field="agent_id",
        )

    async def _settle(self, agent_id: str | None) -> None:
        """Converge the registrations whose write got no answer, before another write of this client.

        The one this call names is adopted (its caller still means that agent: a heartbeat re-registers
        it if Consul never got it); the others are reconciled.
        """
        if not self._uncertain:
            return
        registration = self._uncertain.pop(agent_id, None) if agent_id is not None else None
        if registration is not None and agent_id not in self._registered:
            assert agent_id is not None
            anchor = self._liveness.anchor_of(agent_id)
            self._registered[agent_id] = _Registered(registration, registration.load, anchor=anchor)
            self._service_names[agent_id] = registration.service_name
        if self._uncertain:
            try:
                await self.reconcile()
            except ConsulAgentsError as exc:
                log.warning("reconciling registrations without an answer failed (retried later): %s", exc)

    async def reconcile(self) -> list[str]:
        """Re-read what Consul holds for each registration of this client that got no answer (a timeout:
        Consul may have applied it) and remove what is there, the agent and its KV metadata: its caller
        was told the registration failed, so nobody would heartbeat or deregister it. Returns the ids
        removed. Runs by itself before this client's next register, heartbeat or deregister, and on
        close."""
        removed = []
        for agent_id, registration in list(self._uncertain.items()):
            operation = f"reconcile agent {agent_id!r}"
            local = await self._gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
            if local.status != 404:
                await self._gateway.put(operation, f"/v1/agent/service/deregister/{agent_id}")
                removed.append(agent_id)
            kv_value = wire.encode_metadata(registration.metadata, private=registration.private_metadata)[1]
            if kv_value is not None:
                key = wire.metadata_key(registration.agent_type, agent_id)
                await self._gateway.delete(operation, f"/v1/kv/{key}")
            if registration.card is not None:
                await cards.delete_cards(self._gateway, operation, registration.agent_type, agent_id)
            self._uncertain.pop(agent_id, None)
            await self._liveness.detach(agent_id, clean=True)
            self._wrote(agent_id)
        return removed

    async def _write_registration(
        self,
        agent_id: str,
        registration: AgentRegistration,
        load: float,
        status: AgentStatus = AgentStatus.PASSING,
        anchor: str | wire.HttpAlive | None = None,
    ) -> None:
        """KV first, then the service, so a reader never finds Meta pointing at KV with nothing there; then
        the KV entry once more, in case another client's deregistration, re-registration or reap removed it
        between the two writes (see integrity.drop_unused_metadata for why this closes the race).

        Registered with metadata that fits in Meta, the agent's former KV entry (this client's, or
        another's) is removed. An A2A card follows the same order under its digest's key (see _card_ops);
        the one it replaces is removed. A service write Consul refuses removes the entry and the card it
        wrote unless the local registration of the id uses them (see integrity.undo_refused_registration);
        what a crash leaves, the reaper removes.
        """
        _, kv_value = wire.encode_metadata(registration.metadata, private=registration.private_metadata)
        operation = f"register agent {agent_id!r}"
        previous = self._registered.get(agent_id)
        kv_path = f"/v1/kv/{wire.metadata_key(registration.agent_type, agent_id)}"
        if kv_value is not None:
            await self._gateway.put(operation, kv_path, kv_value)
        old_types = [] if kv_value is not None else [registration.agent_type]
        if previous is not None and previous.registration.agent_type != registration.agent_type:
            old_types.append(previous.registration.agent_type)
        stale: list[tuple[str, int]] = []
        for agent_type in old_types:  # indexes read before the service write: see drop_unused_metadata
            index = await integrity.metadata_index(self._gateway, operation, agent_type, agent_id)
            if index is not None:
                stale.append((agent_type, index))
        body = wire.service_definition(
            registration, agent_id, load=load, heartbeat=utcnow(), status=status, anchor=anchor
        )
        replacing = previous.registration if previous is not None else None
        try:
            await cards.write_card(self._gateway, operation, registration, agent_id, replacing=replacing)
            await self._gateway.put(operation, "/v1/agent/service/register", body)
        except (PermissionDeniedError, ConsulRequestError):
            # Refused (no answer is an unknown outcome, which reconcile() settles): undo the KV writes.
            await integrity.undo_refused_registration(self._gateway, operation, registration, agent_id)
            raise
        if kv_value is not None:
            await self._gateway.put(operation, kv_path, kv_value)
        # Once more, like the metadata: another client's deregistration of the id may have removed it.
        await cards.write_card(self._gateway, operation, registration, agent_id)
        for agent_type, index in stale:
            await integrity.drop_unused_metadata(self._gateway, operation, agent_id, agent_type, index)
        await cards.drop_replaced_card(self._gateway, operation, registration, replacing, agent_id)

    @instrumented("heartbeat")
    async def heartbeat(
        self,
        agent_id: str,
        load: float | None = None,
        *,
        status: AgentStatus = AgentStatus.PASSING,
        output: str | None = None,
    ) -> None:
        """Prove the agent alive (resets its TTL) and report its load.

        Re-registers the agent from its last registration if Consul lost it (agent restart, reaping).
        Raises AgentNotFoundError if it is gone and this client never registered it, or deregistered it.
        Every ``verify_every`` heartbeats of an agent it registered, the client checks that the catalog
        still holds what it registered (see :meth:`registration_conflict`).
        """
        agent_id = _check_agent_id(agent_id)
        if load is not None:
            load = _check_load(load)
        if status is AgentStatus.MAINTENANCE:
            raise InvalidAgentError("invalid status: use set_maintenance() for maintenance", field="status")
        async with self._write_locks.hold(agent_id):
            await self._settle(agent_id)
            await self._heartbeat(agent_id, load, status, output)

    async def _heartbeat(
        self, agent_id: str, load: float | None, status: AgentStatus, output: str | None
    ) -> None:
        operation = f"heartbeat agent {agent_id!r}"
        known = self._registered.get(agent_id)
        if known is not None and known.holder is not None:
            # Another service holds the id (its TTL check has the same ID as ours): keep off it until a
            # verification finds the agent's own entry again.
            await self._verify(agent_id)
            if known.holder is not None:
                raise InvalidAgentError(
                    f"invalid agent_id: {agent_id!r} is now held by {_holder_text(known.holder)}: "
                    f"{known.conflict}; not heartbeating it",
                    field="agent_id",
                )
        path = f"/v1/agent/check/update/{wire.check_id(agent_id)}"
        body = wire.ttl_update(status, output)
        try:
            if known is None or not self._unchanged(known, status, output) or self._unchecked(agent_id):
                await self._gateway.put(operation, path, body)
        except ConsulRequestError as exc:
            if not _is_unknown_check(exc):
                raise
            known = self._registered.get(agent_id)
            if known is None:
                raise AgentNotFoundError(agent_id, "no TTL check on the local Consul agent") from exc
            try:
                # While it was gone, another agent may have taken its id: never overwrite that one.
                await self._refuse_held_id(agent_id, known.registration.service_name)
            except InvalidAgentError as taken:
                self._note_conflict(agent_id, known, f"it was missing from Consul and {taken}")
                raise
            log.warning("agent %s was missing from Consul; re-registering it", agent_id)
            reported = known.reported_load if load is None else load
            await self._write_registration(agent_id, known.registration, reported, status, known.anchor)
            known.reported_load = reported
            known.node = None
            if known.draining:
                await cards.set_draining(self, agent_id, True)
            await self._gateway.put(operation, path, body)
            wrote = True
        else:
            wrote = False
        if load is not None:
            wrote = await self._report_load(agent_id, load) or wrote
        # Read-your-writes only where Consul wrote something: invalidating on every heartbeat would turn
        # the cached reads of a process that also heartbeats into direct Consul queries.
        known = self._registered.get(agent_id)
        if known is None:
            wrote = wrote or status is not AgentStatus.PASSING
        else:
            wrote = wrote or known.sent_status is not status
            known.sent_status = status
            known.sent_output = output
            known.lost = False
            known.beats += 1
            if self.verify_every and known.beats >= self.verify_every:
                known.beats = 0
                await self._verify(agent_id)
        if wrote:
            self._wrote(agent_id)

    @staticmethod
    def _unchanged(known: _Registered, status: AgentStatus, output: str | None) -> bool:
        """Whether an anchored agent's own check already holds this status and output: its anchor, not
        this heartbeat, proves it alive (see _liveness), so there is nothing to send."""
        return (
            known.anchor is not None
            and not known.lost
            and known.sent_status is status
            and known.sent_output == output
        )

    def _unchecked(self, agent_id: str) -> bool:
        """An HTTP-liveness agent Consul stopped checking: send its check's update, so that Consul's
        "unknown check" answer has it re-registered (see _liveness_http)."""
        return self._liveness.http.unchecked(agent_id)

    def _load_changed(self, previous: float, load: float) -> bool:
        if load == previous:
            return False
        return abs(load - previous) >= self.load_threshold or load in (0.0, 1.0)

    async def _report_load(self, agent_id: str, load: float) -> bool:
        """Publish ``load`` if it moved enough; True when that wrote to Consul."""
        operation = f"report load of agent {agent_id!r}"
        known = self._registered.get(agent_id)
        if known is not None:
            if not self._load_changed(known.reported_load, load):
                return False
            # A re-registration overwrites whatever holds the id on the local Consul agent: make sure it
            # is still this agent (Consul may have reaped it and another type taken the id).
            local = await self._gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
            service = wire.local_service_name(local.body) if local.status != 404 else None
            if service is not None and service != known.registration.service_name:
                known.holder = service
                self._note_conflict(
                    agent_id, known, f"the local Consul agent holds it as {_holder_text(service)}"
                )
                raise InvalidAgentError(
                    f"invalid agent_id: {agent_id!r} is now held by {_holder_text(service)}; "
                    "not re-publishing its load over it",
                    field="agent_id",
                )
            body = wire.service_definition(
                known.registration, agent_id, load=load, heartbeat=utcnow(), anchor=known.anchor
            )
            await self._gateway.put(operation, "/v1/agent/service/register", body)
            known.reported_load = load
            return True
        response = await self._gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
        if response.status == 404:
            raise AgentNotFoundError(agent_id, "not registered with the local Consul agent")
        if not self._load_changed(wire.reported_load(response.body), load):
            return False
        body = wire.with_load(response.body, load=load, heartbeat=utcnow())
        await self._gateway.put(operation, "/v1/agent/service/register", body)
        # Another process may have deregistered the agent between the read and the write, which then
        # re-created it without its TTL check: passing forever. Its check tells; undo the write then.
        checks = await self._gateway.get(
            operation,
            "/v1/agent/checks",
            params={"filter": f"CheckID == {wire.quote(wire.check_id(agent_id))}"},
        )
        if not checks.body:
            await self._gateway.put(operation, f"/v1/agent/service/deregister/{agent_id}")
            raise AgentNotFoundError(agent_id, "deregistered while its load was being reported")
        return True

    # -- whether the catalog still holds what this client registered -------------------------------------

    async def _verify(self, agent_id: str) -> None:
        """Verify in passing: a failure to verify is not a failure of the heartbeat that triggered it."""
        try:
            await self.verify_registration(agent_id)
        except ConsulAgentsError as exc:
            log.debug("could not verify the registration of agent %s: %s", agent_id, exc)

    async def verify_registration(self, agent_id: str) -> str | None:
        """Check now that the catalog still holds the agent as this client registered it: same service name
        (type), address and port. Returns why not (also kept for :meth:`registration_conflict`), or None.

        On Consul before the 2.0 line (fixed upstream by hashicorp/consul PR 23560), a token that may write
        one service name can overwrite any service by ID through ``PUT /v1/txn``; the owner's local Consul
        agent keeps answering its heartbeats while the catalog serves the intruder. A conflict is logged
        at WARNING and counted in ``consul_agents_registration_conflicts``. Costs one read-only transaction
        (no Raft write), plus one read of the local agent's checks the first time.
        """
        agent_id = _check_agent_id(agent_id)
        known = self._registered.get(agent_id)
        if known is None:
            raise AgentNotFoundError(agent_id, "this client did not register it")
        if known.node is None:
            known.node = self._node or await integrity.local_node(self._gateway, agent_id)
            if known.node is None:
                raise AgentNotFoundError(agent_id, "no TTL check on the local Consul agent")
        expected = wire.service_definition(
            known.registration, agent_id, load=known.reported_load, heartbeat=utcnow()
        )
        conflict, known.holder = await integrity.registration_conflict(
            self._gateway, known.node, agent_id, expected
        )
        if conflict is not None:
            self._note_conflict(agent_id, known, conflict)
        elif known.conflict is not None:
            log.info("agent %s holds its registration again", agent_id)
            known.conflict = None
        return conflict

    @staticmethod
    def _note_conflict(agent_id: str, known: _Registered, conflict: str) -> None:
        """Keep what is wrong with an agent's registration; log and count it when it newly goes wrong."""
        if known.conflict is None:
            log.warning("agent %s no longer holds its registration: %s", agent_id, conflict)
            record_conflict(known.registration.agent_type)
        known.conflict = conflict

    def registration_conflict(self, agent_id: str) -> str | None:
        """What the last verification of an agent this client registered found wrong (None: nothing, or
        not verified yet). See :meth:`verify_registration`."""
        known = self._registered.get(normalise_agent_id(agent_id))
        return None if known is None else known.conflict

    @instrumented("set_maintenance")
    async def set_maintenance(self, agent_id: str, enable: bool, reason: str = "") -> None:
        """Put an agent in (or take it out of) maintenance: it is then never discovered unless asked for.

        Raises AgentNotFoundError when the local Consul agent does not know it.
        """
        agent_id = _check_agent_id(agent_id)
        params: dict[str, Any] = {"enable": "true" if enable else "false"}
        if reason:
            params["reason"] = reason
        async with self._write_locks.hold(agent_id):
            try:
                response = await self._gateway.put(
                    f"set maintenance of agent {agent_id!r}",
                    f"/v1/agent/service/maintenance/{agent_id}",
                    params=params,
                    allow_404=True,
                )
            except ConsulRequestError as exc:
                # Consul 1.8 answers 500 "Unknown service"; newer ones 404.
                if _is_unknown_service(exc):
                    raise AgentNotFoundError(agent_id, "not registered with the local Consul agent") from exc
                raise
            if response.status == 404:
                raise AgentNotFoundError(agent_id, "not registered with the local Consul agent")
            self._wrote(agent_id)

    @instrumented("deregister", empty_outcome="not_found")
    async def deregister_agent(self, agent_id: str) -> bool:
        """Remove an agent and its KV metadata. Returns False when it was not registered (anywhere in the
        catalog). Once it returns True, no heartbeat of this process brings the agent back.

        Consul answers 200 to deregistering an unknown id, so for an agent this client did not register the
        local Consul agent is asked first; for its own agents that extra round trip is skipped.
        """
        agent_id = _check_agent_id(agent_id)
        async with self._write_locks.hold(agent_id):
            await self._settle(agent_id)
            return await self._deregister(agent_id)

    async def _deregister(self, agent_id: str) -> bool:
        operation = f"deregister agent {agent_id!r}"
        # Forgotten before the request: whatever happens to it (even cancellation), no later heartbeat of
        # this client re-registers the agent from memory. It is remembered again only on a clear failure.
        known = self._registered.pop(agent_id, None)
        if known is not None:
            try:
                await self._gateway.put(operation, f"/v1/agent/service/deregister/{agent_id}")
            except ConsulRequestError as exc:
                # Already gone (reaped, or removed by another client): without ACLs Consul answers 200.
                if not _is_unknown_service(exc):
                    self._registered[agent_id] = known
                    raise
                removed = False
            except ConsulAgentsError:
                self._registered[agent_id] = known
                raise
            else:
                removed = True
            self._forget(agent_id)
            await self._liveness.detach(agent_id, clean=True)
            registration = known.registration
            kv_value = wire.encode_metadata(registration.metadata, private=registration.private_metadata)[1]
            await integrity.delete_metadata(
                self._gateway, operation, registration.agent_type, agent_id, required=kv_value is not None
            )
            if registration.card is not None:
                await cards.delete_cards(self._gateway, operation, registration.agent_type, agent_id)
            return removed
        local = await self._gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
        if local.status == 404:
            self._forget(agent_id)
            try:
                info = await self.get_agent(agent_id)
            except AgentNotFoundError:
                # Consul may have reaped it and left its metadata: remove that, if this token can tell.
                with suppress(PermissionDeniedError):
                    await integrity.reap_metadata(self._gateway, agent_id=agent_id)
                return False
            raise ConsulRequestError(
                operation,
                404,
                f"agent is registered through the Consul agent of node {info.node!r}; deregister it there",
            )
        await self._gateway.put(operation, f"/v1/agent/service/deregister/{agent_id}")
        self._forget(agent_id)
        agent_type, in_kv = wire.local_agent_type(local.body)
        if agent_type is not None:
            # Whatever its Meta says now: an earlier registration may have left larger metadata there.
            await integrity.delete_metadata(self._gateway, operation, agent_type, agent_id, required=in_kv)
            if wire.local_has_card(local.body):
                await cards.delete_cards(self._gateway, operation, agent_type, agent_id)
        return True

    def _forget(self, agent_id: str) -> None:
        self._wrote(agent_id)
        self._registered.pop(agent_id, None)
        self._service_names.pop(agent_id, None)

    async def reap_metadata(self, *, dry_run: bool = False) -> list[str]:
        """Delete KV metadata that no registered agent uses (left by agents Consul reaped, or deregistered
        or re-registered elsewhere); returns the keys. Needs an operator token (see
        :func:`consul_agents._integrity.reap_metadata`)."""
        return await integrity.reap_metadata(self._gateway, dry_run=dry_run)

    # -- reads --------------------------------------------------------------------------------------------

    async def _service_name_of(self, agent_id: str) -> str:
        name = self._service_names.get(agent_id)
        if name is not None:
            return name
        response = await self._gateway.get(
            f"find agent {agent_id!r}",
            "/v1/health/state/any",
            params={"filter": f"ServiceID == {wire.quote(agent_id)}"},
        )
        service = wire.agent_service_of_checks(response.body)
        if service is None:
            raise AgentNotFoundError(agent_id)
        self._service_names[agent_id] = service
        return service

    @instrumented("get_agent")
    async def get_agent(self, agent_id: str) -> AgentInfo:
        """The agent as the catalog sees it. Raises AgentNotFoundError when it is not registered."""
        agent_id = _check_agent_id(agent_id)
        service = await self._service_name_of(agent_id)
        response = await self._gateway.get(
            f"read agent {agent_id!r}",
            f"/v1/health/service/{service}",
            params={"filter": f"Service.ID == {wire.quote(agent_id)}"},
            decode=wire.health_entries,
        )
        entries = response.body or []
        infos = await self._discovery.infos(entries, None, service)
        if not infos:
            self._service_names.pop(agent_id, None)
            # An entry Consul holds but that is skipped as untrusted input is not an agent either.
            detail = "its entry in Consul is not one this library could have written" if entries else ""
            raise AgentNotFoundError(agent_id, detail)
        return infos[0]

    async def get_agent_status(self, agent_id: str) -> AgentStatus:
        """The agent's aggregated health status (see AgentStatus)."""
        return (await self.get_agent(agent_id)).status

    @instrumented("agent_types")
    async def agent_types(self, region: str | None = None) -> dict[str, list[str]]:
        """Every agent type in the datacenter with the union of its capabilities."""
        services = await self._discovery.catalog_services(region)
        return {
            wire.agent_type_of(name): sorted(tags or [])
            for name, tags in sorted(services.items())
            if wire.is_agent_service(name)
        }

    @instrumented("discover")
    async def discover(
        self,
        request: DiscoveryRequest | None = None,
        *,
        cached: bool | None = None,
        accept: Callable[[list[AgentInfo]], bool] | None = None,
    ) -> DiscoveryResult:
        """Every live agent matching ``request``, with the datacenter it came from and its staleness.

        ``cached`` overrides the client's ``cache`` option for this call (False: a direct Consul query,
        filters running inside Consul). Both answer the same agents, sorted by (type, id). Without a
        region, failover moves on while a datacenter has no agent ``accept`` takes (default: no agent).
        """
        return await self._discovery.discover(request or DiscoveryRequest(), cached=cached, accept=accept)

    @instrumented("discover")
    async def discover_agents(
        self, request: DiscoveryRequest | None = None, *, cached: bool | None = None
    ) -> list[AgentInfo]:
        """Every live agent matching ``request`` (see :meth:`discover`)."""
        request = request or DiscoveryRequest()
        hit = self._discovery.hit(request, cached)  # a cached hit, answered in place
        return hit if hit is not None else await self._discovery.discover_agents(request, cached=cached)

    async def census(self) -> list[AgentInfo]:
        """Every agent of every status, in every datacenter, as this client's token sees them: each
        datacenter counted from its own answer (the local one from the cache, the others read directly,
        never watched). What ``/metrics`` counts."""
        return await self._discovery.census()

    def _unavailable(self, criteria: SelectionCriteria, agents: list[AgentInfo]) -> list[str]:
        """The ids selection must skip: those the caller excluded, draining ones and those ejected as
        outliers."""
        if criteria.include_draining:
            criteria = criteria.model_copy(
                update={"exclude": [*criteria.exclude, *(a.agent_id for a in agents if a.draining)]}
            )
        if not self.outliers.active:
            return criteria.exclude
        excluded = set(criteria.exclude)
        ejected = self.outliers.excluded(a.agent_id for a in agents if a.agent_id not in excluded)
        return [*criteria.exclude, *ejected]

    @instrumented("select", empty_outcome="unmet")
    async def select_agent(
        self, criteria: SelectionCriteria | None = None, *, cached: bool | None = None
    ) -> AgentInfo | None:
        """One agent matching the criteria, chosen by its strategy; None when none matches.

        Agents in ``criteria.exclude`` and agents ejected by outlier detection are skipped; when the local
        datacenter has no other agent, failover moves on to the next datacenter.
        """
        criteria = criteria or SelectionCriteria()

        def available(agents: list[AgentInfo]) -> bool:
            skipped = set(self._unavailable(criteria, agents))
            return any(a.agent_id not in skipped for a in agents)

        # the discovery is part of this operation: its span and metrics are the select's own
        result = await self._discovery.discover(criteria, cached=cached, accept=available, shared=True)
        annotate({"selection.candidates": len(result.agents)})
        chosen = select(
            result.agents,
            criteria.strategy,
            rng=self._rng,
            state=self._selection,
            key=selection_key(criteria, result.datacenter),
            exclude=self._unavailable(criteria, result.agents),
        )
        if chosen is None:  # the one place every selection (lease, POST /v1/select) finds nobody
            annotate({"selection.unmet": await pool_ops.record_unmet(self, criteria, result, cached)})
        return chosen

    def lease(
        self,
        criteria: SelectionCriteria | None = None,
        *,
        cached: bool | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = ANY_EXCEPTION,
        timeout: float | None = None,
    ) -> Lease:
        """``async with registry.lease(criteria) as agent``: select an agent and count it in flight.

        An exception escaping the block counts as a failure of the agent (cancellation counts as
        nothing); a clean exit as a success. Failures feed outlier ejection. Raises
        NoAgentAvailableError when no agent can be selected. With ``retries=n``, ``async for attempt in
        registry.lease(...)`` runs the body again on another agent after a failure of a ``retry_on`` class,
        all within ``timeout`` (see :mod:`consul_agents._lease_retry`).
        """
        return Lease(self, criteria, cached=cached, retries=retries, retry_on=retry_on, timeout=timeout)

    def leases_in_flight(self, agent_id: str) -> int:
        """How many of this client's leases hold the agent now."""
        return self._selection.in_flight.get(normalise_agent_id(agent_id), 0)

    @asynccontextmanager
    async def _lease_one(
        self, criteria: SelectionCriteria | None = None, *, cached: bool | None = None
    ) -> AsyncIterator[AgentInfo]:
        """One lease on one agent (what :class:`Lease` runs per attempt)."""
        agent = await self.select_agent(criteria, cached=cached)
        if agent is None:
            raise NoAgentAvailableError(
                "no agent available for the lease: none matches, or every match is excluded or ejected"
            )
        self._selection.acquire(agent.agent_id)
        lease_started(agent)
        try:
            yield agent
        except Exception:
            self._discovery.cache.record_lease(agent, success=False)
            if self.outliers.record(agent.agent_id, success=False):
                log.warning("agent %s ejected after repeated lease failures", agent.agent_id)
            raise
        else:
            self._discovery.cache.record_lease(agent, success=True)
            self.outliers.record(agent.agent_id, success=True)
        finally:
            self._selection.release(agent.agent_id)
            lease_ended(agent)

    # -- pools and demand (see consul_agents._pools) ------------------------------------------------------

    @instrumented("pool")
    async def pool(self, agent_type: str, region: str | None = None) -> PoolStatus:
        """The pool of ``agent_type`` in ``region`` (default: the local datacenter): its agents by status,
        capacity, load, settings and scaling signal, as this client's token sees them."""
        return await pool_ops.pool(self, agent_type, region)

    @instrumented("pools")
    async def pools(self) -> list[PoolStatus]:
        """Every pool this client's token sees, in every datacenter (see :meth:`census`)."""
        return await pool_ops.pool_list(self)

    @instrumented("set_pool_settings")
    async def set_pool_settings(
        self, agent_type: str, settings: PoolSettings | None, region: str | None = None
    ) -> None:
        """Store the settings of a type's pool in Consul KV (None removes them); needs a pool-admin token."""
        await pool_ops.write_settings(self, agent_type, settings, region)

    # -- batches and replacement (see consul_agents._batch and consul_agents._replace) -------------------

    async def register_many(
        self,
        registrations: Sequence[AgentRegistration | Mapping[str, Any]],
        *,
        concurrency: int = batch.DEFAULT_CONCURRENCY,
        timeout: float | None = None,
    ) -> batch.BatchResult:
        """Register many agents, validated all first (an invalid batch writes nothing), at most
        ``concurrency`` at once, each item reported ok or with its error (:mod:`consul_agents._batch`)."""
        return await batch.register_many(self, registrations, concurrency=concurrency, timeout=timeout)

    async def deregister_many(
        self,
        agent_ids: Sequence[str],
        *,
        concurrency: int = batch.DEFAULT_CONCURRENCY,
        timeout: float | None = None,
    ) -> batch.BatchResult:
        """Deregister many agents, with the rules of :meth:`register_many`."""
        return await batch.deregister_many(self, agent_ids, concurrency=concurrency, timeout=timeout)

    async def replace_agent(
        self,
        old_id: str,
        new: AgentRegistration | str,
        *,
        timeout: float = 60.0,
        drain_timeout: float = 30.0,
        new_status: AgentStatus = AgentStatus.CRITICAL,
    ) -> Replacement:
        """Register ``new`` (or take the registered agent of that id), wait until it passes, drain
        ``old_id``, wait for this client's leases on it, deregister it (:mod:`consul_agents._replace`)."""
        return await replace_agent(
            self, old_id, new, timeout=timeout, drain_timeout=drain_timeout, new_status=new_status
        )

    # -- A2A Agent Cards and draining (see consul_agents._card_ops) ---------------------------------------

    @instrumented("get_agent_card")
    async def get_agent_card(self, agent_id: str) -> dict[str, Any]:
        """The agent's A2A Agent Card as registered (equal as JSON to the card given).

        Raises AgentNotFoundError when the agent is unknown or was registered without a card.
        """
        return copy.deepcopy((await self.get_registered_card(agent_id)).card)  # the cached one stays intact

    async def get_registered_card(self, agent_id: str) -> cards.RegisteredCard:
        """The agent's card with the agent and the card's digest (``sha256:<hex>``, a strong ETag). The card
        is shared with the registry's card cache: copy it before changing it."""
        _check_agent_id(agent_id)
        return await cards.read_card(self, self._cards, agent_id)

    @instrumented("list_cards")
    async def agent_cards(
        self, request: DiscoveryRequest | None = None, *, cached: bool | None = None
    ) -> list[cards.RegisteredCard]:
        """The cards of every agent matching ``request`` (discovery's rules and order) that has one; cards
        are kept in memory by digest, so a repeated listing reads only the cards that changed."""
        return await cards.list_cards(self, self._cards, request or DiscoveryRequest(), cached=cached)

    @instrumented("set_draining")
    async def set_draining(self, agent_id: str, draining: bool = True) -> None:
        """Mark an agent draining, or not: a draining agent keeps heartbeating and is discovered only by a
        request with ``include_draining``, is never selected, and Consul DNS leaves it out of its answers.
        Done through the local Consul agent (the one the agent registered with)."""
        _check_agent_id(agent_id)
        await cards.set_draining(self, agent_id, draining)
        known = self._registered.get(agent_id)
        if known is not None:
            known.draining = draining
        self._wrote(agent_id)

    # -- sessions -----------------------------------------------------------------------------------------

    #: When a session's cleanup last found Consul unavailable (monotonic clock); see _end_session.
    _cleanup_failed_at: float | None = None

    @asynccontextmanager
    async def session(
        self,
        registration: AgentRegistration,
        *,
        interval: float | timedelta | None = None,
        liveness: Literal["agent", "process", "http"] = "agent",
    ) -> AsyncIterator[AgentSession]:
        """Register on enter, heartbeat in the background, deregister on exit (also on cancellation).

        ``liveness="process"`` keeps the agent alive through this process's anchor (see
        :meth:`register_agent` and :mod:`consul_agents._liveness`): far fewer TTL updates, but Consul 1.8.7
        refreshes every alias check once a minute by copying all of its agent's checks, a cost that grows
        with the square of the agents on one Consul agent (see the README's "What a heartbeat costs").
        ``liveness="http"``: Consul runs an HTTP check of this process's health server per agent (see
        :mod:`consul_agents._liveness_http`).

        The default interval is a third of the TTL, so two heartbeats can be lost before the agent turns
        critical. When the block ends by an exception or a cancellation, that exception is what propagates:
        a failed deregistration is only logged (the agent's check turns critical after its TTL and Consul
        reaps it), and while Consul does not answer, sessions ending together wait one timeout in all.
        """
        agent_id = await self.register_agent(registration, liveness=liveness)
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        handle = AgentSession(self, agent_id, registration.load)
        task = asyncio.create_task(
            handle._run(seconds or registration.ttl.total_seconds() / 3), name=f"heartbeat:{agent_id}"
        )
        try:
            yield handle
        except BaseException:
            await self._end_session(agent_id, task, failing=True)
            raise
        await self._end_session(agent_id, task, failing=False)

    async def _end_session(self, agent_id: str, heartbeat: asyncio.Task[None], *, failing: bool) -> None:
        """Stop the heartbeat and deregister. ``failing``: the block raised (or was cancelled), so errors
        are logged, not raised, and after a cleanup that found Consul unavailable the next ones within
        ``timeout`` seconds are not attempted: N sessions cancelled while Consul hangs cost one timeout,
        not N."""
        heartbeat.cancel()
        await asyncio.wait([heartbeat])  # raises nothing of the heartbeat's; a new cancellation still does
        if not heartbeat.cancelled() and heartbeat.exception() is not None:
            log.error("heartbeat of agent %s stopped: %r", agent_id, heartbeat.exception())
        now = time.monotonic()
        failed_at = self._cleanup_failed_at
        if failing and failed_at is not None and now - failed_at < self.settings.timeout:
            log.warning(
                "agent %s not deregistered: Consul did not answer another session's cleanup %.1fs ago; "
                "its check turns critical after its TTL",
                agent_id,
                now - failed_at,
            )
            await self._liveness.detach(agent_id, clean=False)
            return
        try:
            await asyncio.shield(self.deregister_agent(agent_id))
        except RegistryUnavailableError as exc:
            self._cleanup_failed_at = time.monotonic()
            await self._liveness.detach(agent_id, clean=False)
            if not failing:
                raise
            log.warning("agent %s not deregistered: %s", agent_id, exc)
        except ConsulAgentsError as exc:
            await self._liveness.detach(agent_id, clean=False)
            if not failing:
                raise
            log.warning("agent %s not deregistered: %s", agent_id, exc)


class AgentSession:
    """A registered agent kept alive by a background heartbeat; set ``load`` and ``status`` as they change."""

    def __init__(self, registry: AgentRegistry, agent_id: str, load: float) -> None:
        self.registry = registry
        self.agent_id = agent_id
        self._load = load
        self.status = AgentStatus.PASSING
        self.output: str | None = None
        self.heartbeats = 0
        self.last_error: ConsulAgentsError | None = None

    def __repr__(self) -> str:
        return f"AgentSession(agent_id={self.agent_id!r}, load={self._load!r}, status={self.status.value!r})"

    @property
    def load(self) -> float:
        return self._load

    @load.setter
    def load(self, value: float) -> None:
        self._load = _check_load(value)

    @property
    def conflict(self) -> str | None:
        """Why the catalog no longer holds this agent as registered (another service took its id), found by
        the periodic verification; None while all is well. See AgentRegistry.verify_registration."""
        return self.registry.registration_conflict(self.agent_id)

    async def beat(self) -> None:
        """Send one heartbeat now."""
        await self.registry.heartbeat(self.agent_id, self._load, status=self.status, output=self.output)
        self.heartbeats += 1

    async def _run(self, interval: float) -> None:
        detach_deadline()  # each heartbeat has its own deadline, not the one of the call that started us
        while True:
            await asyncio.sleep(interval)
            try:
                await self.beat()
                self.last_error = None
            except ConsulAgentsError as exc:
                self.last_error = exc
                log.warning("heartbeat of agent %s failed: %s", self.agent_id, exc)
