"""Discovery from memory: one watch per Consul service (per datacenter), indexed views, memoised answers.

Each watched service has a :class:`ServiceView`: an immutable snapshot of its agents, indexed by capability
and status, with a small memo of answers. A new snapshot replaces the old one on every change Consul
reports, so a memoised answer can never outlive the state it was computed from. A repeated question costs
a dictionary hit; a new one costs an intersection of index sets, never a scan of every agent.

On each change Consul re-sends every instance of the service (Consul 1.8 has no streaming). The answer is
split into its entries without parsing it, and an entry whose text is unchanged keeps the AgentInfo built
from it, so only the changed entries are parsed (see :func:`_wire.split_health_entries`). A question that
narrows a large type by capability or tag may also get a watch that Consul filters (see
:mod:`consul_agents._selective`): Consul then serialises a tenth of the answer on each change.

Questions that name no agent type need the list of services: one more watch, on ``/v1/catalog/services``,
per datacenter. Metadata too large for Meta lives in KV, which the service's answer does not reflect: while
a watched service has such agents, one more watch follows its type's KV prefix. Watches start on first use
(several at once when a question needs several) and stop after ``idle_timeout`` without use, or on close.

The cache builds AgentInfos itself, from ``_wire``; nothing above it hands it code to run. It is owned by
one registry (or ``with_token`` view); the :class:`WatchBudget` of the connection pool they share owns
every cache's watches, so closing the pool's registry stops them all.

Fail-static: when a watch cannot reach Consul, its last snapshot keeps answering, marked with its staleness,
for ``max_stale`` seconds; after that, :class:`RegistryUnavailableError`. A hung Consul counts as unreachable
within about the client's timeout: a watch's blocking wait is at most that timeout, and a read Consul does
not answer in time marks the watch stale (see :mod:`consul_agents._watch`). Watches read with
``?stale&max_stale=<max_stale>``: a server that lost touch with the leader for longer makes the Consul
agent re-ask the leader, and what a server does say about its lag counts in the staleness.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import operator
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from consul_agents import _wire as wire
from consul_agents import _wire_read as wire_read
from consul_agents._errors import ConsulAgentsError, RegistryTimeoutError, RegistryUnavailableError
from consul_agents._frozen import FrozenList
from consul_agents._gateway import (
    ConsulGateway,
    ConsulResponse,
    QueryMeta,
    describe_where,
    detach_deadline,
    time_left,
)
from consul_agents._health_score import HealthHistory
from consul_agents._metrics import observe_watch_lag, record_skipped
from consul_agents._models import SERVICE_PREFIX, AgentInfo, AgentStatus, DiscoveryRequest
from consul_agents._selective import MIN_AGENTS, PER_SERVICE, SHADOWED_IDLE, selector
from consul_agents._watch import Watch, WatchPolicy

__all__ = [
    "CacheClosed",
    "CacheCold",
    "CachedAnswer",
    "DiscoveryCache",
    "NotCached",
    "ServiceView",
    "TooManyServices",
    "WatchBudget",
    "request_key",
]

log = logging.getLogger("consul_agents.cache")

_MEMO_SIZE = 256
#: Request objects whose service and answer a cache remembers by identity (see DiscoveryCache.peek).
_RECENT_SIZE = 256
#: Each running watch holds one connection of the gateway's pool (128) for its blocking read, and Consul
#: closes connections beyond 200 per client address: at most this many watches run at once per connection
#: pool, whatever the number of caches (per-token views) sharing it.
MAX_WATCHES = 48


class WatchBudget:
    """The owner of the watches of every cache sharing one connection pool (a registry and its
    ``with_token`` views): how many may run together, and stopping them all before the pool closes.

    A cache is closed by its owner (the pool's registry, on close) or released by its view once no query
    holds it (:meth:`DiscoveryCache.retire`); either way no watch outlives the pool.
    """

    def __init__(self, limit: int = MAX_WATCHES) -> None:
        self.limit = limit
        #: Weak: a cache nobody holds and that runs no watch (whose tasks would hold it) may go.
        self._caches: weakref.WeakSet[DiscoveryCache] = weakref.WeakSet()
        self._closing: set[asyncio.Task[None]] = set()

    def join(self, cache: DiscoveryCache) -> None:
        self._caches.add(cache)

    def leave(self, cache: DiscoveryCache) -> None:
        self._caches.discard(cache)

    def in_use(self) -> int:
        return sum(cache.watch_slots for cache in list(self._caches))

    def running(self) -> int:
        """Watches running now in every cache of the pool."""
        return sum(cache.watch_count for cache in list(self._caches))

    def close_later(self, cache: DiscoveryCache) -> asyncio.Task[None]:
        """Close ``cache`` in a task of the owner's (awaited by :meth:`close`), not the caller's."""
        task = asyncio.create_task(cache.close(), name="discovery-cache-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def close(self) -> None:
        """Stop every watch of every cache of the pool (the pool is about to close)."""
        caches = list(self._caches)
        await asyncio.gather(*(cache.close() for cache in caches), *list(self._closing))


class NotCached(Exception):
    """The cache does not answer this question: ask Consul directly."""


class TooManyServices(NotCached):
    """The question spans more services than the cache may watch at once: ask Consul directly."""


class CacheClosed(NotCached):
    """The cache is closed (its view was released or its registry closed): ask Consul directly."""


class CacheCold(NotCached):
    """The cache starts watching only from its ``admit_after``-th question: ask Consul directly."""


RequestKey = tuple[Any, ...]


def request_key(request: DiscoveryRequest) -> RequestKey:
    """A hashable key equal for requests that ask the same thing (it is built on every cached read: no
    sort for what has fewer than two items to order)."""
    capabilities = request.capabilities
    tags = request.tags
    return (
        request.agent_type,
        tuple(sorted(capabilities)) if len(capabilities) > 1 else tuple(capabilities),
        request.status,
        request.max_load,
        tuple(sorted(tags.items())) if tags else (),
        request.region,
        request.include_draining,
    )


_LIVE = (AgentStatus.PASSING, AgentStatus.WARNING)


class ServiceView:
    """The agents of one service at one moment, indexed by capability and status. Immutable."""

    __slots__ = ("_by_capability", "_by_status", "_memo", "agents")

    def __init__(self, agents: Iterable[AgentInfo]) -> None:
        self.agents: tuple[AgentInfo, ...] = tuple(sorted(agents, key=lambda a: a.agent_id))
        by_capability: dict[str, set[int]] = {}
        by_status: dict[AgentStatus, set[int]] = {status: set() for status in AgentStatus}
        for position, agent in enumerate(self.agents):
            for capability in agent.capabilities:
                by_capability.setdefault(capability, set()).add(position)
            by_status[agent.status].add(position)
        self._by_capability = {k: frozenset(v) for k, v in by_capability.items()}
        self._by_status = {k: frozenset(v) for k, v in by_status.items()}
        #: Answers by request key, the oldest forgotten first beyond _MEMO_SIZE (a plain dict: a hit costs
        #: one lookup; the view lives only until Consul's next change anyway).
        self._memo: dict[RequestKey, list[AgentInfo]] = {}

    def __len__(self) -> int:
        return len(self.agents)

    def query(self, request: DiscoveryRequest, key: RequestKey | None = None) -> list[AgentInfo]:
        """The agents matching ``request`` (exactly those ``wire.matches`` accepts), by agent id.

        The returned list is the memo's own, read-only (a FrozenList): callers copy it before handing it
        out, or pass it on as it is to code that only reads it (selection recognises it by identity).
        """
        key = request_key(request) if key is None else key
        found = self._memo.get(key)
        if found is None:
            found = self._compute(request)
            if len(self._memo) >= _MEMO_SIZE:
                del self._memo[next(iter(self._memo))]
            self._memo[key] = found
        return found

    def _compute(self, request: DiscoveryRequest) -> list[AgentInfo]:
        if request.status is None:
            sets = [self._by_status[_LIVE[0]] | self._by_status[_LIVE[1]]]
        else:
            sets = [self._by_status[request.status]]
        for capability in request.capabilities:
            sets.append(self._by_capability.get(capability, frozenset()))
        sets.sort(key=len)
        positions = set(sets[0]).intersection(*sets[1:])
        return FrozenList(self.agents[p] for p in sorted(positions) if wire.matches(request, self.agents[p]))


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    agents: list[AgentInfo]
    #: Seconds since Consul last answered for the oldest view used (0 while every watch is healthy).
    staleness: float
    meta: QueryMeta
    #: False when a watch had to be started or re-read for this answer (a round trip to Consul).
    hit: bool = True


def _healthy(watch: Watch) -> bool:
    return watch.running and (watch.error is None or isinstance(watch.error, RegistryUnavailableError))


class _Watched:
    """One Consul endpoint in one datacenter, read by a :class:`Watch` whose answers ``_deliver`` keeps."""

    def __init__(
        self,
        cache: DiscoveryCache,
        datacenter: str,
        name: str,
        operation: str,
        path: str,
        decode: Callable[[str], Any] | None = None,
        params: dict[str, Any] | None = None,
        allow_404: bool = False,
    ) -> None:
        self.cache = cache
        self.datacenter = datacenter
        self.last_used = cache.clock()
        self.dirty = False
        self._operation = operation
        self._path = path
        self._decode = decode
        self._params = params
        self._allow_404 = allow_404
        name = f"{datacenter or 'local'}/{name}"
        self.watch = Watch(name, self._fetch, self._deliver, policy=cache.policy, clock=cache.clock)

    async def _fetch(self, index: int | None, wait: float) -> ConsulResponse:
        return await self.cache.gateway.request(
            self._operation,
            "GET",
            self._path,
            params=self._params,
            datacenter=self.datacenter or None,
            index=index,
            wait=wait,
            consistency="stale",
            max_stale=self.cache.max_stale,
            decode=self._decode,
            allow_404=self._allow_404,
        )

    async def _deliver(self, response: ConsulResponse) -> None:
        raise NotImplementedError

    def watches(self) -> list[Watch]:
        return [self.watch]

    def usable(self) -> bool:
        """Every watch running, and none whose last read ended in an answered error (denied, bad request).

        Only an outage is served fail-static: when Consul answers that the token is no longer allowed,
        the watch is replaced, so the caller gets the answer Consul gives now.
        """
        return all(_healthy(watch) for watch in self.watches())

    async def start(self) -> None:
        await self.watch.start()

    async def stop(self) -> None:
        for watch in self.watches():
            await watch.stop()

    async def refresh(self) -> None:
        """Re-read now (after this client wrote): the answer Consul holds replaces the watched one."""
        await self.watch.refresh()


class _MetadataWatch(_Watched):
    """A watch on the KV prefix of one agent type: the metadata too large for Meta, by agent id.

    The service's own answer does not change when only the KV value does, so the metadata is watched on
    its own; a key that does not exist yet (``consul-agents render`` then ``consul kv put``) is simply
    absent until it is written, never remembered as empty.
    """

    def __init__(self, owner: _ServiceWatch, agent_type: str) -> None:
        super().__init__(
            owner.cache,
            owner.datacenter,
            f"metadata/{agent_type}",
            f"watch metadata of agent type {agent_type!r}",
            f"/v1/kv/{wire.metadata_prefix(agent_type)}",
            params={"recurse": ""},
            allow_404=True,
        )
        self._owner = owner
        self._agent_type = agent_type
        self.values: dict[str, bytes] = {}

    async def _deliver(self, response: ConsulResponse) -> None:
        self.values = wire.kv_metadata_values(response.body, self._agent_type)
        self._owner.metadata_changed()


class _InKV:
    """An entry whose metadata lives in KV, with its last conversion and the KV value it was made with:
    converted again only when that value changes."""

    __slots__ = ("agent_id", "entry", "read")

    def __init__(self, entry: Any, agent_id: str) -> None:
        self.entry = entry
        self.agent_id = agent_id
        self.read: tuple[bytes | None, AgentInfo | None] | None = None


#: What an entry of the last answer gave: its AgentInfo, None (not an agent, or skipped), or _InKV.
_Value = AgentInfo | _InKV | None


def _same(agents: list[AgentInfo], before: list[AgentInfo]) -> bool:
    """The very same AgentInfos in the same order (compared in C)."""
    return len(agents) == len(before) and all(map(operator.is_, agents, before))


class _ServiceWatch(_Watched):
    """A watch on ``/v1/health/service/<name>`` in one datacenter and the view it keeps current, with a
    watch on the agents' KV metadata while any of them keeps its metadata there.

    A wake re-reads every instance (Consul 1.8 has no streaming); what each entry gave is kept beside its
    text, and the next answer is compared with the last one from both ends, piece against piece in place
    (a memcmp each): only the stretch between the common head and tail is looked up by text (hashing each
    piece) or decoded. A change of one agent among 1,000 decodes one entry and hashes two.
    """

    def __init__(
        self, cache: DiscoveryCache, datacenter: str, service: str, selector: str | None = None
    ) -> None:
        operation = f"watch agents of service {service!r}"
        name, params = service, None
        if selector is not None:  # a selective watch (see _selective): Consul filters the answer
            operation += f" matching {selector}"
            name, params = f"{service}?filter={selector}", {"filter": selector}
        # The answer's text: _reuse splits it and decodes only the entries that changed.
        super().__init__(
            cache, datacenter, name, operation, f"/v1/health/service/{service}", decode=str, params=params
        )
        self.service = service
        self.selector = selector
        self.view = ServiceView(())
        #: The entries of the last answer as pieces of its text (empty when it could not be split), and
        #: what each gave, position for position.
        self._pieces: list[str] = []
        self._values: list[_Value] = []
        #: The agents of the last version as read, before their health scores (see _health_score).
        self._sources: list[AgentInfo] = []
        self._scored: list[AgentInfo] = []
        self.scored_at = 0.0
        self.rescore_at = math.inf
        self.metadata: _MetadataWatch | None = None

    @property
    def _converted(self) -> dict[str, AgentInfo | None]:
        """What each entry of the last answer whose metadata is not in KV gave, by its text (diagnostics)."""
        return {
            piece: value
            for piece, value in zip(self._pieces, self._values, strict=False)
            if not isinstance(value, _InKV)
        }

    def watches(self) -> list[Watch]:
        return [self.watch] if self.metadata is None else [self.watch, self.metadata.watch]

    def usable(self) -> bool:
        if self.metadata is None:  # the common case, on every cached read: no list built
            return _healthy(self.watch)
        return _healthy(self.watch) and _healthy(self.metadata.watch)

    async def refresh(self) -> None:
        if self.metadata is None:
            await self.watch.refresh()
            return
        # Both at once: the KV re-read is not a round trip in front of the service's.
        results = await asyncio.gather(self.metadata.refresh(), self.watch.refresh(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _deliver(self, response: ConsulResponse) -> None:
        started = time.monotonic()
        text = response.body if isinstance(response.body, str) else ""
        pieces, values, fresh = self._reuse(text)
        plain: list[tuple[int, Any]] = []
        for position, entry in fresh:
            wanted = wire_read.kv_metadata_wanted(entry)
            if wanted is not None:
                values[position] = _InKV(entry, wanted[1])
            else:
                plain.append((position, entry))
        if plain:
            results = self._read([entry for _, entry in plain])
            for (position, _), result in zip(plain, results, strict=True):
                values[position] = result
        self._pieces, self._values = pieces, values
        in_kv = any(isinstance(value, _InKV) for value in values)
        if in_kv and self.metadata is None:
            metadata = _MetadataWatch(self, wire.agent_type_of(self.service))
            await metadata.start()
            self.metadata = metadata
        elif not in_kv and self.metadata is not None:
            metadata, self.metadata = self.metadata, None
            await metadata.stop()
        self._rebuild()
        observe_watch_lag(response.meta.last_contact_ms / 1000 + time.monotonic() - started)

    def metadata_changed(self) -> None:
        if any(isinstance(value, _InKV) for value in self._values):
            self._rebuild()

    def _read(self, entries: list[Any], kv: Mapping[str, bytes] | None = None) -> list[AgentInfo | None]:
        """Entries as AgentInfos, position for position (None: not an agent, or skipped as untrusted input,
        counted and logged once)."""
        results = wire_read.read_entries(entries, kv_metadata=kv, queried=self.service)
        for result in results:
            if isinstance(result, wire_read.Skipped):
                record_skipped(result, self.datacenter)
        return [result if isinstance(result, AgentInfo) else None for result in results]

    def _rebuild(self) -> None:
        infos = [value for value in self._values if isinstance(value, AgentInfo)]
        in_kv = [value for value in self._values if isinstance(value, _InKV)]
        if in_kv:
            kv = self.metadata.values if self.metadata is not None else {}
            changed = [item for item in in_kv if item.read is None or item.read[0] != kv.get(item.agent_id)]
            if changed:
                results = self._read([item.entry for item in changed], kv)
                for item, info in zip(changed, results, strict=True):
                    item.read = (kv.get(item.agent_id), info)
            infos += [item.read[1] for item in in_kv if item.read is not None and item.read[1] is not None]
        previous, self._sources = self._sources, infos
        self._score(self.cache.clock(), previous)
        self.dirty = False
        self.cache.changed()

    def _score(self, now: float, previous: list[AgentInfo] | None = None) -> None:
        # the same list when only time moved (nothing changed): nothing to record, only to score
        stamped = self.cache.health.stamp(self._sources, now, self._sources if previous is None else previous)
        if previous is not None or not _same(stamped.agents, self._scored):
            self.view = ServiceView(stamped.agents)  # else no score moved: the view and its memo stay
        self._scored = stamped.agents
        self.scored_at, self.rescore_at = now, stamped.rescore_at

    def score_due(self, now: float) -> bool:
        """Whether the health scores should be computed again (time moved the pass ratio of an agent with
        history, or a lease failed since they were computed)."""
        return now >= self.rescore_at or (
            self.cache.health.failed_at > self.scored_at
            and now >= self.scored_at + self.cache.health.policy.resolution
        )

    def scored_view(self, now: float) -> ServiceView:
        """The view, its health scores brought up to date when they are due."""
        if self.score_due(now):
            self._score(now)
        return self.view

    def _reuse(self, text: str) -> tuple[list[str], list[_Value], list[tuple[int, Any]]]:
        """The answer's entries as pieces of its text, what the last answer's equal pieces gave (None where
        an entry is new), and the new entries decoded, by position; when the answer cannot be split, no
        pieces, and every entry decoded afresh."""
        if not text.strip():
            # Consul writes "[]" for a service with no instances: an empty answer is not one, and taking it
            # for one would empty the view.
            raise RegistryUnavailableError(
                f"Consul at {self.cache.gateway.address} gave an empty answer to watch {self.service!r}",
                address=self.cache.gateway.address,
            )
        pieces = wire.split_health_entries(text)
        if pieces is not None:
            old, given = self._pieces, self._values
            n, m = len(pieces), len(old)
            limit = min(n, m)
            head = 0
            while head < limit and pieces[head] == old[head]:
                head += 1
            tail = 0
            while tail < limit - head and pieces[n - 1 - tail] == old[m - 1 - tail]:
                tail += 1
            values: list[_Value] = [*given[:head], *([None] * (n - head - tail)), *given[m - tail : m]]
            # Between the common head and tail: an entry that moved, or a new one.
            moved = dict(zip(old[head : m - tail], given[head : m - tail], strict=True))
            fresh: list[tuple[int, Any]] = []
            for position in range(head, n - tail):
                piece = pieces[position]
                if piece in moved:
                    values[position] = moved[piece]
                    continue
                entry = wire.health_entry(piece)
                if entry is None:
                    break
                fresh.append((position, entry))
            else:
                return pieces, values, fresh
        entries = wire.health_entries(text)
        if not isinstance(entries, list):
            raise RegistryUnavailableError(
                f"Consul at {self.cache.gateway.address} answered watch {self.service!r} with something "
                "other than a list of entries",
                address=self.cache.gateway.address,
            )
        return [], [None] * len(entries), list(enumerate(entries))


class _CatalogWatch(_Watched):
    """A watch on ``/v1/catalog/services`` in one datacenter: which agent services exist, with their tags."""

    def __init__(self, cache: DiscoveryCache, datacenter: str) -> None:
        super().__init__(cache, datacenter, "catalog", "watch agent types", "/v1/catalog/services")
        self.services: dict[str, list[str]] = {}

    async def _deliver(self, response: ConsulResponse) -> None:
        self.services = wire.agent_services(response.body)
        self.dirty = False
        self.cache.changed()


WatchKey = tuple[str, str]
#: (datacenter, service, Consul filter) of a selective watch.
SelectiveKey = tuple[str, str, str]


class DiscoveryCache:
    """The watches of one registry client, keyed by (datacenter, service); "" is the local datacenter.

    Lifetime: the cache belongs to one registry (or one ``with_token`` view). :meth:`close` stops every
    watch; :meth:`retire` releases the cache once no query holds it, so a view released while requests
    still use it keeps answering them. A closed cache raises :class:`CacheClosed` (ask Consul directly).
    Watches start in tasks of the cache's own, shared by every caller waiting for them: a caller that is
    cancelled stops waiting, and the start goes on for the others.
    """

    def __init__(
        self,
        gateway: ConsulGateway,
        *,
        max_stale: float = 60.0,
        idle_timeout: float = 300.0,
        max_watches: int = MAX_WATCHES,
        budget: WatchBudget | None = None,
        policy: WatchPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        admit_after: int = 1,
    ) -> None:
        self.gateway = gateway
        #: Questions answered directly before the first watch starts (see CacheCold).
        self._cold = max(admit_after, 1) - 1
        self.max_stale = max_stale
        self.idle_timeout = idle_timeout
        self.max_watches = max_watches
        self.budget = budget or WatchBudget(max_watches)
        self.budget.join(self)
        policy = policy or WatchPolicy()
        # A blocking wait longer than the timeout would hide a hung Consul for that long.
        self.policy = dataclasses.replace(policy, wait=min(policy.wait, gateway.settings.timeout))
        self.clock = clock
        self._services: dict[WatchKey, _ServiceWatch] = {}
        self._catalogs: dict[str, _CatalogWatch] = {}
        self._starting: dict[WatchKey, asyncio.Task[Any]] = {}
        #: Selective watches (see _selective), running and starting in the background.
        self._selective: dict[SelectiveKey, _ServiceWatch] = {}
        self._accelerating: dict[SelectiveKey, asyncio.Task[None]] = {}
        self._selectors: LRUCache[RequestKey, str | None] = LRUCache(maxsize=_MEMO_SIZE)
        #: The types whose own watch was stopped once as shadowed by selective watches.
        self._shadowed: LRUCache[WatchKey, bool] = LRUCache(maxsize=_MEMO_SIZE)
        self._reaper: asyncio.Task[None] | None = None
        self._reap_soon = asyncio.Event()
        self._changed = asyncio.Event()
        #: Status changes and lease outcomes of the agents watched: their health scores.
        self.health = HealthHistory()
        #: By id(request): (request, datacenter, its service's entry, that entry's view, the answer).
        self._recent: dict[
            int, tuple[DiscoveryRequest, str, _ServiceWatch, ServiceView, list[AgentInfo]]
        ] = {}
        self._misses = 0
        self._holders = 0
        self._retiring = False
        self.closed = False

    def __repr__(self) -> str:
        return f"DiscoveryCache(watches={self.watch_count})"

    def _entries(self) -> list[_Watched]:
        return [*self._services.values(), *self._selective.values(), *self._catalogs.values()]

    @property
    def watch_slots(self) -> int:
        """Watches this cache holds or is starting (each one a pooled connection)."""
        starting = len(self._starting) + len(self._accelerating)
        return sum(len(entry.watches()) for entry in self._entries()) + starting

    @property
    def watch_count(self) -> int:
        return sum(watch.running for watch in self.watches())

    def watches(self) -> list[Watch]:
        return [watch for entry in self._entries() for watch in entry.watches()]

    def changed(self) -> None:
        """Wake whoever waits in :meth:`wait_changed`."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout: float) -> bool:
        """Wait until some watched view changes; False on timeout."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def record_lease(self, agent: AgentInfo, success: bool) -> None:
        """A lease of ``agent`` ended: its outcome counts in the agent's health score."""
        self.health.record_lease(agent, success, self.clock())

    def invalidate(self, service: str | None = None, *, catalog: bool = False) -> None:
        """This client just wrote to ``service`` (None: unknown): the next read of it asks Consul directly.

        ``catalog``: the write may have added a service or a capability (a registration), so questions that
        name no agent type re-read the list of services too.
        """
        for (_, name), watched in self._services.items():
            if service is None or name == service:
                watched.dirty = True
        for (_, name, _), watched in self._selective.items():
            if service is None or name == service:
                watched.dirty = True
        if catalog or service is None:
            for catalog_watch in self._catalogs.values():
                catalog_watch.dirty = True

    def retire(self) -> asyncio.Task[None] | None:
        """Release the cache: closed (its watches stopped) now if no query holds it, else when the last
        query holding it ends. Queries arriving later raise CacheClosed. Returns the closing task when
        the close starts now."""
        self._retiring = True
        if self._holders == 0 and not self.closed:
            self.closed = True
            return self.budget.close_later(self)
        return None

    def peek(
        self, request: DiscoveryRequest, datacenter: str = "", *, share: bool = False
    ) -> tuple[list[AgentInfo], QueryMeta] | None:
        """The agents (a list of the caller's own) and Consul's meta :meth:`query` would answer with, when
        it needs no I/O and no waiting: a question naming its agent type, whose watch runs healthy and
        current (staleness 0, no write of this client's pending a re-read, no metadata in KV); None
        otherwise (ask :meth:`query`). ``share``: the view's own read-only list instead of a copy, for a
        caller that only reads it (selection).

        This is the cached hit's whole path. A request object asked again (a service's usual way: requests
        are immutable) finds its service and answer by identity while the service's view is the same;
        otherwise its key is built and looked up in the view's memo.
        """
        if self.closed or self._cold:
            return None
        recent = self._recent.get(id(request))
        if (
            recent is not None
            and recent[0] is request
            and recent[1] == datacenter
            and recent[2].view is recent[3]
        ):
            entry, found = recent[2], recent[4]
        else:
            agent_type = request.agent_type
            if agent_type is None:
                return None
            name = SERVICE_PREFIX + agent_type
            service = None
            if self._selective:  # a selective watch answers its question (see _selective)
                narrowed = self._selector(request, request_key(request))
                service = self._selective.get((datacenter, name, narrowed)) if narrowed else None
            if service is None:
                service = self._services.get((datacenter, name))
                if service is None:
                    return None
                self._accelerate(request, None, datacenter, [service])
            entry, found = service, service.view.query(request)
            if len(self._recent) >= _RECENT_SIZE:
                del self._recent[next(iter(self._recent))]
            self._recent[id(request)] = (request, datacenter, entry, entry.view, found)
        # an entry stopped since (reaped, replaced, its cache closed) no longer runs: asked afresh below
        if entry.dirty or entry.metadata is not None:
            return None
        watch = entry.watch
        if watch.error is not None or not watch.running:
            return None
        now = self.clock()
        if watch.staleness(now) != 0.0 or entry.score_due(now):
            return None  # (scores due: query() brings them up to date)
        entry.last_used = now
        return (found if share else list(found)), watch.meta

    async def query(self, request: DiscoveryRequest, datacenter: str = "") -> CachedAnswer:
        """The agents of ``datacenter`` matching ``request``, from the views (starting watches as needed)."""
        if self.closed:
            raise CacheClosed()
        if self._cold:
            self._cold -= 1
            raise CacheCold()
        self._holders += 1
        try:
            key = request_key(request)
            misses = self._misses
            staleness = 0.0
            if request.agent_type is not None:
                names = [SERVICE_PREFIX + request.agent_type]
            else:
                catalog = await self._catalog(datacenter)
                staleness = catalog.watch.staleness()
                names = wire.service_names_for(request, catalog.services)
                if len(names) + 1 > self.max_watches:
                    raise TooManyServices(len(names))
            selective = await self._selective_watch(request, key, datacenter)
            entries = [self._services.get((datacenter, name)) for name in names]
            # A selective watch serves its question alone (see _selective).
            usable = [e for e in entries if e is not None and not e.dirty and e.usable()]
            ready = usable if selective is None else [selective]
            now = self.clock()
            if len(ready) == len(entries):
                for entry in ready:
                    entry.last_used = now
            else:
                pending = [name for name, entry in zip(names, entries, strict=True) if entry not in ready]
                if len(pending) > 1:
                    # first use of several services: their first reads go out together, not one after another
                    await asyncio.gather(*(self._service(datacenter, name) for name in pending))
                ready = [await self._service(datacenter, name) for name in names]
            self._accelerate(request, key, datacenter, ready)
            found: list[AgentInfo] = []
            known_leader = True
            last_contact = 0
            for entry in ready:
                staleness = max(staleness, self._check_fresh(entry.watch))
                if entry.metadata is not None:
                    staleness = max(staleness, self._check_fresh(entry.metadata.watch))
                found.extend(entry.scored_view(now).query(request, key))
                known_leader = known_leader and entry.watch.meta.known_leader
                last_contact = max(last_contact, entry.watch.meta.last_contact_ms)
            if staleness > 0:
                found = [agent.model_copy(update={"staleness": staleness}) for agent in found]
            hit = self._misses == misses
            return CachedAnswer(found, staleness, QueryMeta(0, known_leader, last_contact), hit)
        finally:
            self._holders -= 1
            if self._retiring and self._holders == 0 and not self.closed:
                self.closed = True
                self.budget.close_later(self)

    def _forget(self, key: WatchKey) -> _ServiceWatch:
        """Take a service's entry out of the cache (to stop it), and whatever peek remembers of any."""
        self._recent.clear()
        return self._services.pop(key)

    def _forget_selective(self, key: SelectiveKey) -> _ServiceWatch:
        """Take a selective watch out of the cache (to stop it), and whatever peek remembers of any."""
        self._recent.clear()
        return self._selective.pop(key)

    def _check_fresh(self, watch: Watch) -> float:
        staleness = watch.staleness()
        if staleness > self.max_stale:
            raise RegistryUnavailableError(
                f"Consul has not answered for {staleness:.1f}s (more than max_stale={self.max_stale:g}s) "
                f"for {watch.name}: {watch.error}",
                address=self.gateway.address,
            )
        return staleness

    async def _catalog(self, datacenter: str) -> _CatalogWatch:
        entry = self._catalogs.get(datacenter)
        if entry is None or not entry.usable():
            if entry is not None:
                await self._catalogs.pop(datacenter).stop()
            entry = await self._start((datacenter, ""), lambda: _CatalogWatch(self, datacenter))
        await self._use(entry)
        self._check_fresh(entry.watch)
        return entry

    async def _service(self, datacenter: str, service: str) -> _ServiceWatch:
        entry = self._services.get((datacenter, service))
        if entry is None or not entry.usable():
            if entry is not None:
                await self._forget((datacenter, service)).stop()
            entry = await self._start((datacenter, service), lambda: _ServiceWatch(self, datacenter, service))
        await self._use(entry)
        return entry

    def _selector(self, request: DiscoveryRequest, key: RequestKey) -> str | None:
        """:func:`_selective.selector` of ``request``, remembered by its key (it runs on cached reads)."""
        if key in self._selectors:
            return self._selectors[key]
        found = self._selectors[key] = selector(request)
        return found

    async def _selective_watch(
        self, request: DiscoveryRequest, key: RequestKey, datacenter: str
    ) -> _ServiceWatch | None:
        """The running selective watch that answers ``request``, if any, re-read first when this client
        just wrote (read-your-writes); one no longer usable is stopped (the type's watch answers, and the
        next question starts it again).

        The type's own watch, unused for SHADOWED_IDLE seconds while selective watches answer, is stopped by
        :meth:`reap_idle` (its 1.4 MB answers would only slow theirs), once per type: a question that
        starts it again shows that the type's questions are mixed, and it then stays until idle."""
        narrowed = self._selector(request, key) if self._selective else None
        if narrowed is None:
            return None
        service = SERVICE_PREFIX + str(request.agent_type)
        entry = self._selective.get((datacenter, service, narrowed))
        if entry is None:
            return None
        if not entry.usable():
            await self._forget_selective((datacenter, service, narrowed)).stop()
            return None
        await self._use(entry)
        return entry

    def _accelerate(
        self, request: DiscoveryRequest, key: RequestKey | None, datacenter: str, ready: list[_ServiceWatch]
    ) -> None:
        """Start, in the background, the selective watch for ``request`` when it qualifies and fits (see
        _selective): never by stopping another watch."""
        if len(ready) != 1 or ready[0].selector is not None or len(ready[0].view) < MIN_AGENTS:
            return
        narrowed = self._selector(request, request_key(request) if key is None else key)
        if narrowed is None:
            return
        typed = ready[0]
        watch_key = (datacenter, typed.service, narrowed)
        if watch_key in self._selective or watch_key in self._accelerating:
            return
        same_type = [k for k in (*self._selective, *self._accelerating) if k[:2] == watch_key[:2]]
        if len(same_type) >= PER_SERVICE or self.closed:
            return
        if self.watch_slots + 1 > self.max_watches or self.budget.in_use() + 1 > self.budget.limit:
            return
        task = asyncio.create_task(self._open_selective(watch_key), name=f"selective-watch:{narrowed}")
        self._accelerating[watch_key] = task
        task.add_done_callback(lambda _: self._accelerating.pop(watch_key, None))

    async def _open_selective(self, key: SelectiveKey) -> None:
        detach_deadline()  # nobody waits for it: the watch's own reads are bounded by the client's timeout
        entry = _ServiceWatch(self, key[0], key[1], key[2])
        try:
            await entry.start()
        except ConsulAgentsError as exc:
            log.debug("selective watch %s did not start: %s", entry.watch.name, exc)
            await entry.stop()
            return
        except BaseException:
            await asyncio.shield(entry.stop())
            raise
        if self.closed:
            await entry.stop()
            return
        self._selective[key] = entry
        self._recent.clear()  # peek's remembered answers of its question came from the type's watch
        self._ensure_reaper()
        self._reap_soon.set()  # the reaper's pace follows: it may be sleeping idle_timeout / 4

    async def _use(self, entry: _Watched) -> None:
        entry.last_used = self.clock()
        if entry.dirty:
            entry.dirty = False
            self._misses += 1
            try:
                await entry.refresh()
            except ConsulAgentsError as exc:
                log.debug("refresh of %s after a write failed: %s", entry.watch.name, exc)
            except asyncio.CancelledError:
                entry.dirty = True  # the next reader re-reads instead
                raise

    async def _start(self, key: WatchKey, make: Callable[[], _Watched]) -> Any:
        """Start the watch for ``key`` ((datacenter, "") is the catalog's), shared by concurrent first
        users; raises its first read's error, or TooManyServices when no watch may start.

        The start runs in a task of the cache's own, bounded by the deadline of the caller that began it:
        cancelling one waiting caller never cancels the start the others wait for (nor makes them see
        CancelledError), and each caller waits at most what is left of its own deadline (a caller that
        joined a start begun with a longer one raises RegistryTimeoutError at its own, the start going on
        for the others)."""
        self._misses += 1
        task = self._starting.get(key)
        where = f"{key[0] or 'local'}/{key[1] or 'catalog'}"
        if task is None:
            task = asyncio.create_task(self._open(key, make), name=f"watch-start:{where}")
            self._starting[key] = task
            task.add_done_callback(functools.partial(self._started, key))
        left = time_left()
        if left is None:
            return await asyncio.shield(task)
        try:
            async with asyncio.timeout(max(left, 0.0)) as scope:
                return await asyncio.shield(task)
        except TimeoutError:
            if not scope.expired():
                raise  # the start's own error (a RegistryTimeoutError of the caller that began it)
        raise RegistryTimeoutError(
            f"{describe_where(self.gateway.address, key[0] or None)} did not answer the first read of watch "
            f"{where} within the call's deadline (the watch goes on starting for the calls that have time "
            "left)",
            address=self.gateway.address,
            datacenter=key[0],
        )

    def _started(self, key: WatchKey, task: asyncio.Task[Any]) -> None:
        if self._starting.get(key) is task:
            del self._starting[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it; nobody may be left to wait

    async def _open(self, key: WatchKey, make: Callable[[], _Watched]) -> _Watched:
        if self.closed:
            raise CacheClosed()
        await self._make_room()
        entry = make()
        try:
            await entry.start()
            if self.closed:
                raise CacheClosed()
        except BaseException:
            await asyncio.shield(entry.stop())
            raise
        self._starting.pop(key, None)
        if isinstance(entry, _ServiceWatch):
            self._services[key] = entry
        else:
            assert isinstance(entry, _CatalogWatch)
            self._catalogs[key[0]] = entry
        self._ensure_reaper()
        return entry

    async def _make_room(self) -> None:
        """Stop this cache's least recently used watches so that the one starting fits within
        ``max_watches`` and the shared budget; TooManyServices when it still does not fit."""
        entries: list[tuple[float, tuple[str, ...]]] = [(w.last_used, k) for k, w in self._services.items()]
        entries += [(w.last_used, k) for k, w in self._selective.items()]
        entries += [(c.last_used, (dc, "")) for dc, c in self._catalogs.items()]
        entries.sort()
        while entries and (self.watch_slots > self.max_watches or self.budget.in_use() > self.budget.limit):
            _, key = entries.pop(0)
            if len(key) == 3:
                await self._forget_selective((key[0], key[1], key[2])).stop()
            elif key[1]:
                await self._forget((key[0], key[1])).stop()
            else:
                await self._catalogs.pop(key[0]).stop()
        if self.budget.in_use() > self.budget.limit:
            raise TooManyServices(self.budget.limit)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="discovery-cache-reaper")

    async def _reap(self) -> None:
        while self._services or self._selective or self._catalogs:
            period = self.idle_timeout / 4
            if self._selective:  # a type's own watch shadowed by selective ones stops within SHADOWED_IDLE
                period = min(period, SHADOWED_IDLE / 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reap_soon.wait(), max(period, 0.01))
            self._reap_soon.clear()
            await self.reap_idle()

    async def reap_idle(self) -> int:
        """Stop the watches unused for ``idle_timeout``; returns how many were stopped."""
        limit = self.clock() - self.idle_timeout
        idle_services = [k for k, w in self._services.items() if w.last_used < limit]
        idle_catalogs = [k for k, c in self._catalogs.items() if c.last_used < limit]
        idle_selective = [k for k, w in self._selective.items() if w.last_used < limit]
        shadowed = self.clock() - SHADOWED_IDLE
        for datacenter, service, _ in list(self._selective):
            typed = self._services.get((datacenter, service))
            once = (datacenter, service) not in self._shadowed  # once per type (see _selective_watch)
            if typed is not None and once and typed.last_used < shadowed:
                self._shadowed[(datacenter, service)] = True
                if (datacenter, service) not in idle_services:
                    idle_services.append((datacenter, service))
        for key in idle_services:
            await self._forget(key).stop()
        for selective in idle_selective:
            await self._forget_selective(selective).stop()
        for dc in idle_catalogs:
            await self._catalogs.pop(dc).stop()
        return len(idle_services) + len(idle_selective) + len(idle_catalogs)

    async def close(self) -> None:
        """Stop every watch, those still starting included."""
        self.closed = True
        starting = [*self._starting.values(), *self._accelerating.values()]
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        entries = self._entries()
        self._services.clear()
        self._selective.clear()
        self._recent.clear()
        self._catalogs.clear()
        for entry in entries:
            await entry.stop()
        self.budget.leave(self)
