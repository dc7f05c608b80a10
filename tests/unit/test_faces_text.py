"""Pure helpers of the faces: terminal escaping and the YAML loader's field-to-line lookup."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consul_agents._errors import InvalidAgentError
from consul_agents._yaml import load_yaml
from consul_agents.cli._common import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("planner-1", "planner-1"),
        ("café 東京 🚀", "café 東京 🚀"),
        ("\x1b]0;t\x07", "\\x1b]0;t\\x07"),
        ("a\u202eb\u200bc", "a\\u202eb\\u200bc"),
        ("\x9b2J", "\\x9b2J"),
        ("line\nnext\r", "line\\x0anext\\x0d"),
        ("\U000e0041", "\\U000e0041"),
    ],
)
def test_printable_escapes_control_and_format_characters_only(raw: str, shown: str) -> None:
    """Control, format and separator characters become visible escapes; every other character is kept."""
    assert printable(raw) == shown


def test_printable_can_keep_newlines_for_log_lines() -> None:
    """Log lines keep their line breaks (tracebacks) while other control characters are escaped."""
    assert printable("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"


@given(st.text())
def test_printable_output_never_holds_a_control_character(text: str) -> None:
    """Whatever the input, nothing a terminal would interpret survives."""
    shown = printable(text)
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in shown)


def test_field_lines_follow_sidecar_and_pydantic_paths(tmp_path: Path) -> None:
    """Fields written as agents[1].health.timeout or tokens.0.kind find the line they are on."""
    path = tmp_path / "f.yaml"
    path.write_text("agents:\n  - a: 1\n  - a: 2\n    health:\n      timeout: 9\ntokens:\n  - kind: x\n")
    document = load_yaml(path)
    assert document.line_of("agents[1].health.timeout") == 5
    assert document.line_of("agents[1].missing") == 3
    assert document.line_of("tokens.0.kind") == 7
    assert document.line_of(None) is None
    located = document.field_error(
        InvalidAgentError("invalid tokens.0.kind: Field required", field="tokens.0.kind")
    )
    assert str(located) == f"{path}: tokens[0].kind: missing (this field is required) (line 7)"
