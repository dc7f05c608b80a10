"""The pre-parse JSON nesting measure (pure): it agrees with the parsed JSON's real depth."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from consul_agents._bounded_json import json_nesting

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


@given(JSON)
def test_nesting_equals_the_parsed_depth(value: Any) -> None:
    """For any JSON value, brackets and quotes inside strings included, the raw measure is the real depth."""
    assert json_nesting(json.dumps(value).encode()) == depth(value)
    assert json_nesting(json.dumps(value, ensure_ascii=False).encode()) == depth(value)


def test_scalars_and_empty_bodies_have_no_depth() -> None:
    """A scalar or an empty body nests nothing; a lone bracket counts one level."""
    assert json_nesting(b"") == 0
    assert json_nesting(b'"[[["') == 0
    assert json_nesting(b"[") == 1
    assert json_nesting(b"[" * 10_000) == 10_000
