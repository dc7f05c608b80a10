"""Answering a discovery: from the cache or from Consul directly, in the right datacenter, with failover.

This is the client layer's read path. :class:`Discoverer` decides *where* to ask (a named region, or the
local datacenter then others, see :mod:`consul_agents._routing`) and *how* (the watch-fed
:class:`~consul_agents._cache.DiscoveryCache`, or a direct query whose filter runs inside Consul). Both
ways answer with exactly the agents :func:`consul_agents._wire.matches` accepts, sorted by (type, id).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cachetools import LRUCache

from consul_agents import _wire as wire
from consul_agents import _wire_read as wire_read
from consul_agents._cache import DiscoveryCache, NotCached, WatchBudget
from consul_agents._entry_memo import EntryMemo
from consul_agents._errors import (
    ConsulAgentsError,
    ConsulRequestError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from consul_agents._gateway import ConsulGateway, ConsulResponse, QueryMeta, call_deadline, time_left
from consul_agents._metrics import record_cache, record_skipped
from consul_agents._models import SERVICE_PREFIX, AgentInfo, AgentStatus, DiscoveryRequest, DiscoveryResult
from consul_agents._routing import check_region, datacenter_order
from consul_agents._watch import WatchPolicy, data_lag

__all__ = ["Discoverer"]

log = logging.getLogger("consul_agents.discovery")

#: How long the list of datacenters (and so their nearest-first order) is reused.
DATACENTERS_TTL = 30.0
#: How long failover skips a datacenter whose answer just failed (unreachable or timed out). Consul itself
#: takes about a minute to mark a frozen datacenter unreachable; until then every request to it would wait
#: for its whole share of the deadline.
DATACENTER_BACKOFF = 10.0

#: A direct read of every live agent of a service goes without a filter unless its last unfiltered answer
#: held more than this many agents left out, and more than half of them: then it is filtered in Consul for
#: NARROW_FOR seconds.
NARROW_AFTER_DROPPED = 8
NARROW_FOR = 30.0

Accept = Callable[[list[AgentInfo]], bool]


class Discoverer:
    """The read path of one AgentRegistry."""

    def __init__(
        self,
        gateway: ConsulGateway,
        *,
        cache: bool = True,
        max_stale: float = 60.0,
        cache_idle: float = 300.0,
        watch_policy: WatchPolicy | None = None,
        failover_datacenters: Sequence[str] | None = None,
        max_failover: int = 2,
        consistency: str | None = None,
        watch_budget: WatchBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache_admit_after: int = 1,
    ) -> None:
        self.gateway = gateway
        self.use_cache = cache
        self.failover_datacenters = list(failover_datacenters) if failover_datacenters is not None else None
        self.max_failover = max_failover
        #: Consistency of direct queries ("stale" or None); the watches always read stale.
        self.consistency = consistency
        self._clock = clock
        self.cache = DiscoveryCache(
            gateway,
            max_stale=max_stale,
            idle_timeout=cache_idle,
            budget=watch_budget,
            policy=watch_policy,
            clock=clock,
            admit_after=cache_admit_after,
        )
        self._local: str | None = gateway.settings.datacenter or None
        #: The owning registry's Discoverer, for a view's (see share_location).
        self._owner: Discoverer | None = None
        self._datacenters: tuple[float, list[str]] | None = None
        #: When each datacenter last failed to answer a failover (see DATACENTER_BACKOFF).
        self._failed: dict[str, float] = {}
        #: The agents judged from entries of direct discoveries, by each entry's text.
        self._entries = EntryMemo()
        #: Until when direct reads of a (datacenter, service) send Consul the filter (see _uncached).
        self._narrow_until: LRUCache[tuple[str | None, str], float] = LRUCache(maxsize=1024)

    async def close(self) -> None:
        await self.cache.close()

    def share_location(self, owner: Discoverer) -> None:
        """Share the local datacenter with ``owner`` (the owning registry's discovery): whichever learns it
        first tells the other, so a view for a new token does not ask Consul again. It does not depend on
        the token; only how it is found does (``/v1/agent/self`` needs agent:read)."""
        self._owner = owner
        self._local = self._local or owner._local

    def release(self) -> asyncio.Task[None] | None:
        """Release the cache once no query holds it (a view's owner let go of the view); the closing
        task when it closes now."""
        return self.cache.retire()

    async def infos(self, entries: Any, datacenter: str | None, service: str = "") -> list[AgentInfo]:
        """Health entries read directly as AgentInfos: the agents among them, with the metadata kept in KV
        read, in ``datacenter`` (None: the local one), for those whose metadata is too large for Meta.
        Entries skipped as untrusted input are counted and logged once (see ``_wire_read``)."""
        if not isinstance(entries, list):
            raise ConsulRequestError("read agents", 200, "the answer is not a list of entries")
        wanted = {key for key in map(wire_read.kv_metadata_wanted, entries) if key is not None}
        kv: dict[str, bytes] = {}
        if wanted:
            pairs = sorted(wanted)
            values = await asyncio.gather(*(self._kv_metadata(t, a, datacenter) for t, a in pairs))
            kv = {a: value for (_, a), value in zip(pairs, values, strict=True) if value is not None}
        results = wire_read.read_entries(entries, kv_metadata=kv, queried=service)
        for result in results:
            if isinstance(result, wire_read.Skipped):
                record_skipped(result, datacenter or "")
        return wire_read.infos_only(results)

    def _narrowing(self, datacenter: str | None, name: str) -> bool:
        """Whether direct reads of ``name`` filter in Consul for now (see _uncached)."""
        until = self._narrow_until.get((datacenter, name))
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._narrow_until[(datacenter, name)]
        return False

    async def _read_answer(self, body: Any, datacenter: str | None, service: str = "") -> list[AgentInfo]:
        """A ``/v1/health/service/<service>`` answer's text as AgentInfos: entries judged before in the same
        text remembered (see _entry_memo), the rest judged now; decoded whole when it cannot be split."""
        if isinstance(body, str):
            read = self._entries.read(body, datacenter or "", service)
            if read is not None:
                agents, in_kv = read
                return [*agents, *(await self.infos(in_kv, datacenter, service))] if in_kv else agents
            body = wire.health_entries(body)
        return await self.infos(body or [], datacenter, service)

    async def _kv_metadata(self, agent_type: str, agent_id: str, datacenter: str | None) -> bytes | None:
        """The KV value as bytes: KV holds any bytes, and its metadata is checked when it is read."""
        response = await self.gateway.get(
            f"read metadata of agent {agent_id!r}",
            f"/v1/kv/{wire.metadata_key(agent_type, agent_id)}",
            params={"raw": ""},
            datacenter=datacenter,
            consistency=self.consistency,
            allow_404=True,
            raw=True,
            decode=bytes,
        )
        return response.body if isinstance(response.body, bytes) else None

    async def local_datacenter(self) -> str:
        """The datacenter of the Consul agent this client talks to (asked once).

        ``/v1/agent/self`` says it, but needs ``agent:read``, which a token limited to reading agents
        lacks; then the first of ``/v1/catalog/datacenters`` (no ACL) stands in: Consul sorts by round-trip
        time from the answering server, and its own datacenter is at distance zero.
        """
        if self._local is None and self._owner is not None:
            self._local = self._owner._local
        if self._local is None:
            try:
                response = await self.gateway.get("read local datacenter", "/v1/agent/self")
                local = wire.local_datacenter(response.body)
            except PermissionDeniedError:
                local = ""
            if not local:
                known = await self.datacenters()
                local = known[0] if known else ""
            self._local = local
            if self._owner is not None and self._owner._local is None:
                self._owner._local = local
        return self._local

    async def datacenters(self) -> list[str]:
        """Consul's datacenters, nearest first by its round-trip estimate (reused for a while)."""
        now = self._clock()
        if self._datacenters is None or now - self._datacenters[0] > DATACENTERS_TTL:
            response = await self.gateway.get(
                "list datacenters", "/v1/catalog/datacenters", consistency="stale"
            )
            self._datacenters = (now, wire.datacenters(response.body))
        return self._datacenters[1]

    async def catalog_services(self, datacenter: str | None) -> dict[str, list[str]]:
        """``/v1/catalog/services`` read directly: every service name with the union of its tags."""
        response = await self.gateway.get(
            "list agent types",
            "/v1/catalog/services",
            datacenter=datacenter,
            consistency=self.consistency,
            max_stale=self.cache.max_stale,
        )
        return wire.agent_services(response.body)

    async def discover(
        self,
        request: DiscoveryRequest,
        *,
        cached: bool | None = None,
        accept: Accept | None = None,
        shared: bool = False,
    ) -> DiscoveryResult:
        """Ask the datacenters in order until one has agents that ``accept`` (default: any agent).

        With ``request.region`` only that datacenter is asked (InvalidAgentError if Consul does not know
        it, even after re-reading its list of datacenters). Otherwise the local one, then failover: up to
        ``max_failover`` other datacenters that answer, each given an equal share of what is left of the
        call's deadline; a datacenter that fails (unreachable, timed out) does not count, and is skipped
        for :data:`DATACENTER_BACKOFF` seconds. A cached answer that is stale (its datacenter stopped
        answering) is kept only as a last resort. When no datacenter's answer is accepted, the first
        answer is returned (empty, or with agents the caller did not accept); when none answered at all,
        the local datacenter's error is raised. ``shared``: a cached hit's agents may be the cache's own
        read-only list (for a caller that only reads them: selection).
        """
        use_cache = self.use_cache if cached is None else cached
        if use_cache and (hit := self._hit_result(request, accept, shared)) is not None:
            return hit
        if request.region is not None:
            region = await self._known_region(request.region)
            return await self._ask(request, region, use_cache, tried=(region,))
        local = await self.local_datacenter()
        tried = [local]
        first: DiscoveryResult | None = None
        local_error: ConsulAgentsError | None = None
        try:
            result = await self._ask(request, local, use_cache, tried=(local,))
        except RegistryUnavailableError as exc:
            local_error = exc
        else:
            if _accepted(result, accept):
                return result
            first = result
        stale: DiscoveryResult | None = None
        if self.max_failover > 0:
            candidates = [dc for dc in await self._failover_order(local) if not self._backing_off(dc)]
            answered = 0
            for position, datacenter in enumerate(candidates):
                left = time_left()
                if answered >= self.max_failover or (left is not None and left <= 0):
                    break
                share = None
                if left is not None:
                    # An equal share for each datacenter still to ask, counting one more failure.
                    ahead = min(len(candidates) - position, self.max_failover - answered + 1)
                    share = left / max(ahead, 1)
                tried.append(datacenter)
                try:
                    with call_deadline(share):
                        result = await self._ask(request, datacenter, use_cache, tried=tuple(tried))
                except RegistryUnavailableError as exc:
                    self._failed[datacenter] = self._clock()
                    log.warning("failover to datacenter %s failed: %s", datacenter, exc)
                    continue
                except ConsulAgentsError as exc:
                    log.warning("failover to datacenter %s failed: %s", datacenter, exc)
                    answered += 1
                    continue
                answered += 1
                if not _accepted(result, accept):
                    first = first or result
                elif result.staleness > 0:
                    stale = stale or result  # the datacenter stopped answering: try the next one first
                else:
                    return _with_tried(result, tried)
        best = stale or first
        if best is not None:
            return _with_tried(best, tried)
        assert local_error is not None
        raise local_error

    def hit(self, request: DiscoveryRequest, cached: bool | None = None) -> list[AgentInfo] | None:
        """The agents :meth:`discover` would find when the cache has them ready (no I/O, no waiting, see
        DiscoveryCache.peek): a list of the caller's own, counted as a cache hit; None otherwise."""
        if (
            not (self.use_cache if cached is None else cached)
            or request.region is not None
            or not self._local
        ):
            return None
        answer = self.cache.peek(request)
        if answer is None or not answer[0]:
            return None
        record_cache(True)
        return answer[0]

    async def discover_agents(
        self, request: DiscoveryRequest, *, cached: bool | None = None
    ) -> list[AgentInfo]:
        """The agents :meth:`discover` finds, and only them: a cached hit builds no DiscoveryResult."""
        answer = self.hit(request, cached)
        return answer if answer is not None else (await self.discover(request, cached=cached)).agents

    def _hit_result(
        self, request: DiscoveryRequest, accept: Accept | None, share: bool
    ) -> DiscoveryResult | None:
        answer = self._hit(request, accept, share)
        if answer is None:
            return None
        agents, meta = answer
        local = self._local or ""
        return DiscoveryResult(
            agents,
            local,
            cached=True,
            known_leader=meta.known_leader,
            last_contact_ms=meta.last_contact_ms,
            datacenters_tried=(local,),
        )

    def _hit(
        self, request: DiscoveryRequest, accept: Accept | None, share: bool
    ) -> tuple[list[AgentInfo], QueryMeta] | None:
        """The cache's answer in the local datacenter when it needs no I/O (see DiscoveryCache.peek) and
        ends the discovery (agents ``accept`` takes: no failover), counted as a hit; None: ask the long
        way (which may still find the same answer)."""
        if request.region is not None or self._local is None:
            return None
        answer = self.cache.peek(request, share=share)
        if answer is None or not (accept(answer[0]) if accept is not None else answer[0]):
            return None
        record_cache(True)
        return answer

    def _backing_off(self, datacenter: str) -> bool:
        failed = self._failed.get(datacenter)
        if failed is None:
            return False
        if self._clock() - failed < DATACENTER_BACKOFF:
            return True
        del self._failed[datacenter]
        return False

    async def _known_region(self, region: str) -> str:
        """``region`` if Consul knows it; the list is re-read once first when it does not (a datacenter
        that just joined over WAN; the read is answered by the local agent, at no cost to the servers)."""
        known = await self.datacenters()
        if region not in known:
            self._datacenters = None
            known = await self.datacenters()
        return check_region(region, known)

    async def census(self) -> list[AgentInfo]:
        """Every agent of every status in every datacenter Consul knows, each datacenter from its own
        answer (no failover mixes them): the local one from the cache (if enabled), the others read
        directly, so a census never starts a watch in a remote datacenter. A remote datacenter that
        cannot answer is left out (logged); the local one's error is raised."""
        local = await self.local_datacenter()
        known = await self.datacenters()
        remote = [dc for dc in known if dc != local]

        async def every_status(datacenter: str, cached: bool) -> list[AgentInfo]:
            answers = await asyncio.gather(
                # Draining agents are alive: counted too (under their status).
                *(
                    self._ask(DiscoveryRequest(status=s, include_draining=True), datacenter, cached)
                    for s in AgentStatus
                )
            )
            return [agent for answer in answers for agent in answer.agents]

        results = await asyncio.gather(
            every_status(local, self.use_cache),
            *(every_status(dc, False) for dc in remote),
            return_exceptions=True,
        )
        found: list[AgentInfo] = []
        for datacenter, result in zip([local, *remote], results, strict=True):
            if isinstance(result, BaseException):
                if datacenter == local or not isinstance(result, ConsulAgentsError):
                    raise result
                log.info("census: datacenter %s left out: %s", datacenter, result)
                continue
            found.extend(result)
        return found

    async def _failover_order(self, local: str) -> list[str]:
        """Every other datacenter worth asking, in failover order (configured, or nearest first)."""
        try:
            known = await self.datacenters()
        except ConsulAgentsError as exc:
            log.debug("no failover: listing datacenters failed: %s", exc)
            return []
        order = datacenter_order(local, known, configured=self.failover_datacenters, max_failover=len(known))
        return order[1:]

    async def _ask(
        self, request: DiscoveryRequest, datacenter: str, use_cache: bool, tried: tuple[str, ...] = ()
    ) -> DiscoveryResult:
        """One datacenter's answer; ``tried``: the datacenters asked so far, this one included."""
        if use_cache:
            key = "" if datacenter == self._local else datacenter
            try:
                answer = await self.cache.query(request, key)
            except NotCached:
                return await self._ask(request, datacenter, False, tried)
            record_cache(answer.hit)
            return DiscoveryResult(
                answer.agents,
                datacenter,
                staleness=answer.staleness,
                cached=True,
                known_leader=answer.meta.known_leader,
                last_contact_ms=answer.meta.last_contact_ms,
                datacenters_tried=tried,
            )
        record_cache(False)
        agents, meta = await self._uncached(request, datacenter)
        lag = data_lag(meta)
        if lag > 0:
            agents = [agent.model_copy(update={"staleness": lag}) for agent in agents]
        return DiscoveryResult(
            agents,
            datacenter,
            staleness=lag,
            known_leader=meta.known_leader,
            last_contact_ms=meta.last_contact_ms,
            datacenters_tried=tried,
        )

    async def _uncached(
        self, request: DiscoveryRequest, datacenter: str
    ) -> tuple[list[AgentInfo], QueryMeta]:
        """Filters run inside Consul when they narrow the answer (all but max_load, which wire.matches
        re-checks with the rest)."""
        dc = datacenter if datacenter != self._local else None
        if request.agent_type is not None:
            names = [SERVICE_PREFIX + request.agent_type]
        else:
            names = wire.service_names_for(request, await self.catalog_services(dc))
        # A filter costs Consul a parse and an evaluation per entry: for 10 agents about a third of the
        # answer's time, measured (benchmarks/floor.py). Asked for every live agent of a type, the answer
        # is mostly those: no filter then (matches() below drops the rest, as it always does), unless that
        # service's last unfiltered answer was mostly agents left out (a fleet failing: a minute of dead
        # entries before Consul reaps them), which narrows its next reads for a while.
        narrow = (
            request.capabilities or request.tags or request.status is not None or request.include_draining
        )
        expression = wire.filter_expression(request)

        def read(name: str) -> Awaitable[ConsulResponse]:
            filtered = narrow or self._narrowing(dc, name)
            return self.gateway.get(
                f"discover agents of service {name!r}",
                f"/v1/health/service/{name}",
                params={"filter": expression} if filtered else None,
                datacenter=dc,
                consistency=self.consistency,
                max_stale=self.cache.max_stale,
                decode=str,  # the answer's text: known entries are not decoded again (see _entry_memo)
            )

        # one service (the usual case) is read in this task: gather would start one more
        responses = [await read(names[0])] if len(names) == 1 else await asyncio.gather(*map(read, names))
        found: list[AgentInfo] = []
        for name, response in zip(names, responses, strict=True):
            infos = await self._read_answer(response.body, dc, name)
            kept = [info for info in infos if wire.matches(request, info)]
            if not narrow and len(infos) - len(kept) > max(NARROW_AFTER_DROPPED, len(infos) // 2):
                self._narrow_until[(dc, name)] = self._clock() + NARROW_FOR
            found.extend(kept)
        found.sort(key=lambda info: (info.agent_type, info.agent_id))
        known_leader = all(r.meta.known_leader for r in responses)
        last_contact = max((r.meta.last_contact_ms for r in responses), default=0)
        return found, QueryMeta(0, known_leader, last_contact)


def _accepted(result: DiscoveryResult, accept: Accept | None) -> bool:
    return accept(result.agents) if accept is not None else bool(result.agents)


def _with_tried(result: DiscoveryResult, tried: list[str]) -> DiscoveryResult:
    """``result`` naming the datacenters asked (itself when it already does: results are immutable)."""
    asked = tuple(tried)
    if result.datacenters_tried == asked:
        return result
    return dataclasses.replace(result, datacenters_tried=asked)
