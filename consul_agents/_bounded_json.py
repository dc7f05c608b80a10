"""JSON from strangers, parsed only once its nesting is known to be bounded (pure).

``json.loads`` and everything that walks its result recurse once per level, so a document nested a few
thousand levels deep raises ``RecursionError`` (a ``RuntimeError``, not a ``ValueError``) wherever it goes.
:func:`json_nesting` measures the depth on the raw text, before parsing: string literals removed by one
regular expression, then a running count of the remaining brackets, all in C (about 20 ms per MiB).
The REST API reads request bodies and the sidecar reads agents' health answers through :func:`loads_bounded`.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

__all__ = ["JsonTooDeep", "json_nesting", "loads_bounded"]

# A JSON string, unrolled so that the regular expression never backtracks.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_DELTA = tuple(1 if byte in b"[{" else -1 for byte in range(256))


class JsonTooDeep(ValueError):
    """The document nests objects or arrays deeper than allowed; the message says by how much."""


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


def loads_bounded(raw: bytes | str, max_depth: int) -> Any:
    """``json.loads(raw)``, refused with :class:`JsonTooDeep` (a ValueError) when nested over ``max_depth``.

    Every failure is a ValueError: not JSON, not UTF-8 (UnicodeDecodeError), too deep.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    # Fewer opening brackets than the bound cannot nest past it (a memchr-speed count): the common case.
    if data.count(b"[") + data.count(b"{") > max_depth and json_nesting(data) > max_depth:
        raise JsonTooDeep(f"more than {max_depth} levels deep")
    try:
        return json.loads(data)
    except RecursionError as exc:  # pragma: no cover - cannot happen within a sane max_depth
        raise JsonTooDeep(f"too deep to parse ({exc})") from exc
