"""Per-token registry views: the API holds no privilege and never lets one caller see another's answers.

Each caller's token (``X-Consul-Token``, or ``Authorization: Bearer``) is forwarded to Consul, whose ACLs
filter what that token may see. Anything a registry keeps (remembered registrations, a discovery cache) is
therefore kept per token: one :meth:`AgentRegistry.with_token` view per token, all sharing one connection
pool, in a small LRU keyed by a SHA-256 digest of the token. The token itself is never a key, a label or a
log field.

Evicting a view only releases it: a request still using it keeps its cache until that request ends (then
the cache's watches stop), and a request that picks the evicted view up later is answered by Consul
directly. The base registry owns every view's watches, so closing it stops them all.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

from aiohttp import web

from consul_agents._errors import InvalidAgentError
from consul_agents._registry import AgentRegistry
from consul_agents._settings import check_token
from consul_agents.api._errors import BadRequest

__all__ = ["TokenViews", "token_of"]

log = logging.getLogger("consul_agents.api")


def token_of(request: web.Request) -> str | None:
    """The caller's Consul token, or None for the anonymous token; a malformed one is a 400."""
    token = request.headers.get("X-Consul-Token")
    if token:
        return _checked(token, "X-Consul-Token")
    authorization = request.headers.get("Authorization")
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise BadRequest("the Authorization header must be 'Bearer <Consul ACL token>'", "Authorization")
    # An empty token ("Bearer " from an unset $TOKEN) is the anonymous token, as an empty X-Consul-Token is.
    return _checked(credentials, "Authorization")


def _checked(token: str, header: str) -> str | None:
    try:
        return check_token(token, f"the {header} header")
    except InvalidAgentError as exc:
        raise BadRequest(str(exc), header) from exc


def token_key(token: str | None) -> str:
    """A stable key for a token that reveals nothing about it ("" for the anonymous token)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else ""


class TokenViews:
    """At most ``size`` registry views, least recently used released first."""

    def __init__(self, base: AgentRegistry, size: int = 64) -> None:
        self.base = base
        self.size = size
        self._views: OrderedDict[str, AgentRegistry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._views)

    def for_token(self, token: str | None) -> AgentRegistry:
        key = token_key(token)
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        view = self.base.with_token(token)
        self._views[key] = view
        while len(self._views) > self.size:
            _, evicted = self._views.popitem(last=False)
            evicted.release()
        return view

    async def close(self) -> None:
        """Release every view; the base registry's close then stops whatever still runs."""
        views = list(self._views.values())
        self._views.clear()
        for view in views:
            view.release()
