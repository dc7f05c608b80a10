"""Errors to HTTP answers, in one place: client mistakes are 4xx with a JSON body, never a 500."""

from __future__ import annotations

from aiohttp import web

from consul_agents._errors import (
    AgentNotFoundError,
    ConsulAgentsError,
    InvalidAgentError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from consul_agents.api._schemas import ErrorBody

__all__ = ["BadRequest", "error_response", "response_for"]


class BadRequest(Exception):
    """The HTTP request itself is malformed (not JSON, a query parameter that does not parse): 400, or
    413 for a body too large to read."""

    def __init__(self, message: str, field: str | None = None, *, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def error_response(status: int, kind: str, message: str, field: str | None = None) -> web.Response:
    body = ErrorBody.model_validate({"error": kind, "message": message, "field": field or None})
    return web.json_response(body.model_dump(mode="json", exclude_none=True), status=status)


def response_for(exc: ConsulAgentsError | BadRequest) -> web.Response:
    """The HTTP answer for one of our errors.

    InvalidAgentError 422 (the body parsed but a value is wrong), AgentNotFoundError 404,
    PermissionDeniedError 403 (Consul's ACLs refused the caller's token), RegistryUnavailableError 503;
    any other error Consul answered with is 502: the request was fine, the upstream was not.
    """
    if isinstance(exc, BadRequest):
        return error_response(exc.status, "bad_request", str(exc), exc.field)
    if isinstance(exc, InvalidAgentError):
        return error_response(422, "invalid", str(exc), exc.field)
    if isinstance(exc, AgentNotFoundError):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, PermissionDeniedError):
        return error_response(403, "denied", str(exc))
    if isinstance(exc, RegistryUnavailableError):
        return error_response(503, "unavailable", str(exc))
    return error_response(502, "consul_error", str(exc))
