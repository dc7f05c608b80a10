"""The one module that talks to Consul: one long-lived aiohttp session, through py-consul's HTTP client.

Everything that can go wrong on the wire is translated into this project's exceptions in one place,
:func:`_raise_for`/:meth:`ConsulGateway._send`; aiohttp and py-consul exceptions never reach callers.
Reads are retried a few times with a short back-off (they are idempotent); writes are never retried
blindly, because a write that timed out may still have been applied.

Time bounds (as Go's ``context.WithDeadline``): :func:`call_deadline` gives a whole call one deadline,
and every request inside it, retries and datacenter failover included, spends what is left of it. A
request outside any call deadline gets the client's ``timeout`` on its own. Background loops (watches,
heartbeats) run outside the deadline of the call that started them (:func:`detach_deadline`).

The token travels only in the ``X-Consul-Token`` header, never in a URL, and never appears in a message,
a repr or a log line.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import consul.aio
import consul.base

from consul_agents._errors import (
    ConsulRequestError,
    InvalidAgentError,
    PermissionDeniedError,
    RegistryTimeoutError,
    RegistryUnavailableError,
)
from consul_agents._lingering import LINGERING, lingers_until
from consul_agents._settings import ConsulSettings

__all__ = [
    "CALL_DEADLINE",
    "ConsulGateway",
    "ConsulResponse",
    "QueryMeta",
    "begin_call",
    "call_deadline",
    "describe_where",
    "detach_deadline",
    "time_left",
]

log = logging.getLogger("consul_agents.gateway")

#: Concurrent connections to Consul per gateway; more requests wait for a free one. A Consul agent accepts
#: at most 200 connections from one client address (``limits.http_max_conns_per_client``) and closes the
#: rest at once, so a burst of 250 writes from one registry lost 50 of them with a larger pool. 128 leaves
#: the other 72 to other processes on the same host (sidecars, the CLI); watches count against the 128.
MAX_CONNECTIONS = 128
#: Connections Consul still counts after this process gave up on them (see _lingering) take places among
#: the 128; when they fill them, this many may still open (out of the 72 left to others) instead of every
#: call stalling until they end.
MIN_CONNECTIONS = 16

#: Back-off before each retry of a read that found Consul unavailable.
_READ_RETRY_DELAYS = (0.05, 0.25)
#: ... and of a read the Consul agent answered with an RPC error: the server it asked just died. The agent
#: moves on to another server on the next request, and may take a second to learn which ones are gone, so
#: these are retried for longer (1.8 s in all), never past the call's deadline. An RPC error from a remote
#: datacenter asked by name gets the short schedule: its servers are dead or unreachable (each dead
#: datacenter cost 1.8 s of retries), and failover has other datacenters to ask.
_RPC_ERROR_RETRY_DELAYS = (0.05, 0.25, 0.5, 1.0)
#: RPC errors that a retry cannot cure. "No cluster leader": Consul already held the request for its
#: rpc_hold_timeout (7 s) waiting for an election, so each retry would cost 7 s more (a 9 s timeout took
#: 22 s). The other two: a remote datacenter has no server reachable; datacenter failover handles them.
_FINAL_OUTAGES = ("no cluster leader", "no path to datacenter", "remote dc has no server")
_DETAIL_LIMIT = 200

#: The monotonic time by which the current registry call must be done: None outside any call, infinity for
#: a call with no time bound. Being set is also what makes a registry method called inside another one part
#: of it (see consul_agents._instrument): one variable, set once per call, where two cost 0.4 us more on
#: every cached hit.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "consul_agents_deadline", default=None
)
#: The same variable, for the registry's per-call wrapper (:func:`begin_call` and ``CALL_DEADLINE.get()``).
CALL_DEADLINE = _DEADLINE


class call_deadline:
    """Run the block with one deadline ``seconds`` from now, shared by every request made inside it; an
    enclosing deadline that comes sooner stays in force (a nested call never extends its caller's budget).
    None: the block inherits the enclosing deadline, if any. (A class, not a generator: it wraps every
    registry call, cached discovery included, where a generator-based context manager cost 5 us.)"""

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._token: contextvars.Token[float | None] | None = None

    def __enter__(self) -> None:
        if self._seconds is None:
            return
        mine = time.monotonic() + max(self._seconds, 0.0)
        current = _DEADLINE.get()
        if current is None or mine < current:
            self._token = _DEADLINE.set(mine)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _DEADLINE.reset(self._token)
            self._token = None


def begin_call(seconds: float | None, now: float) -> contextvars.Token[float | None]:
    """Start a registry call at monotonic time ``now`` with ``seconds`` to run (None: no bound); the token
    to give ``CALL_DEADLINE.reset()`` when it ends. Only for a call outside any other (``CALL_DEADLINE.get()``
    is None): an enclosing call's deadline is never replaced."""
    return _DEADLINE.set(math.inf if seconds is None else now + max(seconds, 0.0))


def time_left() -> float | None:
    """Seconds left before the current call's deadline (may be negative), or None outside any deadline."""
    deadline = _DEADLINE.get()
    return None if deadline is None or deadline == math.inf else deadline - time.monotonic()


def detach_deadline() -> None:
    """Free the current task from the call that created it, its deadline included (for background loops: a
    task copies its creator's context, and a watch must outlive the discovery that started it)."""
    _DEADLINE.set(None)


@dataclass(frozen=True, slots=True)
class QueryMeta:
    """What Consul says about a read besides its body (Consul's Go API calls this QueryMeta)."""

    index: int = 0
    known_leader: bool = True
    #: Milliseconds since the answering server last heard from the leader (stale reads).
    last_contact_ms: int = 0


@dataclass(frozen=True, slots=True)
class ConsulResponse:
    status: int
    body: Any
    meta: QueryMeta


class _HTTPClient(consul.aio.HTTPClient):  # type: ignore[misc]
    """py-consul's asyncio client with a connector built the current aiohttp way.

    py-consul 1.8 passes ``verify_ssl``/``ssl_context`` to aiohttp's TCPConnector, which aiohttp deprecates;
    everything else (URI building, request sending) is py-consul's own.
    """

    def __init__(self, settings: ConsulSettings) -> None:
        consul.base.HTTPClient.__init__(
            self, settings.host, settings.port, settings.scheme, verify=settings.verify
        )
        ssl_option: ssl.SSLContext | bool = False
        if settings.scheme == "https" and settings.verify:
            ssl_option = ssl.create_default_context(cafile=settings.ca_cert)
        connector = aiohttp.TCPConnector(ssl=ssl_option, limit=MAX_CONNECTIONS)
        self._session = aiohttp.ClientSession(connector=connector)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _meta_from(headers: Any) -> QueryMeta:
    def number(name: str) -> int:
        try:
            return int(headers.get(name, 0))
        except (TypeError, ValueError):
            return 0

    return QueryMeta(
        index=number("X-Consul-Index"),
        known_leader=str(headers.get("X-Consul-KnownLeader", "true")).lower() == "true",
        last_contact_ms=number("X-Consul-LastContact"),
    )


def _decode(body: str) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


def _tls_reason(exc: BaseException) -> str:
    """Why a TLS handshake failed, e.g. "certificate verification failed: self-signed certificate"."""
    cause = getattr(exc, "certificate_error", None) or exc  # aiohttp wraps the ssl module's error
    verify_message = getattr(cause, "verify_message", None)
    if verify_message:
        return f"certificate verification failed: {verify_message}"
    reason = getattr(cause, "reason", None)
    if isinstance(cause, ssl.SSLError) and reason:
        return f"TLS error: {reason}"
    return f"certificate or TLS handshake error ({type(exc).__name__})"


_OUTAGE_REASONS = (
    "no cluster leader",
    "rpc error",
    "no path to",
    "no known consul servers",
    "remote dc has no server",
)


def _is_outage(status: int, detail: str) -> bool:
    """5xx answers that mean "Consul cannot serve now", not "your request is wrong"."""
    lowered = detail.lower()
    return status in (502, 503, 504) or (
        status == 500 and any(reason in lowered for reason in _OUTAGE_REASONS)
    )


def _is_retryable(exc: RegistryUnavailableError) -> bool:
    """An outage worth one more try of a read (not a timeout, nor an answer a retry cannot change)."""
    lowered = str(exc).lower()
    return not isinstance(exc, RegistryTimeoutError) and not any(r in lowered for r in _FINAL_OUTAGES)


def describe_where(address: str, datacenter: str | None) -> str:
    """Who failed: the Consul agent, or a remote datacenter reached through it."""
    if datacenter:
        return f"Consul datacenter {datacenter!r} (asked through {address})"
    return f"Consul at {address}"


def _raise_for(
    operation: str, address: str, status: int, body: str, *, datacenter: str | None = None
) -> None:
    """Map an error answer from Consul to an exception (pure; tested without a server)."""
    detail = body.strip()[:_DETAIL_LIMIT]
    if status in (401, 403):
        if "acl not found" in detail.lower():
            # Consul's answer to a token it does not know: never issued, deleted, or revoked.
            detail = "the ACL token is unknown to Consul or has been revoked"
        raise PermissionDeniedError(operation, detail)
    if _is_outage(status, detail):
        raise RegistryUnavailableError(
            f"{describe_where(address, datacenter)} cannot serve {operation} now: {status} {detail}",
            address=address,
            datacenter=datacenter or "",
        )
    raise ConsulRequestError(operation, status, detail)


class ConsulGateway:
    """An open connection to one Consul agent. Use as ``async with ConsulGateway(settings) as gw``."""

    def __init__(self, settings: ConsulSettings) -> None:
        self.settings = settings
        self._http: _HTTPClient | None = None
        #: Set on views made by with_token(): they send through the parent's session and never close it.
        self._parent: ConsulGateway | None = None
        #: The owner's requests in flight, and those waiting for one (see _admit).
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: The settings the headers were last worked out for, and those headers (see _headers).
        self._made_headers: tuple[ConsulSettings, dict[str, str]] | None = None

    def __repr__(self) -> str:
        return f"ConsulGateway(address={self.settings.address!r}, datacenter={self.settings.datacenter!r})"

    @property
    def address(self) -> str:
        return self.settings.address

    async def __aenter__(self) -> Self:
        self._http = _HTTPClient(self.settings)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def with_token(self, token: str | None) -> ConsulGateway:
        """A view of this gateway that sends ``token`` (None or "": anonymous) over the same session.

        Closing a view does nothing; the session belongs to this gateway. Used by servers that forward each
        caller's own token without opening a connection pool per caller.
        """
        view = ConsulGateway(dataclasses.replace(self.settings, token=token or None))
        view._parent = self._parent or self
        return view

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    def _headers(self) -> dict[str, str]:
        """The headers of every request (a fresh dict: aiohttp may add to it), worked out once per
        settings: whether Consul is on loopback costs a URL split and an address parse."""
        settings = self.settings
        made = self._made_headers
        if made is None or made[0] is not settings:
            made = self._made_headers = (settings, self._headers_for(settings))
        return dict(made[1])

    @staticmethod
    def _headers_for(settings: ConsulSettings) -> dict[str, str]:
        headers = {"X-Consul-Token": settings.token} if settings.token else {}
        if settings.loopback:
            # Consul gzips every answer for a client that accepts it (aiohttp does by default). Over
            # loopback that only costs CPU on both sides: 1,000 instances (1.4 MB) arrived 3 ms later
            # gzipped than plain, 16 ms later from a -dev agent (2.9 MB, indented). Across a network the
            # 35x smaller answer is worth it.
            headers["Accept-Encoding"] = "identity"
        return headers

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        params: list[tuple[str, Any]],
        body: Any,
        timeout: float,
        datacenter: str | None,
        raw: bool = False,
    ) -> consul.base.Response:
        http = self._parent._http if self._parent is not None else self._http
        if http is None:
            raise RuntimeError("ConsulGateway is not open: use it as an async context manager")
        data = "" if body is None else (body if isinstance(body, str | bytes) else json.dumps(body))
        headers = self._headers()
        if method not in ("GET", "PUT", "POST", "DELETE"):
            raise ValueError(f"unsupported method {method}")
        # py-consul's get() takes no body; its put(), post() and delete() do.
        options: dict[str, Any] = {"params": params, "headers": headers, "connections_timeout": timeout}
        if method != "GET":
            options["data"] = data
        elif raw:
            options["raw"] = True  # the body as bytes: py-consul would decode it as strict UTF-8
        where = describe_where(self.address, datacenter)
        try:
            response: consul.base.Response = await getattr(http, method.lower())(lambda r: r, path, **options)
        except (TimeoutError, consul.Timeout) as exc:
            raise RegistryTimeoutError(
                f"{where} did not answer {operation} within {timeout:.3g}s",
                address=self.address,
                datacenter=datacenter or "",
            ) from exc
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise RegistryUnavailableError(
                f"TLS to Consul at {self.address} failed during {operation}: {_tls_reason(exc)} "
                "(give the CA certificate that signed Consul's with ca_cert= or CONSUL_CACERT)",
                address=self.address,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RegistryUnavailableError(
                f"Consul at {self.address} is unreachable ({type(exc).__name__}) during {operation}",
                address=self.address,
            ) from exc
        return response

    def _out_of_time(self, operation: str, datacenter: str | None) -> RegistryTimeoutError:
        return RegistryTimeoutError(
            f"{describe_where(self.address, datacenter)}: no time left for {operation} "
            f"(the call's deadline passed; timeout {self.settings.timeout:g}s)",
            address=self.address,
            datacenter=datacenter or "",
        )

    async def request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        datacenter: str | None = None,
        index: int | None = None,
        wait: float | None = None,
        consistency: str | None = None,
        max_stale: float | None = None,
        allow_404: bool = False,
        decode: Callable[[Any], Any] | None = None,
        raw: bool = False,
    ) -> ConsulResponse:
        """Send one request; reads (GET) are retried on outage, writes are not.

        The request, its retries and their back-off all end by the call's deadline (:func:`call_deadline`),
        or within the client's ``timeout`` when there is none. ``index``/``wait`` make a blocking query; its
        timeout is then wait + wait/16 + the normal timeout, longer than Consul's own jitter, as Consul's
        blocking-query rules require. ``max_stale`` (with ``consistency="stale"``) makes the Consul agent
        re-ask the leader when the server that answered last heard from it longer ago than that. ``decode``
        turns a successful answer's text into its body (default: JSON, or the text when it is not JSON).
        With ``raw`` (GET only) ``decode`` gets the body's bytes: for KV values, which need not be UTF-8.
        ``datacenter`` names a datacenter to ask instead of the client's; errors then name it.
        """
        if any(segment in (".", "..") for segment in path.split("/")):
            # The URL would be normalised to another endpoint, called with this client's token.
            raise InvalidAgentError(f"refusing {operation}: its request path has a dot segment", field="path")
        query: list[tuple[str, Any]] = list((params or {}).items())
        dc = datacenter or self.settings.datacenter
        if dc:
            query.append(("dc", dc))
        if consistency in ("stale", "consistent"):
            query.append((consistency, ""))
            if consistency == "stale" and max_stale is not None and max_stale > 0:
                query.append(("max_stale", f"{max(int(max_stale * 1000), 1)}ms"))
        budget = self.settings.timeout
        if index is not None:
            query.append(("index", max(index, 1)))
            if wait is not None:
                query.append(("wait", f"{max(int(wait * 1000), 1)}ms"))
                budget += wait + wait / 16
        end = time.monotonic() + budget
        call_end = _DEADLINE.get()
        if call_end is not None:
            end = min(end, call_end)
        delays: tuple[float, ...] = _READ_RETRY_DELAYS if method == "GET" else ()
        attempt = 0
        while True:
            timeout = end - time.monotonic()
            if timeout <= 0:
                raise self._out_of_time(operation, datacenter)
            try:
                response = await self._send_admitted(
                    operation,
                    method,
                    path,
                    query,
                    body,
                    timeout,
                    datacenter,
                    raw,
                    blocking=index is not None,
                    wait=wait,
                )
                if response.code == 404 and allow_404:
                    return ConsulResponse(404, None, _meta_from(response.headers))
                if response.code >= 400:
                    detail = (
                        response.body.decode("utf-8", "replace")
                        if isinstance(response.body, bytes)
                        else str(response.body)
                    )
                    if delays and response.code == 500 and "rpc error" in detail.lower() and not datacenter:
                        # A local server died: the agent needs a moment to move on to another. In a
                        # remote datacenter (asked by name) failover moves on instead.
                        delays = _RPC_ERROR_RETRY_DELAYS
                    _raise_for(operation, self.address, response.code, detail, datacenter=datacenter)
                decoded = (decode or _decode)(response.body)
                return ConsulResponse(response.code, decoded, _meta_from(response.headers))
            except RegistryUnavailableError as exc:
                if attempt >= len(delays) or not _is_retryable(exc):
                    raise
                pause = delays[attempt]
                if time.monotonic() + pause >= end:
                    raise  # no time left for another try: the error that happened, not a timeout
                log.debug("retrying %s after: %s", operation, exc)
                await asyncio.sleep(pause)
                attempt += 1

    async def _send_admitted(
        self,
        operation: str,
        method: str,
        path: str,
        params: list[tuple[str, Any]],
        body: Any,
        timeout: float,
        datacenter: str | None,
        raw: bool,
        *,
        blocking: bool,
        wait: float | None,
    ) -> consul.base.Response:
        """_send, once the pool may open one more connection; a request given up on before Consul answered
        is recorded as lingering (Consul keeps counting its connection until it would have answered)."""
        owner = self._parent or self
        started = time.monotonic()
        try:
            await owner._admit(started + timeout)
        except TimeoutError as exc:
            raise RegistryTimeoutError(
                f"{describe_where(self.address, datacenter)}: no connection became free for {operation} "
                f"within {timeout:.3g}s ({LINGERING.count(self.address)} closed ones still counted by "
                "Consul)",
                address=self.address,
                datacenter=datacenter or "",
            ) from exc
        sent = time.monotonic()
        # The wait for a place counts in the call's time, like the rest of the call.
        remaining = max(started + timeout - sent, 0.001)
        try:
            return await self._send(operation, method, path, params, body, remaining, datacenter, raw)
        except (asyncio.CancelledError, RegistryTimeoutError):
            # Given up on before Consul answered: it may keep the connection open until it would have.
            LINGERING.add(self.address, lingers_until(sent, blocking=blocking, wait=wait))
            raise
        finally:
            owner._in_flight -= 1
            owner._wake()

    def _has_room(self) -> bool:
        return self._in_flight < max(MAX_CONNECTIONS - LINGERING.count(self.address), MIN_CONNECTIONS)

    async def _admit(self, deadline: float) -> None:
        """Take a place among the pool's MAX_CONNECTIONS, counting the connections Consul still holds
        open for this process (see _lingering); first come, first served. TimeoutError at ``deadline``."""
        if not self._waiters and self._has_room():
            self._in_flight += 1
            return
        loop = asyncio.get_running_loop()
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            now = time.monotonic()
            end = LINGERING.next_end(self.address)
            delay = deadline - now if end is None else min(deadline, end) - now
            # A timer, not asyncio.wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as
            # the future completes (a watch's stop then waited for ever on a loop that kept running).
            timer = loop.call_later(max(delay, 0.0), _resolve, waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # the place this waiter was woken for goes to the next one
                raise
            finally:
                timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._has_room():
                self._in_flight += 1
                if self._has_room():
                    self._wake()  # room for more than this one (a closed connection ended on Consul's side)
                return
            if time.monotonic() >= deadline:
                raise TimeoutError

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def get(self, operation: str, path: str, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "GET", path, **kwargs)

    async def put(self, operation: str, path: str, body: Any = None, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "PUT", path, body=body, **kwargs)

    async def post(self, operation: str, path: str, body: Any = None, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "POST", path, body=body, **kwargs)

    async def delete(self, operation: str, path: str, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "DELETE", path, **kwargs)
