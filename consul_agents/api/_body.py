"""Request bodies, bounded before they are parsed: every route that reads a body reads it through here.

A body is refused with 413 when it is larger than :data:`MAX_BODY_BYTES` (aiohttp stops reading there: the
application's ``client_max_size``), and with 400 when its JSON nests deeper than :data:`MAX_BODY_DEPTH`.
The depth is measured on the raw bytes before ``json.loads`` sees them (:mod:`consul_agents._bounded_json`),
because the parser and every model after it recurse once per level: nested 5,000 deep, a body used to end
in a ``RecursionError`` and a 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from consul_agents._bounded_json import JsonTooDeep, loads_bounded
from consul_agents.api._errors import BadRequest

__all__ = ["MAX_BODY_BYTES", "MAX_BODY_DEPTH", "read_json_object"]

#: Largest request body accepted (a registration with metadata up to Consul's 512 KB KV limit fits).
MAX_BODY_BYTES = 1024 * 1024
#: Deepest nesting of JSON objects and arrays in a body (the body itself is level 1).
MAX_BODY_DEPTH = 64


async def read_json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's body as a JSON object; BadRequest (400) for anything else, 413 when too large."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(
            f"the body is {request.content_length} bytes; at most {MAX_BODY_BYTES} are accepted", status=413
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # a chunked body without Content-Length
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes", status=413) from exc
    if not raw.strip():
        if optional:
            return {}
        raise BadRequest("the request needs a JSON object body")
    try:
        body = loads_bounded(raw, MAX_BODY_DEPTH)
    except JsonTooDeep as exc:
        raise BadRequest(f"the body nests objects or arrays {exc}") from exc
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
