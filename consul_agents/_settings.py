"""Where to find Consul and how to authenticate: explicit arguments, then Consul's own environment variables.

Precedence, for each setting on its own (the same as Consul's CLI, except that an explicit argument always
wins; py-consul lets CONSUL_HTTP_TOKEN override an explicit token, which is why we resolve it here):

* address: ``consul_url`` argument > ``CONSUL_HTTP_ADDR`` (``host:port`` or ``scheme://host:port``; a bare
  ``host:port`` is https when ``CONSUL_HTTP_SSL=true``) > ``http://127.0.0.1:8500``
* token: ``token`` argument > ``CONSUL_HTTP_TOKEN`` > the contents of ``CONSUL_HTTP_TOKEN_FILE`` > none
  (``token=""`` explicitly asks for the anonymous token even when the variables are set)
* CA certificate: ``ca_cert`` argument > ``CONSUL_CACERT``
* verification: ``verify`` argument > ``CONSUL_HTTP_SSL_VERIFY`` > true
* datacenter: ``datacenter`` argument > none (Consul's local datacenter)
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from consul_agents._errors import InvalidAgentError

__all__ = ["ConsulSettings", "check_token", "read_token_file"]

_DEFAULT_ADDRESS = "http://127.0.0.1:8500"


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ConsulSettings:
    """Resolved connection settings. The token is kept out of ``repr`` and ``str``."""

    address: str = _DEFAULT_ADDRESS
    token: str | None = field(default=None, repr=False)
    datacenter: str | None = None
    ca_cert: str | None = None
    verify: bool = True
    #: Seconds before a non-blocking request is abandoned with RegistryTimeoutError.
    timeout: float = 10.0

    @classmethod
    def resolve(
        cls,
        consul_url: str | None = None,
        token: str | None = None,
        datacenter: str | None = None,
        *,
        ca_cert: str | None = None,
        verify: bool | None = None,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
    ) -> ConsulSettings:
        env = os.environ if env is None else env
        address = consul_url or _address_from_env(env) or _DEFAULT_ADDRESS
        parts = urlsplit(address)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise InvalidAgentError(
                f"Consul address {_redacted(address)!r} must look like http://host:port or https://host:port",
                field="consul_url",
            )
        if parts.query or parts.fragment or parts.username or parts.password or parts.path not in ("", "/"):
            # A token in a URL ends up in proxies' and servers' access logs: only the header carries it.
            raise InvalidAgentError(
                f"Consul address {_redacted(address)!r} must be scheme://host:port only, with no path, "
                "query or credentials; give the ACL token as token= or CONSUL_HTTP_TOKEN",
                field="consul_url",
            )
        if token is None:
            token = check_token(env.get("CONSUL_HTTP_TOKEN"), "CONSUL_HTTP_TOKEN") or _token_from_file(
                env.get("CONSUL_HTTP_TOKEN_FILE")
            )
        else:
            token = check_token(token, "the token") or ""
        if verify is None:
            # Like Consul's own client: an empty or unparsable value leaves verification on.
            verify = env.get("CONSUL_HTTP_SSL_VERIFY", "").strip().lower() not in {"0", "false", "no", "off"}
        if not timeout > 0 or not math.isfinite(timeout):
            raise InvalidAgentError(f"timeout must be positive, got {timeout!r}", field="timeout")
        return cls(
            address=address.rstrip("/"),
            token=token or None,
            datacenter=datacenter,
            ca_cert=ca_cert or env.get("CONSUL_CACERT") or None,
            verify=verify,
            timeout=timeout,
        )

    @property
    def scheme(self) -> str:
        return urlsplit(self.address).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.address).hostname or "127.0.0.1"

    @property
    def loopback(self) -> bool:
        """Consul is on this host (a loopback address or ``localhost``)."""
        host = self.host
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def port(self) -> int:
        parts = urlsplit(self.address)
        return parts.port or (443 if parts.scheme == "https" else 8500)


def _redacted(address: str) -> str:
    """The address for an error message, without a query, fragment or credentials (they may hold a token)."""
    cut = re.split(r"[?#]", address, maxsplit=1)[0]
    return re.sub(r"^([a-z]+://)?[^/@]*@", lambda m: (m.group(1) or "") + "***@", cut)


def _address_from_env(env: Mapping[str, str]) -> str | None:
    raw = env.get("CONSUL_HTTP_ADDR", "").strip()
    if not raw:
        return None
    if "://" in raw:
        return raw
    scheme = "https" if _truthy(env.get("CONSUL_HTTP_SSL", "")) else "http"
    return f"{scheme}://{raw}"


def _token_from_file(path: str | None) -> str | None:
    if not path:
        return None
    return read_token_file(path, f"CONSUL_HTTP_TOKEN_FILE {path!r}")


#: A token file larger than this is not a token file (a Consul token is a 36-character UUID).
MAX_TOKEN_FILE = 4096
_TOKEN_CHARACTERS = re.compile(r"^[\x21-\x7e]+$")


def check_token(token: str | None, source: str) -> str | None:
    """The token from ``source`` without surrounding whitespace (as Consul's CLI reads a token file), or
    None when empty. A token must be one word of visible ASCII (Consul's are UUIDs): anything else, which
    HTTP could not carry in a header, is InvalidAgentError naming ``source``, never the token itself.
    """
    if token is None:
        return None
    value = token.strip()
    if not value:
        return None
    if _TOKEN_CHARACTERS.match(value):
        return value
    if value.startswith(("{", "[")):
        problem = (
            "holds JSON, not a token: give a file holding only the token's secret (for a file written "
            "by `acl setup -o tokens.json`: jq -r '.<name>.secret_id' tokens.json > <name>.token)"
        )
    elif any(character.isspace() for character in value):
        problem = "holds more than one line or word; it must hold only the token"
    else:
        problem = "holds characters a Consul token cannot have (control characters or non-ASCII)"
    raise InvalidAgentError(f"{source} {problem}", field="token")


def read_token_file(path: str | Path, source: str) -> str | None:
    """The token held by the file at ``path`` (see :func:`check_token`); errors name ``source``."""
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise InvalidAgentError(f"{source} cannot be read: {exc.strerror or exc}", field="token") from exc
    if len(raw) > MAX_TOKEN_FILE:
        raise InvalidAgentError(
            f"{source} is larger than {MAX_TOKEN_FILE} bytes: not a token file", field="token"
        )
    return check_token(raw.decode("utf-8", errors="replace"), source)
