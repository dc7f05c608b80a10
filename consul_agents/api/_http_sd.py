"""Prometheus HTTP service discovery: ``GET /v1/prometheus/sd`` lists the live agents as scrape targets.

Prometheus' ``http_sd_configs`` polls a URL answering a JSON list of ``{"targets": [...], "labels": {...}}``
groups. Each live agent the caller's token may see is one group with one target, ``host:port`` of its
endpoint, and these labels:

===============================  ======================================================================
``__scheme__``                   the endpoint's scheme (http or https)
``__metrics_path__``             the endpoint's path joined with ``metrics_path`` (default ``/metrics``):
                                 an agent at ``http://h:9000/v1`` is scraped at ``/v1/metrics``
``agent_id``, ``agent_type``,    kept on every scraped series (they never change while the agent lives)
``datacenter``
``__meta_consul_agents_*``       ``status``, ``node``, ``endpoint``, ``capabilities`` (``,plan,summarize,``
                                 like consul_sd's tags, so a regex ``.*,plan,.*`` matches one) and
                                 ``tag_<key>`` per tag; Prometheus drops ``__meta_`` labels after
                                 relabelling, so a status change never starts a new series
===============================  ======================================================================

The answer comes from the caller's registry view, so it is scoped by the caller's token and served from the
discovery cache that Consul's blocking queries keep fresh: polling it costs Consul nothing.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDict

from consul_agents._models import AgentInfo
from consul_agents.api._errors import BadRequest
from consul_agents.api._routes import _view, discovery_request

__all__ = ["METRICS_PATH_PARAMETER", "discovery_query", "http_sd_groups", "metrics_path_of", "sd_routes"]

log = logging.getLogger("consul_agents.api")
sd_routes = web.RouteTableDef()

#: The query parameter naming where, under its endpoint, each agent serves its metrics.
METRICS_PATH_PARAMETER = "metrics_path"
_META = "__meta_consul_agents_"
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9._-]{1,253}|[0-9a-f:.]{2,45}")


def metrics_path_of(query: Any) -> str:
    """The ``metrics_path`` query parameter (default ``/metrics``), always starting with one '/'."""
    values: list[str] = query.getall(METRICS_PATH_PARAMETER, [])
    if len(values) > 1:
        raise BadRequest(
            f"query parameter {METRICS_PATH_PARAMETER!r} is given {len(values)} times", METRICS_PATH_PARAMETER
        )
    path = values[0] if values else "/metrics"
    if len(path) > 256 or any(c in path for c in "?#\\") or not path.isprintable():
        raise BadRequest(
            f"{METRICS_PATH_PARAMETER} {path[:64]!r} must be a URL path (no '?', '#' or '\\', at most 256 "
            "characters)",
            METRICS_PATH_PARAMETER,
        )
    return "/" + path.lstrip("/")


def discovery_query(query: Any) -> MultiDict[str]:
    """The query without ``metrics_path``: what remains are GET /v1/agents' discovery filters."""
    return MultiDict((k, v) for k, v in query.items() if k != METRICS_PATH_PARAMETER)


@functools.lru_cache(maxsize=4096)
def _target(endpoint: str) -> tuple[str, str, str] | None:
    """(scheme, host:port, path) of an endpoint, or None when it cannot be a scrape target (memoised: a
    poll asks again about the same endpoints, and parsing a URL is most of a target's cost)."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    # The endpoint comes from Consul, so from any registrant: only a plain host name or address is a target.
    if scheme not in _DEFAULT_PORTS or not parts.hostname or not _HOST.fullmatch(parts.hostname):
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return scheme, f"{host}:{port or _DEFAULT_PORTS[scheme]}", parts.path.rstrip("/")


@functools.lru_cache(maxsize=1024)
def _label_name(key: str) -> str:
    return _LABEL_INVALID.sub("_", key)


def http_sd_groups(agents: Iterable[AgentInfo], metrics_path: str = "/metrics") -> list[dict[str, Any]]:
    """One http_sd target group per agent whose endpoint is an http(s) URL (others cannot be scraped)."""
    groups: list[dict[str, Any]] = []
    for agent in agents:
        target = _target(agent.endpoint)
        if target is None:
            log.debug("agent %r left out of http_sd: endpoint is not an http(s) URL", agent.agent_id)
            continue
        scheme, address, path = target
        labels = {
            "__scheme__": scheme,
            "__metrics_path__": path + metrics_path,
            "agent_id": agent.agent_id,
            "agent_type": agent.agent_type,
            "datacenter": agent.datacenter,
            f"{_META}status": agent.status.value,
            f"{_META}node": agent.node,
            f"{_META}endpoint": agent.endpoint,
            f"{_META}capabilities": "," + ",".join(agent.capabilities) + ",",
        }
        for key, value in sorted(agent.tags.items()):
            labels.setdefault(f"{_META}tag_{_label_name(key)}", value)
        groups.append({"targets": [address], "labels": labels})
    return groups


@sd_routes.get("/v1/prometheus/sd")
async def prometheus_sd(request: web.Request) -> web.Response:
    """Prometheus http_sd targets: the agents GET /v1/agents would answer with the same filters."""
    metrics_path = metrics_path_of(request.query)
    discovery = discovery_request(discovery_query(request.query))
    agents = await _view(request).discover_agents(discovery)
    return web.json_response(http_sd_groups(agents, metrics_path))
