"""JSON from strangers, parsed only once its nesting is known to be bounded (pure).

``json.loads`` and everything that walks its result recurse once per level, so a document nested a few
thousand levels deep raises ``RecursionError`` (a ``RuntimeError``, not a ``ValueError``) wherever it goes.
:func:`nests_deeper_than` answers on the raw bytes, before parsing, with C-speed bytes operations only
(no regular expression, no loop per character, so no input makes it slow; about 1 ms per MiB and level):

1. drop escaped backslashes, then escaped quotes: what is left of the quotes delimits the strings;
2. keep what lies between strings (every other piece when split on quotes), and of that only brackets;
3. remove adjacent pairs, one level per pass, at most ``limit + 1`` passes.

The REST API reads request bodies and the sidecar reads agents' health answers through :func:`loads_bounded`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JsonTooDeep", "loads_bounded", "nests_deeper_than"]

_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_UNIFY = bytes.maketrans(b"{}", b"[]")


class JsonTooDeep(ValueError):
    """The document nests objects or arrays deeper than allowed; the message says by how much."""


def _brackets(raw: bytes) -> bytes:
    """The brackets of ``raw`` that lie outside its strings, in order, all written ``[`` and ``]`` (only
    the nesting matters: a parser recurses into either kind, and fails at a mismatch)."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    return outside.translate(_UNIFY, _NOT_BRACKETS)


def nests_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the objects and arrays of ``raw`` nest more than ``limit`` levels, without parsing it.

    Brackets inside strings do not count. Text that is not JSON is judged on its unmatched brackets: more
    than ``limit`` of them could nest that deep in a parser, fewer are left for the parser to report.
    """
    brackets = _brackets(raw)
    if brackets.count(b"[") <= limit:  # cannot nest past it: the common case
        return False
    for _ in range(limit + 1):
        if not brackets:
            return False
        # One level: bytes.replace does not rescan what it produced, so only today's innermost pairs go.
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return len(brackets) > limit
        brackets = shorter
    return True


def loads_bounded(raw: bytes | str, max_depth: int) -> Any:
    """``json.loads(raw)``, refused with :class:`JsonTooDeep` (a ValueError) when nested over ``max_depth``.

    Every failure is a ValueError: not JSON, not UTF-8 (UnicodeDecodeError), too deep.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > max_depth and nests_deeper_than(data, max_depth):
        raise JsonTooDeep(f"more than {max_depth} levels deep")
    try:
        return json.loads(data)
    except RecursionError as exc:  # unmatched brackets the parser recursed into before failing
        raise JsonTooDeep(f"too deep to parse ({exc})") from exc
