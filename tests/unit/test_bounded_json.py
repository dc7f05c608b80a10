"""The pre-parse JSON nesting bound (pure): it agrees with the parsed JSON's real depth, whatever the
strings hold, and no input makes it slow."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_agents._bounded_json import JsonTooDeep, loads_bounded, nests_deeper_than

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('[]{}"\\ax,:')),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet=st.sampled_from('[]{}"\\k')), children, max_size=3)
    ),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


@given(JSON, st.integers(min_value=0, max_value=8))
def test_bound_agrees_with_the_parsed_depth(value: Any, limit: int) -> None:
    """For any JSON value, brackets, quotes and backslashes inside strings included, the raw check says
    "deeper than the limit" exactly when the parsed value is."""
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert nests_deeper_than(text.encode(), limit) == (depth(value) > limit)


@pytest.mark.parametrize(
    ("pattern", "deep"),
    [
        (b'"\\', False),
        (b'\\"', False),
        (b'"\\"', False),
        (b'"', False),
        (b"[]", False),
        (b"{}[]", False),
        (b'"[', True),
        (b'["\\', True),
        (b"[", True),
        (b"[{", True),
        (b"{}" * 3 + b"[", True),
    ],
)
def test_adversarial_megabytes_are_judged_quickly(pattern: bytes, deep: bool) -> None:
    """A MiB of patterns that make backtracking matchers quadratic ('"\\' repeated took minutes) is judged
    with bytes operations only; unmatched brackets beyond the bound count as too deep."""
    raw = (pattern * (1024 * 1024 // len(pattern)))[: 1024 * 1024]
    assert nests_deeper_than(raw, 64) is deep


def test_loads_bounded_refuses_deep_and_parses_the_rest() -> None:
    """Deep documents are JsonTooDeep (a ValueError), shallow ones parse, strings never count."""
    with pytest.raises(JsonTooDeep):
        loads_bounded(b"[" * 5000 + b"]" * 5000, 64)
    with pytest.raises(JsonTooDeep):
        loads_bounded(b"[" * 5000, 64)
    with pytest.raises(ValueError):
        loads_bounded(b'{"a": 1', 64)
    assert loads_bounded('{"a": "[[[[\\"[[["}', 2) == {"a": '[[[["[[['}
    assert loads_bounded(b"[[[]]]", 3) == [[[]]]
