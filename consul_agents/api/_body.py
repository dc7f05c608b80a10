"""Request bodies, bounded before they are parsed: every route that reads a body reads it through here.

A body is refused with 413 when it is larger than :data:`MAX_BODY_BYTES` (aiohttp stops reading there: the
application's ``client_max_size``), and with 400 when its JSON nests deeper than :data:`MAX_BODY_DEPTH`.
The depth is measured on the raw bytes before ``json.loads`` sees them (strings removed, then a running
count of brackets, all in C), because the parser and every model after it recurse once per level: nested
5,000 deep, a body used to end in a ``RecursionError`` and a 500.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from aiohttp import web

from consul_agents.api._errors import BadRequest

__all__ = ["MAX_BODY_BYTES", "MAX_BODY_DEPTH", "json_nesting", "read_json_object"]

#: Largest request body accepted (a registration with metadata up to Consul's 512 KB KV limit fits).
MAX_BODY_BYTES = 1024 * 1024
#: Deepest nesting of JSON objects and arrays in a body (the body itself is level 1).
MAX_BODY_DEPTH = 64

# A JSON string, unrolled so that the regular expression never backtracks.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_DELTA = tuple(1 if byte in b"[{" else -1 for byte in range(256))


def json_nesting(raw: bytes) -> int:
    """How deep the objects and arrays of ``raw`` nest (0 for a scalar), without parsing it.

    Brackets inside strings do not count. For text that is not JSON the figure is only an estimate; the
    parser reports such text anyway.
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    if not brackets:
        return 0
    deepest: int = max(accumulate(map(_DELTA.__getitem__, brackets)))
    return max(deepest, 0)


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
    depth = json_nesting(raw)
    if depth > MAX_BODY_DEPTH:
        raise BadRequest(f"the body nests objects or arrays more than {MAX_BODY_DEPTH} levels deep")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError is a ValueError; RecursionError cannot happen within the depth bound.
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
