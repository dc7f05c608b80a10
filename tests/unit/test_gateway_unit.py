"""The pure parts of the gateway: error mapping, response metadata, body decoding, and a token-free repr."""

from __future__ import annotations

from typing import Any

import pytest

from consul_agents._errors import (
    ConsulRequestError,
    PermissionDeniedError,
    RegistryTimeoutError,
    RegistryUnavailableError,
)
from consul_agents._gateway import ConsulGateway, QueryMeta, _decode, _meta_from, _raise_for
from consul_agents._settings import ConsulSettings

ADDRESS = "http://127.0.0.1:8500"


@pytest.mark.parametrize("status", [401, 403])
def test_denied_maps_to_permission_error(status: int) -> None:
    """401 and 403 raise PermissionDeniedError naming the operation and carrying Consul's reason."""
    with pytest.raises(PermissionDeniedError) as caught:
        _raise_for("register agent planner-1", ADDRESS, status, "Permission denied\n")
    assert caught.value.operation == "register agent planner-1"
    assert str(caught.value) == "permission denied: register agent planner-1 (Permission denied)"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, "No cluster leader"),
        (500, "rpc error making call: EOF"),
        (500, "No path to datacenter"),
        (500, "No known Consul servers"),
        (502, ""),
        (503, "Service Unavailable"),
        (504, "gateway timeout"),
    ],
)
def test_outages_map_to_unavailable(status: int, body: str) -> None:
    """Answers meaning "cannot serve now" raise RegistryUnavailableError (not a timeout) with the address."""
    with pytest.raises(RegistryUnavailableError) as caught:
        _raise_for("discover", ADDRESS, status, body)
    assert not isinstance(caught.value, RegistryTimeoutError)
    assert caught.value.address == ADDRESS
    assert str(caught.value) == f"Consul at {ADDRESS} cannot serve discover now: {status} {body}"


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, "Invalid Service Meta: key too long"), (500, "Unexpected response"), (404, ""), (409, "conflict")],
)
def test_other_errors_map_to_request_error(status: int, body: str) -> None:
    """Other error answers raise ConsulRequestError with the operation and status."""
    with pytest.raises(ConsulRequestError) as caught:
        _raise_for("register", ADDRESS, status, body)
    assert not isinstance(caught.value, RegistryUnavailableError | PermissionDeniedError)
    assert (caught.value.operation, caught.value.status) == ("register", status)
    expected = f"register failed: Consul answered {status}" + (f": {body}" if body else "")
    assert str(caught.value) == expected


def test_error_detail_is_truncated() -> None:
    """A long error body is cut to 200 characters in the message."""
    with pytest.raises(ConsulRequestError) as caught:
        _raise_for("op", ADDRESS, 400, "x" * 1000)
    assert str(caught.value) == "op failed: Consul answered 400: " + "x" * 200


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, QueryMeta(index=0, known_leader=True, last_contact_ms=0)),
        (
            {"X-Consul-Index": "42", "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "17"},
            QueryMeta(index=42, known_leader=True, last_contact_ms=17),
        ),
        ({"X-Consul-KnownLeader": "false"}, QueryMeta(index=0, known_leader=False, last_contact_ms=0)),
        ({"X-Consul-KnownLeader": "False"}, QueryMeta(index=0, known_leader=False, last_contact_ms=0)),
        ({"X-Consul-Index": "junk", "X-Consul-LastContact": None}, QueryMeta()),
    ],
)
def test_meta_from_headers(headers: dict[str, Any], expected: QueryMeta) -> None:
    """Consul's X-Consul-* headers become QueryMeta; missing or junk numbers read as 0."""
    assert _meta_from(headers) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", None),
        ("null", None),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("true", True),
        ("plain text", "plain text"),
    ],
)
def test_decode(body: str, expected: Any) -> None:
    """A body is JSON-decoded when it is JSON, returned as text otherwise, and None when empty."""
    assert _decode(body) == expected


def test_gateway_repr_has_no_token() -> None:
    """repr(ConsulGateway) shows the address and datacenter but never the token."""
    secret = "b6f2c1d0-secret-token"
    gateway = ConsulGateway(
        ConsulSettings.resolve("http://10.0.0.1:8500", token=secret, datacenter="dc9", env={})
    )
    text = repr(gateway)
    assert secret not in text
    assert text == "ConsulGateway(address='http://10.0.0.1:8500', datacenter='dc9')"
    assert secret not in str(gateway)


def test_token_header_choice() -> None:
    """The X-Consul-Token header carries the gateway's token (a with_token view's own), else nothing."""
    gateway = ConsulGateway(ConsulSettings.resolve("http://10.0.0.1:8500", token="base", env={}))
    assert gateway._headers() == {"X-Consul-Token": "base"}
    assert gateway.with_token("other")._headers() == {"X-Consul-Token": "other"}
    assert gateway.with_token(None)._headers() == {}
    assert ConsulGateway(ConsulSettings.resolve("http://10.0.0.1:8500", env={}))._headers() == {}


@pytest.mark.parametrize(
    ("address", "plain"),
    [
        ("http://127.0.0.1:8500", True),
        ("http://127.8.9.10:8500", True),
        ("http://localhost:8500", True),
        ("https://LOCALHOST:8501", True),
        ("http://[::1]:8500", True),
        ("http://10.0.0.1:8500", False),
        ("http://consul.service.internal:8500", False),
        ("http://[2001:db8::1]:8500", False),
    ],
)
def test_answers_are_asked_uncompressed_only_over_loopback(address: str, plain: bool) -> None:
    """Consul gzips answers for clients that accept it: over loopback that only costs time (a large answer
    arrives later), across a network it saves bandwidth, so only loopback asks for identity."""
    settings = ConsulSettings.resolve(address, token="t", env={})
    assert settings.loopback is plain
    headers = ConsulGateway(settings)._headers()
    assert headers.get("Accept-Encoding") == ("identity" if plain else None)
    assert headers["X-Consul-Token"] == "t"


async def test_request_on_closed_gateway_is_an_error() -> None:
    """Using a gateway outside its context manager raises a clear RuntimeError without any network I/O."""
    gateway = ConsulGateway(ConsulSettings.resolve(env={}))
    with pytest.raises(RuntimeError, match="not open"):
        await gateway.request("op", "GET", "/v1/status/leader")
