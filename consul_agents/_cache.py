"""Discovery from memory: one watch per Consul service (per datacenter), indexed views, memoised answers.

Each watched service has a :class:`ServiceView`: an immutable snapshot of its agents, indexed by capability
and status, with a small memo of answers. A new snapshot replaces the old one on every change Consul
reports, so a memoised answer can never outlive the state it was computed from. A repeated question costs
a dictionary hit; a new one costs an intersection of index sets, never a scan of every agent.

On each change Consul re-sends every instance of the service (Consul 1.8 has no streaming). The answer is
split into its entries without parsing it, and an entry whose text is unchanged keeps the AgentInfo built
from it, so only the changed entries are parsed (see :func:`_wire.split_health_entries`).

Questions that name no agent type need the list of services: one more watch, on ``/v1/catalog/services``,
per datacenter. Watches start on first use and stop after ``idle_timeout`` without use, or on close.

Fail-static: when a watch cannot reach Consul, its last snapshot keeps answering, marked with its staleness,
for ``max_stale`` seconds; after that, :class:`RegistryUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from consul_agents import _wire as wire
from consul_agents._errors import ConsulAgentsError, ConsulRequestError, RegistryUnavailableError
from consul_agents._gateway import ConsulGateway, ConsulResponse, QueryMeta
from consul_agents._metrics import observe_watch_lag
from consul_agents._models import SERVICE_PREFIX, AgentInfo, AgentStatus, DiscoveryRequest
from consul_agents._watch import Watch, WatchPolicy

__all__ = ["CachedAnswer", "DiscoveryCache", "ServiceView", "TooManyServices", "WatchBudget", "request_key"]

log = logging.getLogger("consul_agents.cache")

_MEMO_SIZE = 256
#: Each running watch holds one connection of the gateway's pool (128) for its blocking read, and Consul
#: closes connections beyond 200 per client address: at most this many watches run at once per connection
#: pool, whatever the number of caches (per-token views) sharing it.
MAX_WATCHES = 48


class WatchBudget:
    """How many watches the caches sharing one connection pool may run together."""

    def __init__(self, limit: int = MAX_WATCHES) -> None:
        self.limit = limit
        self._caches: weakref.WeakSet[DiscoveryCache] = weakref.WeakSet()

    def join(self, cache: DiscoveryCache) -> None:
        self._caches.add(cache)

    def in_use(self) -> int:
        return sum(cache.watch_slots for cache in self._caches)


class TooManyServices(Exception):
    """The question spans more services than the cache may watch at once: ask Consul directly."""


RequestKey = tuple[Any, ...]


def request_key(request: DiscoveryRequest) -> RequestKey:
    """A hashable key equal for requests that ask the same thing."""
    return (
        request.agent_type,
        tuple(sorted(request.capabilities)),
        request.status,
        request.max_load,
        tuple(sorted(request.tags.items())),
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
        self._memo: LRUCache[RequestKey, list[AgentInfo]] = LRUCache(maxsize=_MEMO_SIZE)

    def __len__(self) -> int:
        return len(self.agents)

    def query(self, request: DiscoveryRequest, key: RequestKey | None = None) -> list[AgentInfo]:
        """The agents matching ``request`` (exactly those ``wire.matches`` accepts), by agent id.

        The returned list is shared with the memo: callers copy it before handing it out.
        """
        key = request_key(request) if key is None else key
        found = self._memo.get(key)
        if found is None:
            found = self._compute(request)
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
        return [self.agents[p] for p in sorted(positions) if wire.matches(request, self.agents[p])]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    agents: list[AgentInfo]
    #: Seconds since Consul last answered for the oldest view used (0 while every watch is healthy).
    staleness: float
    meta: QueryMeta
    #: False when a watch had to be started or re-read for this answer (a round trip to Consul).
    hit: bool = True


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
    ) -> None:
        self.cache = cache
        self.datacenter = datacenter
        self.last_used = cache.clock()
        self._operation = operation
        self._path = path
        self._decode = decode
        name = f"{datacenter or 'local'}/{name}"
        self.watch = Watch(name, self._fetch, self._deliver, policy=cache.policy, clock=cache.clock)

    async def _fetch(self, index: int | None, wait: float) -> ConsulResponse:
        return await self.cache.gateway.request(
            self._operation,
            "GET",
            self._path,
            datacenter=self.datacenter or None,
            index=index,
            wait=wait,
            consistency="stale",
            decode=self._decode,
        )

    async def _deliver(self, response: ConsulResponse) -> None:
        raise NotImplementedError


class _ServiceWatch(_Watched):
    """A watch on ``/v1/health/service/<name>`` in one datacenter and the view it keeps current."""

    def __init__(self, cache: DiscoveryCache, datacenter: str, service: str) -> None:
        operation = f"watch agents of service {service!r}"
        # The answer's text: _reuse splits it and decodes only the entries that changed.
        super().__init__(cache, datacenter, service, operation, f"/v1/health/service/{service}", decode=str)
        self.service = service
        self.view = ServiceView(())
        self.dirty = False
        #: The AgentInfo built from each entry of the last answer, keyed by the entry's text (None for an
        #: entry that is not an agent, so it is not judged again while its text stays the same).
        self._converted: dict[str, AgentInfo | None] = {}

    async def _deliver(self, response: ConsulResponse) -> None:
        started = time.monotonic()
        text = response.body if isinstance(response.body, str) else ""
        converted, fresh = self._reuse(text)
        if fresh:
            infos = await self.cache.to_infos([e for _, e in fresh], self.datacenter or None)
            converted.update(zip((key for key, _ in fresh), infos, strict=True))
        self._converted = converted
        self.view = ServiceView(info for info in converted.values() if info is not None)
        self.dirty = False
        observe_watch_lag(response.meta.last_contact_ms / 1000 + time.monotonic() - started)
        self.cache.changed()

    def _reuse(self, text: str) -> tuple[dict[str, AgentInfo | None], list[tuple[str, Any]]]:
        """The AgentInfos kept from the last answer for the entries that did not change, keyed by their
        text, and the changed entries decoded, with their keys; all decoded afresh when the answer cannot
        be split (each then keyed by its position, a key no piece of text can equal)."""
        pieces = wire.split_health_entries(text)
        if pieces is not None:
            reused: dict[str, AgentInfo | None] = {}
            fresh: list[tuple[str, Any]] = []
            for piece in pieces:
                if piece in self._converted:
                    reused[piece] = self._converted[piece]
                    continue
                entry = wire.health_entry(piece)
                if entry is None:
                    break
                fresh.append((piece, entry))
            else:
                return reused, fresh
        entries = wire.health_entries(text)
        if not isinstance(entries, list):
            raise ConsulRequestError(f"watch {self.service!r}", 200, "the answer is not a list of entries")
        return {}, [(f"#{position}", entry) for position, entry in enumerate(entries)]


class _CatalogWatch(_Watched):
    """A watch on ``/v1/catalog/services`` in one datacenter: which agent services exist, with their tags."""

    def __init__(self, cache: DiscoveryCache, datacenter: str) -> None:
        super().__init__(cache, datacenter, "catalog", "watch agent types", "/v1/catalog/services")
        self.services: dict[str, list[str]] = {}

    async def _deliver(self, response: ConsulResponse) -> None:
        body: Mapping[str, Any] = response.body or {}
        self.services = {name: list(tags or []) for name, tags in body.items() if wire.is_agent_service(name)}
        self.cache.changed()


class DiscoveryCache:
    """The watches of one registry client, keyed by (datacenter, service); "" is the local datacenter."""

    def __init__(
        self,
        gateway: ConsulGateway,
        *,
        to_infos: Callable[[Sequence[Mapping[str, Any]], str | None], Awaitable[list[AgentInfo | None]]],
        max_stale: float = 60.0,
        idle_timeout: float = 300.0,
        max_watches: int = MAX_WATCHES,
        budget: WatchBudget | None = None,
        policy: WatchPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        #: Health entries to AgentInfos, position for position (None: not an agent), reading KV metadata
        #: where needed (the registry's, shared with direct queries).
        self.to_infos = to_infos
        self.max_stale = max_stale
        self.idle_timeout = idle_timeout
        self.max_watches = max_watches
        self.budget = budget or WatchBudget(max_watches)
        self.budget.join(self)
        self.policy = policy or WatchPolicy()
        self.clock = clock
        self._services: dict[tuple[str, str], _ServiceWatch] = {}
        self._catalogs: dict[str, _CatalogWatch] = {}
        self._starting: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._misses = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"DiscoveryCache(watches={self.watch_count})"

    @property
    def watch_slots(self) -> int:
        """Watches this cache holds or is starting (each one a pooled connection)."""
        return len(self._services) + len(self._catalogs) + len(self._starting)

    @property
    def watch_count(self) -> int:
        return sum(w.watch.running for w in self._services.values()) + sum(
            c.watch.running for c in self._catalogs.values()
        )

    def watches(self) -> list[Watch]:
        return [w.watch for w in self._services.values()] + [c.watch for c in self._catalogs.values()]

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

    def invalidate(self, service: str | None = None) -> None:
        """This client just wrote to ``service`` (None: unknown): the next read of it asks Consul directly."""
        for (_, name), entry in self._services.items():
            if service is None or name == service:
                entry.dirty = True

    async def query(self, request: DiscoveryRequest, datacenter: str = "") -> CachedAnswer:
        """The agents of ``datacenter`` matching ``request``, from the views (starting watches as needed)."""
        if self.closed:
            raise RuntimeError("the discovery cache is closed")
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
        found: list[AgentInfo] = []
        known_leader = True
        last_contact = 0
        for name in names:
            entry = await self._service(datacenter, name)
            staleness = max(staleness, self._check_fresh(entry.watch))
            found.extend(entry.view.query(request, key))
            known_leader = known_leader and entry.watch.meta.known_leader
            last_contact = max(last_contact, entry.watch.meta.last_contact_ms)
        if staleness > 0:
            found = [agent.model_copy(update={"staleness": staleness}) for agent in found]
        hit = self._misses == misses
        return CachedAnswer(found, staleness, QueryMeta(0, known_leader, last_contact), hit)

    def _check_fresh(self, watch: Watch) -> float:
        staleness = watch.staleness()
        if staleness > self.max_stale:
            raise RegistryUnavailableError(
                f"Consul has not answered for {staleness:.1f}s (more than max_stale={self.max_stale:g}s) "
                f"for {watch.name}: {watch.error}",
                address=self.gateway.address,
            )
        return staleness

    @staticmethod
    def _usable(watch: Watch | None) -> bool:
        """A running watch whose last read did not end in an answered error (denied, bad request).

        Only an outage is served fail-static: when Consul answers that the token is no longer allowed,
        the watch is replaced, so the caller gets the answer Consul gives now.
        """
        if watch is None or not watch.running:
            return False
        return watch.error is None or isinstance(watch.error, RegistryUnavailableError)

    async def _catalog(self, datacenter: str) -> _CatalogWatch:
        entry = self._catalogs.get(datacenter)
        if entry is None or not self._usable(entry.watch):
            if entry is not None:
                await self._catalogs.pop(datacenter).watch.stop()
            entry = await self._start((datacenter, ""), lambda: _CatalogWatch(self, datacenter))
        entry.last_used = self.clock()
        self._check_fresh(entry.watch)
        return entry

    async def _service(self, datacenter: str, service: str) -> _ServiceWatch:
        entry = self._services.get((datacenter, service))
        if entry is None or not self._usable(entry.watch):
            if entry is not None:
                await self._services.pop((datacenter, service)).watch.stop()
            entry = await self._start((datacenter, service), lambda: _ServiceWatch(self, datacenter, service))
        entry.last_used = self.clock()
        if entry.dirty:
            entry.dirty = False
            self._misses += 1
            try:
                await entry.watch.refresh()
            except ConsulAgentsError as exc:
                log.debug("refresh of %s after a write failed: %s", entry.watch.name, exc)
        return entry

    async def _start(self, key: tuple[str, str], make: Callable[[], Any]) -> Any:
        """Start the watch for ``key`` ((datacenter, "") is the catalog's), shared by concurrent first
        users; raises its first read's error, or TooManyServices when no watch may start."""
        self._misses += 1
        pending = self._starting.get(key)
        if pending is not None:
            await asyncio.shield(pending)
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._starting[key] = future
            try:
                await self._make_room()
                entry = make()
                await entry.watch.start()
                if not key[1]:
                    self._catalogs[key[0]] = entry
                else:
                    self._services[key] = entry
                future.set_result(None)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved: concurrent waiters get it through shield
                raise
            finally:
                del self._starting[key]
            self._ensure_reaper()
        return self._services[key] if key[1] else self._catalogs[key[0]]

    async def _make_room(self) -> None:
        """Stop this cache's least recently used watches so that the one starting fits within
        ``max_watches`` and the shared budget; TooManyServices when it still does not fit."""
        entries: list[tuple[float, tuple[str, str]]] = [(w.last_used, k) for k, w in self._services.items()]
        entries += [(c.last_used, (dc, "")) for dc, c in self._catalogs.items()]
        entries.sort()
        while entries and (self.watch_slots > self.max_watches or self.budget.in_use() > self.budget.limit):
            _, (datacenter, service) = entries.pop(0)
            if service:
                await self._services.pop((datacenter, service)).watch.stop()
            else:
                await self._catalogs.pop(datacenter).watch.stop()
        if self.budget.in_use() > self.budget.limit:
            raise TooManyServices(self.budget.limit)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap(), name="discovery-cache-reaper")

    async def _reap(self) -> None:
        while self._services or self._catalogs:
            await asyncio.sleep(max(self.idle_timeout / 4, 0.01))
            await self.reap_idle()

    async def reap_idle(self) -> int:
        """Stop the watches unused for ``idle_timeout``; returns how many were stopped."""
        limit = self.clock() - self.idle_timeout
        idle_services = [k for k, w in self._services.items() if w.last_used < limit]
        idle_catalogs = [k for k, c in self._catalogs.items() if c.last_used < limit]
        for key in idle_services:
            await self._services.pop(key).watch.stop()
        for dc in idle_catalogs:
            await self._catalogs.pop(dc).watch.stop()
        return len(idle_services) + len(idle_catalogs)

    async def close(self) -> None:
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for watch in self.watches():
            await watch.stop()
        self._services.clear()
        self._catalogs.clear()
