"""The REST API: the registry over HTTP, with an OpenAPI document, Prometheus metrics and a web page.

See :func:`create_app`. Every request acts with its caller's own Consul token.
"""

from consul_agents.api._app import create_app
from consul_agents.api._openapi import openapi_document

__all__ = ["create_app", "openapi_document"]
