"""AgentRegistry: register, heartbeat, discover, inspect and deregister agents, with Consul as the only store.

Reads (``discover_agents``, ``get_agent``, ``get_agent_status``) all come from Consul's catalog through
``/v1/health/service``, so they agree with each other and work through any Consul agent of the datacenter.
Writes that concern one agent (register, heartbeat, deregister) go to the local Consul agent, which owns
the agent's TTL check and keeps the catalog in sync (anti-entropy).

Heartbeat cost: a heartbeat is a TTL update on the local agent, which Consul does not write to Raft while
the status is unchanged. The load is re-published (one catalog write) only when it has moved by at least
``load_threshold`` since the last report, or reached 0 or 1; so a steady fleet costs Consul nothing but
the local TTL resets.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from cachetools import LRUCache

from consul_agents import _card_ops as cards
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
    RegistryUnavailableError,
)
from consul_agents._gateway import ConsulGateway
from consul_agents._instrument import instrumented
from consul_agents._lease import OutlierDetector, OutlierPolicy
from consul_agents._models import (
    AGENT_ID_PATTERN,
    AgentInfo,
    AgentRegistration,
    AgentStatus,
    DiscoveryRequest,
    DiscoveryResult,
    SelectionCriteria,
    utcnow,
)
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
    #: Whether this client marked it draining (restored with the registration after a loss).
    draining: bool = False


def _check_load(load: float) -> float:
    if not isinstance(load, int | float) or isinstance(load, bool) or math.isnan(load) or not 0 <= load <= 1:
        raise InvalidAgentError(f"invalid load: {load!r} is not a number between 0 and 1", field="load")
    return float(load)


def _check_agent_id(agent_id: str) -> None:
    """Refuse ids that no registration could have: they end up in URL paths ("../kv/..." would escape)."""
    if not isinstance(agent_id, str) or not AGENT_ID_PATTERN.fullmatch(agent_id):
        raise InvalidAgentError(
            f"invalid agent_id: {agent_id!r} is not an agent id (letters, digits, '-', '_', '.', ':')",
            field="agent_id",
        )


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
        # A view's cache starts watching from its second discovery: a token seen once (callers cycling
        # through more tokens than a server keeps views for) is answered directly and never starts a
        # watch it would stop again at once (each such start and stop costs Consul a connection).
        view._init_client_state(cache_admit_after=2)
        view._discovery.share_location(owner._discovery)
        return view

    # -- writes -------------------------------------------------------------------------------------------

    @instrumented("register")
    async def register_agent(
        self, registration: AgentRegistration, *, status: AgentStatus = AgentStatus.PASSING
    ) -> str:
        """Register (or, for a known id, update) an agent; returns its id, the Consul service ID.

        ``status`` is the health a new agent starts with (an already registered one keeps its own).
        """
        if status is AgentStatus.MAINTENANCE:
            raise InvalidAgentError("invalid status: use set_maintenance() for maintenance", field="status")
        cards.check_signatures(self._card_policy, registration)
        agent_id = registration.agent_id or f"{registration.agent_type}-{uuid.uuid4().hex[:12]}"
        await self._settle(agent_id)
        try:
            await self._write_registration(agent_id, registration, registration.load, status)
        except RegistryUnavailableError as exc:
            # No answer: Consul may have applied the write all the same. Remember it, so that a later
            # call of this client converges (see _settle) instead of leaving an agent nobody tracks.
            self._uncertain[agent_id] = registration
            exc.add_note(
                f"agent {agent_id!r} may have been registered nonetheless: this client's next call (or "
                "reconcile()) re-reads what Consul holds and removes it unless it is heartbeated"
            )
            raise
        self._registered[agent_id] = _Registered(registration, registration.load)
        self._service_names[agent_id] = registration.service_name
        self._wrote(agent_id, registered=True)
        return agent_id

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
            self._registered[agent_id] = _Registered(registration, registration.load)
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
            if wire.encode_metadata(registration.metadata)[1] is not None:
                key = wire.metadata_key(registration.agent_type, agent_id)
                await self._gateway.delete(operation, f"/v1/kv/{key}")
            if registration.card is not None:
                await cards.delete_cards(self._gateway, operation, registration.agent_type, agent_id)
            self._uncertain.pop(agent_id, None)
            self._wrote(agent_id)
        return removed

    async def _write_registration(
        self,
        agent_id: str,
        registration: AgentRegistration,
        load: float,
        status: AgentStatus = AgentStatus.PASSING,
    ) -> None:
        _, kv_value = wire.encode_metadata(registration.metadata)
        operation = f"register agent {agent_id!r}"
        previous = self._registered.get(agent_id)
        kv_path = f"/v1/kv/{wire.metadata_key(registration.agent_type, agent_id)}"
        if kv_value is not None:
            await self._gateway.put(operation, kv_path, kv_value)
        body = wire.service_definition(registration, agent_id, load=load, heartbeat=utcnow(), status=status)
        previous_registration = previous.registration if previous is not None else None
        try:
            await cards.write_card(self._gateway, operation, registration, agent_id)
            await self._gateway.put(operation, "/v1/agent/service/register", body)
        except ConsulAgentsError:
            if kv_value is not None and previous is None:
                with suppress(ConsulAgentsError):
                    await self._gateway.delete(operation, kv_path)
            await cards.undo_card(self._gateway, operation, registration, previous_registration, agent_id)
            raise
        await cards.drop_replaced_card(
            self._gateway, operation, registration, previous_registration, agent_id
        )
        if (
            kv_value is None
            and previous is not None
            and wire.encode_metadata(previous.registration.metadata)[1]
        ):
            old_key = wire.metadata_key(previous.registration.agent_type, agent_id)
            await self._gateway.delete(operation, f"/v1/kv/{old_key}")

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
        Raises AgentNotFoundError if it is gone and this client never registered it.
        """
        _check_agent_id(agent_id)
        if load is not None:
            load = _check_load(load)
        await self._settle(agent_id)
        if status is AgentStatus.MAINTENANCE:
            raise InvalidAgentError("invalid status: use set_maintenance() for maintenance", field="status")
        operation = f"heartbeat agent {agent_id!r}"
        path = f"/v1/agent/check/update/{wire.check_id(agent_id)}"
        body = wire.ttl_update(status, output)
        try:
            await self._gateway.put(operation, path, body)
        except ConsulRequestError as exc:
            if not _is_unknown_check(exc):
                raise
            known = self._registered.get(agent_id)
            if known is None:
                raise AgentNotFoundError(agent_id, "no TTL check on the local Consul agent") from exc
            log.warning("agent %s was missing from Consul; re-registering it", agent_id)
            reported = known.reported_load if load is None else load
            await self._write_registration(agent_id, known.registration, reported, status)
            known.reported_load = reported
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
        if wrote:
            self._wrote(agent_id)

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
            body = wire.service_definition(known.registration, agent_id, load=load, heartbeat=utcnow())
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
        return True

    @instrumented("set_maintenance")
    async def set_maintenance(self, agent_id: str, enable: bool, reason: str = "") -> None:
        """Put an agent in (or take it out of) maintenance: it is then never discovered unless asked for."""
        _check_agent_id(agent_id)
        params: dict[str, Any] = {"enable": "true" if enable else "false"}
        if reason:
            params["reason"] = reason
        response = await self._gateway.put(
            f"set maintenance of agent {agent_id!r}",
            f"/v1/agent/service/maintenance/{agent_id}",
            params=params,
            allow_404=True,
        )
        if response.status == 404:
            raise AgentNotFoundError(agent_id, "not registered with the local Consul agent")
        self._wrote(agent_id)

    @instrumented("deregister")
    async def deregister_agent(self, agent_id: str) -> bool:
        """Remove an agent. Returns False when it was not registered (anywhere in the catalog).

        Consul answers 200 to deregistering an unknown id, so for an agent this client did not register the
        local Consul agent is asked first; for its own agents that extra round trip is skipped.
        """
        _check_agent_id(agent_id)
        await self._settle(agent_id)
        operation = f"deregister agent {agent_id!r}"
        known = self._registered.get(agent_id)
        if known is not None:
            await self._gateway.put(operation, f"/v1/agent/service/deregister/{agent_id}")
            if wire.encode_metadata(known.registration.metadata)[1] is not None:
                kv_key = wire.metadata_key(known.registration.agent_type, agent_id)
                await self._gateway.delete(operation, f"/v1/kv/{kv_key}")
            if known.registration.card is not None:
                await cards.delete_cards(self._gateway, operation, known.registration.agent_type, agent_id)
            self._forget(agent_id)
            return True
        local = await self._gateway.get(operation, f"/v1/agent/service/{agent_id}", allow_404=True)
        if local.status == 404:
            self._forget(agent_id)
            try:
                info = await self.get_agent(agent_id)
            except AgentNotFoundError:
                return False
            raise ConsulRequestError(
                operation,
                404,
                f"agent is registered through the Consul agent of node {info.node!r}; deregister it there",
            )
        await self._gateway.put(operation, f"/v1/agent/service/deregister/{agent_id}")
        local_key = wire.local_metadata_key(local.body)
        if local_key is not None:
            await self._gateway.delete(operation, f"/v1/kv/{local_key}")
        if isinstance(local.body, dict) and (local.body.get("Meta") or {}).get(wire.META_CARD_DIGEST):
            agent_type = wire.agent_type_of(str(local.body.get("Service", "")))
            await cards.delete_cards(self._gateway, operation, agent_type, agent_id)
        self._forget(agent_id)
        return True

    def _forget(self, agent_id: str) -> None:
        self._wrote(agent_id)
        self._registered.pop(agent_id, None)
        self._service_names.pop(agent_id, None)

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
        _check_agent_id(agent_id)
        service = await self._service_name_of(agent_id)
        response = await self._gateway.get(
            f"read agent {agent_id!r}",
            f"/v1/health/service/{service}",
            params={"filter": f"Service.ID == {wire.quote(agent_id)}"},
            decode=wire.health_entries,
        )
        entries = response.body or []
        infos = await self._discovery.infos(entries, None)
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
        return (await self._discovery.discover(request or DiscoveryRequest(), cached=cached)).agents

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

    @instrumented("select")
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

        result = await self.discover(criteria, cached=cached, accept=available)
        annotate({"selection.candidates": len(result.agents)})
        return select(
            result.agents,
            criteria.strategy,
            rng=self._rng,
            state=self._selection,
            key=selection_key(criteria, result.datacenter),
            exclude=self._unavailable(criteria, result.agents),
        )

    @asynccontextmanager
    async def lease(
        self, criteria: SelectionCriteria | None = None, *, cached: bool | None = None
    ) -> AsyncIterator[AgentInfo]:
        """``async with registry.lease(criteria) as agent``: select an agent and count it in flight.

        An exception escaping the block counts as a failure of the agent (cancellation counts as
        nothing); a clean exit as a success. Failures feed outlier ejection. Raises
        NoAgentAvailableError when no agent can be selected.
        """
        agent = await self.select_agent(criteria, cached=cached)
        if agent is None:
            raise NoAgentAvailableError(
                "no agent available for the lease: none matches, or every match is excluded or ejected"
            )
        self._selection.acquire(agent.agent_id)
        try:
            yield agent
        except Exception:
            if self.outliers.record(agent.agent_id, success=False):
                log.warning("agent %s ejected after repeated lease failures", agent.agent_id)
            raise
        else:
            self.outliers.record(agent.agent_id, success=True)
        finally:
            self._selection.release(agent.agent_id)

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

    @asynccontextmanager
    async def session(
        self, registration: AgentRegistration, *, interval: float | timedelta | None = None
    ) -> AsyncIterator[AgentSession]:
        """Register on enter, heartbeat in the background, deregister on exit (also on cancellation).

        The default interval is a third of the TTL, so two heartbeats can be lost before the agent turns
        critical.
        """
        agent_id = await self.register_agent(registration)
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        handle = AgentSession(self, agent_id, registration.load)
        task = asyncio.create_task(
            handle._run(seconds or registration.ttl.total_seconds() / 3), name=f"heartbeat:{agent_id}"
        )
        try:
            yield handle
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await asyncio.shield(self.deregister_agent(agent_id))


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

    async def beat(self) -> None:
        """Send one heartbeat now."""
        await self.registry.heartbeat(self.agent_id, self._load, status=self.status, output=self.output)
        self.heartbeats += 1

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.beat()
                self.last_error = None
            except ConsulAgentsError as exc:
                self.last_error = exc
                log.warning("heartbeat of agent %s failed: %s", self.agent_id, exc)
