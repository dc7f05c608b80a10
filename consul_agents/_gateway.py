"""The one module that talks to Consul: one long-lived aiohttp session, through py-consul's HTTP client.

Everything that can go wrong on the wire is translated into this project's exceptions in one place,
:func:`_raise_for`/:meth:`ConsulGateway._send`; aiohttp and py-consul exceptions never reach callers.
Reads are retried a few times with a short back-off (they are idempotent); writes are never retried
blindly, because a write that timed out may still have been applied.

The token travels only in the ``X-Consul-Token`` header, never in a URL, and never appears in a message,
a repr or a log line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
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
from consul_agents._settings import ConsulSettings

__all__ = ["ConsulGateway", "ConsulResponse", "QueryMeta"]

log = logging.getLogger("consul_agents.gateway")

#: Concurrent connections to Consul per gateway; more requests wait for a free one. A Consul agent accepts
#: at most 200 connections from one client address (``limits.http_max_conns_per_client``) and closes the
#: rest at once, so a burst of 250 writes from one registry lost 50 of them with a larger pool. 128 leaves
#: the other 72 to other processes on the same host (sidecars, the CLI); watches count against the 128.
MAX_CONNECTIONS = 128

#: Back-off before each retry of a read that found Consul unavailable.
_READ_RETRY_DELAYS = (0.05, 0.25)
#: ... and of a read the Consul agent answered with an RPC error: the server it asked just died. The agent
#: moves on to another server on the next request, and may take a second to learn which ones are gone, so
#: these are retried for longer (1.8 s in all). "No cluster leader" is not: Consul already holds such a
#: request for its rpc_hold_timeout (7 s) while it waits for an election.
_RPC_ERROR_RETRY_DELAYS = (0.05, 0.25, 0.5, 1.0)
_DETAIL_LIMIT = 200


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


def _is_outage(status: int, detail: str) -> bool:
    """5xx answers that mean "Consul cannot serve now", not "your request is wrong"."""
    lowered = detail.lower()
    return status in (502, 503, 504) or (
        status == 500
        and any(
            reason in lowered
            for reason in ("no cluster leader", "rpc error", "no path to", "no known consul servers")
        )
    )


def _raise_for(operation: str, address: str, status: int, body: str) -> None:
    """Map an error answer from Consul to an exception (pure; tested without a server)."""
    detail = body.strip()[:_DETAIL_LIMIT]
    if status in (401, 403):
        if "acl not found" in detail.lower():
            # Consul's answer to a token it does not know: never issued, deleted, or revoked.
            detail = "the ACL token is unknown to Consul or has been revoked"
        raise PermissionDeniedError(operation, detail)
    if _is_outage(status, detail):
        raise RegistryUnavailableError(
            f"Consul at {address} cannot serve {operation} now: {status} {detail}", address=address
        )
    raise ConsulRequestError(operation, status, detail)


class ConsulGateway:
    """An open connection to one Consul agent. Use as ``async with ConsulGateway(settings) as gw``."""

    def __init__(self, settings: ConsulSettings) -> None:
        self.settings = settings
        self._http: _HTTPClient | None = None
        #: Set on views made by with_token(): they send through the parent's session and never close it.
        self._parent: ConsulGateway | None = None

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
        headers = {"X-Consul-Token": self.settings.token} if self.settings.token else {}
        if self.settings.loopback:
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
        try:
            response: consul.base.Response = await getattr(http, method.lower())(lambda r: r, path, **options)
        except (TimeoutError, consul.Timeout) as exc:
            raise RegistryTimeoutError(
                f"Consul at {self.address} did not answer {operation} within {timeout:g}s",
                address=self.address,
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
        allow_404: bool = False,
        decode: Callable[[Any], Any] | None = None,
        raw: bool = False,
    ) -> ConsulResponse:
        """Send one request; reads (GET) are retried on outage, writes are not.

        ``index``/``wait`` make a blocking query; its timeout is then wait + wait/16 + the normal timeout,
        longer than Consul's own jitter, as Consul's blocking-query rules require. ``decode`` turns a
        successful answer's text into its body (default: JSON, or the text when it is not JSON). With
        ``raw`` (GET only) ``decode`` gets the body's bytes: for KV values, which need not be UTF-8.
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
        timeout = self.settings.timeout
        if index is not None:
            query.append(("index", max(index, 1)))
            if wait is not None:
                query.append(("wait", f"{max(int(wait * 1000), 1)}ms"))
                timeout += wait + wait / 16
        delays: tuple[float, ...] = _READ_RETRY_DELAYS if method == "GET" else ()
        attempt = 0
        while True:
            try:
                response = await self._send(operation, method, path, query, body, timeout, raw)
                if response.code == 404 and allow_404:
                    return ConsulResponse(404, None, _meta_from(response.headers))
                if response.code >= 400:
                    detail = (
                        response.body.decode("utf-8", "replace")
                        if isinstance(response.body, bytes)
                        else str(response.body)
                    )
                    if delays and response.code == 500 and "rpc error" in detail.lower():
                        delays = _RPC_ERROR_RETRY_DELAYS
                    _raise_for(operation, self.address, response.code, detail)
                decoded = (decode or _decode)(response.body)
                return ConsulResponse(response.code, decoded, _meta_from(response.headers))
            except RegistryTimeoutError:
                raise
            except RegistryUnavailableError as exc:
                if attempt >= len(delays):
                    raise
                log.debug("retrying %s after: %s", operation, exc)
                await asyncio.sleep(delays[attempt])
                attempt += 1

    async def get(self, operation: str, path: str, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "GET", path, **kwargs)

    async def put(self, operation: str, path: str, body: Any = None, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "PUT", path, body=body, **kwargs)

    async def post(self, operation: str, path: str, body: Any = None, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "POST", path, body=body, **kwargs)

    async def delete(self, operation: str, path: str, **kwargs: Any) -> ConsulResponse:
        return await self.request(operation, "DELETE", path, **kwargs)
