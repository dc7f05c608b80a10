"""Typed application state of the REST API (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from consul_agents._registry import AgentRegistry
from consul_agents.api._tokens import TokenViews

__all__ = ["OPENAPI", "REGISTRY_KEY", "VIEWS"]

#: The API's own registry: no token, used only for /health and as the parent of the per-token views.
REGISTRY_KEY = web.AppKey("registry", AgentRegistry)
VIEWS = web.AppKey("views", TokenViews)
OPENAPI = web.AppKey("openapi", dict[str, Any])
