"""REST: batch registration and deregistration, and graceful replacement (see consul_agents._batch and
consul_agents._replace for the rules).

* ``POST /v1/agents/batch`` ``{"agents": [registration, ...], "concurrency": 8}``: 200 with every item's
  result (``ok`` false when any item failed: the others stay done); 422 with ``invalid`` (index, field,
  message of every invalid item) when the batch is refused, nothing written.
* ``POST /v1/agents/batch/deregister`` ``{"agent_ids": [...]}``: the same rules.
* ``POST /v1/agents/{agent_id}/replace`` ``{"new": registration}`` or ``{"new_id": "..."}``, with
  ``timeout`` and ``drain_timeout`` in seconds (at most :data:`MAX_REPLACE_WAIT` each: an HTTP request is
  not a place to wait for an hour): 200 with the replacement; 404 when the old agent (or the given new_id)
  is not registered, nothing written; 409 when a step failed, with a body naming the ``step``, the error
  that stopped it (``cause``) and the ``state`` the fleet was left in.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.json_schema import models_json_schema

from consul_agents._batch import (
    DEFAULT_CONCURRENCY,
    MAX_BATCH,
    MAX_CONCURRENCY,
    BatchResult,
    InvalidBatchError,
    InvalidItem,
)
from consul_agents._models import AgentRegistration, invalid_agent_error
from consul_agents._replace import ReplacementError
from consul_agents.api._body import read_json_object
from consul_agents.api._keys import VIEWS
from consul_agents.api._tokens import token_of

__all__ = ["MAX_REPLACE_WAIT", "batch_paths", "batch_routes"]

batch_routes = web.RouteTableDef()

#: Longest timeout and drain_timeout a REST replacement may ask for, in seconds.
MAX_REPLACE_WAIT = 300.0


class BatchRegisterRequest(BaseModel):
    """Registrations to make; each item is validated on its own, so every invalid one is named."""

    model_config = ConfigDict(extra="forbid")

    #: Each item is validated on its own (so every invalid one is named); documented as a registration.
    agents: list[Any] = Field(
        json_schema_extra={"items": {"$ref": "#/components/schemas/AgentRegistration"}, "maxItems": MAX_BATCH}
    )
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY)


class BatchDeregisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_ids: list[Any] = Field(json_schema_extra={"items": {"type": "string"}, "maxItems": MAX_BATCH})
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY)


class BatchRefusedBody(BaseModel):
    """422 for a refused batch: nothing was written; ``invalid`` names every invalid item."""

    error: str = "invalid"
    message: str
    field: str | None = None
    #: Empty when the request itself was refused (a concurrency out of range, a body that is no batch).
    invalid: list[InvalidItem] = []


class BatchResponse(BaseModel):
    ok: bool
    succeeded: int
    failed: int
    results: list[dict[str, Any]]


class ReplaceRequest(BaseModel):
    """The new agent (a registration, or the id of an agent already registered) and the waits."""

    model_config = ConfigDict(extra="forbid")

    new: AgentRegistration | None = None
    new_id: str | None = None
    timeout: float = Field(default=60.0, gt=0, le=MAX_REPLACE_WAIT)
    drain_timeout: float = Field(default=30.0, gt=0, le=MAX_REPLACE_WAIT)

    @model_validator(mode="after")
    def _one_new(self) -> ReplaceRequest:
        if (self.new is None) == (self.new_id is None):
            raise ValueError("give exactly one of new (a registration) and new_id (a registered agent)")
        return self


class ReplaceResponse(BaseModel):
    old_id: str
    new_id: str
    passing_after: float
    drained_for: float
    leases_left: int
    old_load: float | None


class ReplaceFailedBody(BaseModel):
    """409: a step of the replacement failed (``cause`` is its error's class, ``TimeoutError`` when the new
    agent did not pass in time); ``state`` says what the fleet holds now."""

    error: str
    message: str
    cause: str
    step: str
    state: str
    old_id: str
    new_id: str | None


def _parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model(**body)
    except ValidationError as exc:
        raise invalid_agent_error(exc, model.__name__) from exc


def _batch_answer(result: BatchResult) -> web.Response:
    body = BatchResponse(
        ok=result.ok,
        succeeded=len(result.succeeded),
        failed=len(result.failed),
        results=[r.model_dump(mode="json", exclude_none=True) for r in result.results],
    )
    return web.json_response(body.model_dump(mode="json"))


def _refused(exc: InvalidBatchError) -> web.Response:
    body = BatchRefusedBody(message=str(exc), field=exc.field or None, invalid=exc.invalid)
    return web.json_response(body.model_dump(mode="json", exclude_none=True), status=422)


async def _batch_answer_of(call: Awaitable[BatchResult]) -> web.Response:
    """200 with every item's result, or 422 naming every invalid item (nothing written)."""
    try:
        result = await call
    except InvalidBatchError as exc:
        return _refused(exc)
    return _batch_answer(result)


@batch_routes.post("/v1/agents/batch")
async def register_many(request: web.Request) -> web.Response:
    batch = _parse(BatchRegisterRequest, await read_json_object(request))
    view = request.app[VIEWS].for_token(token_of(request))
    return await _batch_answer_of(view.register_many(batch.agents, concurrency=batch.concurrency))


@batch_routes.post("/v1/agents/batch/deregister")
async def deregister_many(request: web.Request) -> web.Response:
    batch = _parse(BatchDeregisterRequest, await read_json_object(request))
    view = request.app[VIEWS].for_token(token_of(request))
    return await _batch_answer_of(view.deregister_many(batch.agent_ids, concurrency=batch.concurrency))


@batch_routes.post("/v1/agents/{agent_id}/replace")
async def replace_agent(request: web.Request) -> web.Response:
    change: ReplaceRequest = _parse(ReplaceRequest, await read_json_object(request))
    view = request.app[VIEWS].for_token(token_of(request))
    new = change.new if change.new is not None else change.new_id
    assert new is not None
    try:
        done = await view.replace_agent(
            request.match_info["agent_id"], new, timeout=change.timeout, drain_timeout=change.drain_timeout
        )
    except ReplacementError as exc:
        cause = exc.__cause__
        body = ReplaceFailedBody(
            error="replace_failed",
            message=str(exc),
            cause=type(cause).__name__ if cause is not None else "",
            step=exc.step,
            state=exc.state,
            old_id=exc.old_id,
            new_id=exc.new_id,
        )
        return web.json_response(body.model_dump(mode="json"), status=409)
    answer = ReplaceResponse.model_validate(done, from_attributes=True)
    return web.json_response(answer.model_dump(mode="json"))


def batch_paths(
    schemas: dict[str, Any], operation: Any, json_body: Any, ref: Any, agent_id: Any
) -> dict[str, Any]:
    """The OpenAPI paths of these routes; adds their schemas to ``schemas``."""
    _, top = models_json_schema(
        [
            (BatchRegisterRequest, "validation"),
            (BatchDeregisterRequest, "validation"),
            (ReplaceRequest, "validation"),
            (BatchResponse, "serialization"),
            (BatchRefusedBody, "serialization"),
            (ReplaceResponse, "serialization"),
            (ReplaceFailedBody, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    refused = json_body(
        ref("BatchRefusedBody"), "The batch was refused, nothing written; every invalid item named."
    )
    failed = json_body(
        ref("ReplaceFailedBody"), "A step failed; the body says which and what the fleet holds."
    )

    def batch_operation(operation_id: str, verb: str, body: str) -> dict[str, Any]:
        return {
            "post": operation(
                operation_id,
                f"{verb} many agents: all validated first, every item reported",
                {200: json_body(ref("BatchResponse"), "Every item's result."), 422: refused},
                (400, 403, 413, 503),
                body=body,
            ),
        }

    return {
        "/v1/agents/batch": batch_operation("registerMany", "Register", "BatchRegisterRequest"),
        "/v1/agents/batch/deregister": batch_operation(
            "deregisterMany", "Deregister", "BatchDeregisterRequest"
        ),
        "/v1/agents/{agent_id}/replace": {
            "post": operation(
                "replaceAgent",
                "Replace an agent: register the new one, wait until it passes, drain and deregister the old",
                {200: json_body(ref("ReplaceResponse"), "Replaced."), 409: failed},
                (400, 403, 404, 413, 422, 502, 503),
                body="ReplaceRequest",
                parameters=[agent_id],
            ),
        },
    }
