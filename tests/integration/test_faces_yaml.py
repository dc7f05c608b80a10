"""Every YAML file the project reads (sidecar, ACL, fleet), read by the real CLI in a subprocess: hostile
or broken files are refused with exit 2 and a message naming the file, the line and the field."""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from processes import CLI, cli_env

from consul_agents._yaml import MAX_BYTES, MAX_DEPTH, MAX_VALUES, load_yaml

#: Nine levels of nine aliases: 355 bytes that expand to 9^9 (387 million) strings.
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "agents: [*i]\n"
)
NOWHERE = "http://127.0.0.1:1"
#: The commands that read a YAML file, given the file: (name, argv).
READERS: list[tuple[str, Callable[[Path], list[str]]]] = [
    ("render", lambda path: ["render", str(path)]),
    ("sidecar", lambda path: ["sidecar", str(path), "-http-addr", NOWHERE]),
    ("acl setup", lambda path: ["acl", "setup", str(path), "-http-addr", NOWHERE]),
    ("demo --fleet", lambda path: ["demo", "--once", "--fleet", str(path), "-http-addr", NOWHERE]),
]
READER_IDS = [name for name, _ in READERS]


def _limit_memory() -> None:
    """In the child: at most 1.5 GB of address space, so a runaway expansion fails instead of swapping."""
    limit = 1536 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_cli(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, bounded in time and memory (a hang fails the test, it does not block it)."""
    try:
        return subprocess.run(
            [*CLI, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=cli_env(),
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"consul-agents {' '.join(argv)} still ran after {timeout}s")


@pytest.mark.parametrize(("name", "argv"), READERS, ids=READER_IDS)
def test_alias_bomb_is_refused_with_exit_2(
    tmp_path: Path, name: str, argv: Callable[[Path], list[str]]
) -> None:
    """A 355-byte alias bomb is refused by every YAML reader with exit 2, naming the file and the line."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    done = run_cli(argv(path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{path}: refused at line" in done.stderr
    assert "aliases expand to more than" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "text",
    [
        "agents: " + "[" * 5000 + "]" * 5000 + "\n",
        "agents:\n" + "".join("  " * i + "- \n" for i in range(1, 1000)),
        "agents: &a [*a]\n",
    ],
    ids=["flow-5000-deep", "block-1000-deep", "self-alias"],
)
@pytest.mark.parametrize(("name", "argv"), READERS, ids=READER_IDS)
def test_deep_or_recursive_yaml_is_refused_with_exit_2(
    tmp_path: Path, name: str, argv: Callable[[Path], list[str]], text: str
) -> None:
    """Nesting thousands deep, or an alias inside its own anchor, is exit 2 naming the file, no traceback."""
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    done = run_cli(argv(path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{path}: refused at line" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("name", "argv"), READERS, ids=READER_IDS)
def test_oversized_and_non_utf8_files_are_refused(
    tmp_path: Path, name: str, argv: Callable[[Path], list[str]]
) -> None:
    """A file over the size bound, or one that is not UTF-8, is exit 2 naming the file and the reason."""
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_BYTES + "\n")
    done = run_cli(argv(big))
    assert done.returncode == 2 and f"{big}: refused: larger than" in done.stderr, done.stderr[-2000:]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"agents:\n  - \xff\xfe\n")
    done = run_cli(argv(binary))
    assert done.returncode == 2 and f"{binary}: not UTF-8 text (line 2)" in done.stderr, done.stderr


@pytest.mark.parametrize(("name", "argv"), READERS, ids=READER_IDS)
def test_syntax_error_names_the_file_line_and_column(
    tmp_path: Path, name: str, argv: Callable[[Path], list[str]]
) -> None:
    """A YAML syntax error names the file (not "<unicode string>"), the line and the column, in one line."""
    path = tmp_path / "broken.yaml"
    path.write_text("agents:\n  - agent_type: planner\n    capabilities: [plan\n    endpoint: http://h:1\n")
    done = run_cli(argv(path))
    assert done.returncode == 2
    assert "<unicode string>" not in done.stderr
    assert f"{path}: not valid YAML at line 4, column 13: expected ',' or ']'" in done.stderr, done.stderr
    assert "started at line 3, column 19" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "argv"),
    [r for r in READERS if r[0] != "acl setup"],
    ids=[n for n in READER_IDS if n != "acl setup"],
)
def test_bad_duration_names_the_field_and_line_in_words(
    tmp_path: Path, name: str, argv: Callable[[Path], list[str]]
) -> None:
    """`ttl: fifteen` says it is not a duration and what is expected, with the field and line, not
    pydantic's "invalid character in hour"."""
    path = tmp_path / "agents.yaml"
    path.write_text(
        "agents:\n  - agent_type: planner\n    capabilities: [plan]\n    endpoint: http://h:1\n"
        "    ttl: fifteen\n"
    )
    done = run_cli(argv(path))
    assert done.returncode == 2
    assert "hour" not in done.stderr
    assert f"{path}: agents[0].ttl: 'fifteen' is not a duration" in done.stderr, done.stderr
    assert "(line 5)" in done.stderr


def test_acl_file_errors_name_the_line(tmp_path: Path) -> None:
    """An invalid value in an ACL file is exit 2 naming the file, the field and the line it is on."""
    path = tmp_path / "acl.yaml"
    path.write_text("tokens:\n  - name: r\n    kind: registrar\n    agent_types: [Bad_Type]\n")
    done = run_cli(["acl", "setup", str(path), "-http-addr", NOWHERE])
    assert done.returncode == 2
    assert f"{path}: tokens[0].agent_types[0]: agent type 'Bad_Type' is not a DNS label" in done.stderr
    assert "(line 4)" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("    agent_typo: x", "agents[0].agent_typo: unknown field (check its spelling and indentation)"),
        ("    weight: heavy", "agents[0].weight: expected a whole number"),
        ("    metadata: [1]", "agents[0].metadata: expected a mapping"),
        ("    health: {intervall: 5}", "agents[0].health.intervall: unknown field"),
    ],
)
def test_field_errors_use_a_yaml_authors_words(tmp_path: Path, line: str, words: str) -> None:
    """Misspelt fields and wrong kinds of value are said in YAML terms (unknown field, expected a mapping),
    not pydantic's ("Extra inputs are not permitted"), with the line."""
    path = tmp_path / "agents.yaml"
    path.write_text(f"agents:\n  - agent_type: p\n    capabilities: [a]\n    endpoint: http://h:1\n{line}\n")
    done = run_cli(["render", str(path)])
    assert done.returncode == 2
    assert f"{path}: {words}" in done.stderr and "(line 5)" in done.stderr, done.stderr


@pytest.mark.parametrize(("name", "argv"), READERS, ids=READER_IDS)
def test_non_string_keys_are_a_clear_error(
    tmp_path: Path, name: str, argv: Callable[[Path], list[str]]
) -> None:
    """Integer keys where field names belong are exit 2 naming the file, never a TypeError traceback."""
    path = tmp_path / "keys.yaml"
    path.write_text("agents:\n  - {1: x, agent_type: p, capabilities: [a], endpoint: 'http://h:1'}\n1: 2\n")
    done = run_cli(argv(path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(path) in done.stderr and "Traceback" not in done.stderr


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    """Ordinary anchors and `<<: *defaults` merges are accepted: the bounds refuse only expansion."""
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "defaults: &d {agent_type: planner, capabilities: [plan], ttl: 15s}\n"
        "agents:\n  - {<<: *d, endpoint: 'http://h:1', agent_id: p-1}\n"
        "  - {<<: *d, endpoint: 'http://h:2', agent_id: p-2}\n"
    )
    document = load_yaml(path)
    assert [a["agent_type"] for a in document.data["agents"]] == ["planner", "planner"]
    assert document.line_of("agents[1].endpoint") == 4


def test_bounds_are_documented_constants() -> None:
    """The bounds are sane: deep enough for any config, far below what would hurt."""
    assert 32 <= MAX_DEPTH <= 128 and 10_000 <= MAX_VALUES <= 1_000_000 and MAX_BYTES >= 256 * 1024


@pytest.mark.parametrize(("name", "argv"), READERS, ids=READER_IDS)
def test_a_key_given_twice_is_an_error_naming_both_lines(
    tmp_path: Path, name: str, argv: Callable[[Path], list[str]]
) -> None:
    """A key written twice in one mapping (PyYAML silently keeps the last) is exit 2 naming both lines."""
    path = tmp_path / "twice.yaml"
    path.write_text(
        "agents:\n  - agent_type: p\n    capabilities: [a]\n    endpoint: http://h:1\n"
        "    ttl: 15\n    ttl: 20\n"
    )
    done = run_cli(argv(path))
    assert done.returncode == 2
    assert (
        f"{path}: not valid YAML at line 6, column 5: the key 'ttl' is given twice (first at line 5"
        in done.stderr
    )


@pytest.mark.parametrize(
    "path_value", ['"/health\\e]0;x\\a"', '"/' + "x" * 2000 + '"'], ids=["escape", "long"]
)
def test_health_path_with_control_characters_or_absurd_length_is_refused(
    tmp_path: Path, path_value: str
) -> None:
    """A probe path holding terminal escapes or thousands of characters is exit 2 naming the field."""
    path = tmp_path / "agents.yaml"
    path.write_text(
        "agents:\n  - agent_type: p\n    capabilities: [a]\n    endpoint: http://h:1\n"
        f"    health: {{path: {path_value}}}\n"
    )
    done = run_cli(["render", str(path)])
    assert done.returncode == 2, done.stderr
    assert f"{path}: agents[0].health.path:" in done.stderr and "\x1b" not in done.stderr
