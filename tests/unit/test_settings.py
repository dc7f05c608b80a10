"""ConsulSettings.resolve: precedence of arguments over Consul's environment variables, and token hygiene."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from consul_agents._errors import InvalidAgentError
from consul_agents._settings import ConsulSettings


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ({}, {}, "http://127.0.0.1:8500"),
        ({}, {"CONSUL_HTTP_ADDR": "http://10.0.0.5:8500"}, "http://10.0.0.5:8500"),
        ({}, {"CONSUL_HTTP_ADDR": "10.0.0.5:8501"}, "http://10.0.0.5:8501"),
        ({}, {"CONSUL_HTTP_ADDR": "10.0.0.5:8501", "CONSUL_HTTP_SSL": "true"}, "https://10.0.0.5:8501"),
        ({}, {"CONSUL_HTTP_ADDR": "10.0.0.5:8501", "CONSUL_HTTP_SSL": "false"}, "http://10.0.0.5:8501"),
        ({}, {"CONSUL_HTTP_ADDR": "http://10.0.0.5:8500", "CONSUL_HTTP_SSL": "true"}, "http://10.0.0.5:8500"),
        ({}, {"CONSUL_HTTP_ADDR": "  "}, "http://127.0.0.1:8500"),
        (
            {"consul_url": "https://c.example:8501/"},
            {"CONSUL_HTTP_ADDR": "http://x:1"},
            "https://c.example:8501",
        ),
        ({"consul_url": ""}, {"CONSUL_HTTP_ADDR": "http://x:1"}, "http://x:1"),
    ],
)
def test_address_precedence(args: dict[str, Any], env: dict[str, str], expected: str) -> None:
    """The address is the argument, else CONSUL_HTTP_ADDR (https if CONSUL_HTTP_SSL), else the default."""
    assert ConsulSettings.resolve(**args, env=env).address == expected


def test_address_parts() -> None:
    """scheme, host and port are derived from the address, with the scheme's default port."""
    s = ConsulSettings.resolve("https://consul.example", env={})
    assert (s.scheme, s.host, s.port) == ("https", "consul.example", 443)
    s = ConsulSettings.resolve("http://consul.example", env={})
    assert s.port == 8500
    s = ConsulSettings.resolve(env={"CONSUL_HTTP_ADDR": "h:9"})
    assert (s.scheme, s.host, s.port) == ("http", "h", 9)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ({"consul_url": "ftp://h:1"}, {}),
        ({"consul_url": "localhost:8500"}, {}),
        ({"consul_url": "http://"}, {}),
        ({}, {"CONSUL_HTTP_ADDR": "unix:///var/run/consul.sock"}),
    ],
)
def test_bad_address(args: dict[str, Any], env: dict[str, str]) -> None:
    """An address that is not http(s)://host raises InvalidAgentError naming consul_url."""
    with pytest.raises(InvalidAgentError) as caught:
        ConsulSettings.resolve(**args, env=env)
    assert caught.value.field == "consul_url"


@pytest.mark.parametrize("address", ["http://h:99999", "http://h:port"])
def test_bad_port_is_rejected_at_resolve(address: str) -> None:
    """An address with an invalid port raises InvalidAgentError from resolve()."""
    with pytest.raises(InvalidAgentError):
        ConsulSettings.resolve(address, env={})


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("  file-secret\n")
    return path


def test_token_precedence(token_file: Path) -> None:
    """The token comes from the argument, else CONSUL_HTTP_TOKEN, else the stripped token file, else none."""
    env = {"CONSUL_HTTP_TOKEN": "env-secret", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    assert ConsulSettings.resolve(token="arg-secret", env=env).token == "arg-secret"
    assert ConsulSettings.resolve(env=env).token == "env-secret"
    assert ConsulSettings.resolve(env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)}).token == "file-secret"
    assert ConsulSettings.resolve(env={**env, "CONSUL_HTTP_TOKEN": ""}).token == "file-secret"
    assert ConsulSettings.resolve(env={}).token is None


def test_empty_token_argument_forces_anonymous(token_file: Path) -> None:
    """token='' ignores the environment and resolves to no token (Consul's anonymous token)."""
    env = {"CONSUL_HTTP_TOKEN": "env-secret", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    assert ConsulSettings.resolve(token="", env=env).token is None


def test_blank_token_file_means_no_token(tmp_path: Path) -> None:
    """A token file holding only whitespace gives no token."""
    path = tmp_path / "blank"
    path.write_text(" \n")
    assert ConsulSettings.resolve(env={"CONSUL_HTTP_TOKEN_FILE": str(path)}).token is None


def test_unreadable_token_file_names_the_file(tmp_path: Path) -> None:
    """A token file that cannot be read raises InvalidAgentError naming the file, not the token."""
    missing = tmp_path / "nope" / "token"
    with pytest.raises(InvalidAgentError) as caught:
        ConsulSettings.resolve(env={"CONSUL_HTTP_TOKEN_FILE": str(missing)})
    assert str(missing) in str(caught.value)
    assert "CONSUL_HTTP_TOKEN_FILE" in str(caught.value)
    assert caught.value.field == "token"


def test_token_file_not_read_when_token_given(tmp_path: Path) -> None:
    """An explicit or environment token means the token file is never read (so a bad one is harmless)."""
    env = {"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "missing")}
    assert ConsulSettings.resolve(token="t", env=env).token == "t"
    assert ConsulSettings.resolve(env={**env, "CONSUL_HTTP_TOKEN": "e"}).token == "e"


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ({}, {}, None),
        ({}, {"CONSUL_CACERT": "/etc/ca.pem"}, "/etc/ca.pem"),
        ({"ca_cert": "/mine.pem"}, {"CONSUL_CACERT": "/etc/ca.pem"}, "/mine.pem"),
        ({}, {"CONSUL_CACERT": ""}, None),
    ],
)
def test_ca_cert_precedence(args: dict[str, Any], env: dict[str, str], expected: str | None) -> None:
    """The CA certificate comes from the argument, else CONSUL_CACERT."""
    assert ConsulSettings.resolve(**args, env=env).ca_cert == expected


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ({}, {}, True),
        ({}, {"CONSUL_HTTP_SSL_VERIFY": "false"}, False),
        ({}, {"CONSUL_HTTP_SSL_VERIFY": "0"}, False),
        ({}, {"CONSUL_HTTP_SSL_VERIFY": "true"}, True),
        ({}, {"CONSUL_HTTP_SSL_VERIFY": "TRUE"}, True),
        ({"verify": True}, {"CONSUL_HTTP_SSL_VERIFY": "false"}, True),
        ({"verify": False}, {}, False),
    ],
)
def test_verify_precedence(args: dict[str, Any], env: dict[str, str], expected: bool) -> None:
    """TLS verification comes from the argument, else CONSUL_HTTP_SSL_VERIFY, else on."""
    assert ConsulSettings.resolve(**args, env=env).verify is expected


def test_empty_ssl_verify_keeps_verification() -> None:
    """An empty CONSUL_HTTP_SSL_VERIFY is treated as unset and verification stays on."""
    assert ConsulSettings.resolve(env={"CONSUL_HTTP_SSL_VERIFY": ""}).verify is True


def test_datacenter_and_timeout() -> None:
    """datacenter and timeout are taken from the arguments; a non-positive timeout is rejected."""
    s = ConsulSettings.resolve(datacenter="dc2", timeout=2.5, env={})
    assert (s.datacenter, s.timeout) == ("dc2", 2.5)
    for bad in (0, -1):
        with pytest.raises(InvalidAgentError) as caught:
            ConsulSettings.resolve(timeout=bad, env={})
        assert caught.value.field == "timeout"


def test_nan_timeout_is_rejected() -> None:
    """A NaN timeout raises InvalidAgentError."""
    with pytest.raises(InvalidAgentError):
        ConsulSettings.resolve(timeout=math.nan, env={})


def test_resolve_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without env=, resolve() reads the process environment."""
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "http://from-env:1234")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "env-tok")
    s = ConsulSettings.resolve()
    assert (s.address, s.token) == ("http://from-env:1234", "env-tok")


@pytest.mark.parametrize("source", ["argument", "env", "file"])
def test_token_never_in_repr_or_str(source: str, tmp_path: Path) -> None:
    """Whatever its source, the token appears in neither repr() nor str() of the settings."""
    secret = "s3cr3t-0a1b2c3d"
    path = tmp_path / "tok"
    path.write_text(secret)
    env = {"CONSUL_HTTP_TOKEN": secret} if source == "env" else {"CONSUL_HTTP_TOKEN_FILE": str(path)}
    s = ConsulSettings.resolve(token=secret if source == "argument" else None, env=env)
    assert s.token == secret
    assert secret not in repr(s)
    assert secret not in str(s)
    assert "ConsulSettings(" in repr(s)
