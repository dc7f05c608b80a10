"""The one YAML loader of the project: every YAML file it reads (sidecar, ACL, fleet) goes through here.

A YAML file is input written by a person, or by anyone who can write the file: it is bounded before it
costs anything. :func:`load_yaml` refuses, with an error naming the file and the line,

* a file larger than :data:`MAX_BYTES`, or that is not UTF-8;
* nesting deeper than :data:`MAX_DEPTH` (PyYAML's composer recurses once per level);
* aliases that expand to more than :data:`MAX_VALUES` values, or that refer to themselves: a 700-byte
  "billion laughs" document expands to 10^9 values, which costs nothing to parse and everything to walk;
* a key given twice in one mapping (PyYAML would keep the last one silently).

Expansion is measured while the document is composed, node by node (each node's expanded size and depth
from its children's, which are already measured), so a bomb is refused after a few hundred nodes. Anchors
and aliases themselves stay allowed (``<<: *defaults`` is common in configs).

Errors speak of lines and fields, not of PyYAML's internals::

    planner.yaml: not valid YAML at line 4, column 13: expected ',' or ']', but got ':'
        (in the flow sequence started at line 3, column 19)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from consul_agents._errors import InvalidAgentError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_VALUES", "YamlDocument", "load_yaml"]

#: Largest file read, in bytes (a sidecar file of 1,000 agents is about 200 KB).
MAX_BYTES = 1024 * 1024
#: Deepest nesting of mappings and sequences, counting aliases expanded.
MAX_DEPTH = 64
#: Most values (scalars, mappings, sequences) in the document with every alias expanded.
MAX_VALUES = 100_000

_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class _Refused(yaml.MarkedYAMLError):
    """A bound was exceeded at ``problem_mark``."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, measuring each node's expanded size and depth as it is composed."""

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text)
        self.name = name  # marks name the file, not "<unicode string>"
        self._depth = 0
        #: id(node) -> (values with aliases expanded, depth); every node stays alive in the document.
        self._measured: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._measured:
                raise _Refused(problem="an alias refers to the value that contains it", problem_mark=mark)
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
            _refuse_duplicate_keys(node)
        size, depth = 1, 1
        for child in children:
            if child is None:  # pragma: no cover - PyYAML composes a node for every event
                continue
            child_size, child_depth = self._measured[id(child)]
            size += child_size
            depth = max(depth, child_depth + 1)
        if size > MAX_VALUES:
            raise _Refused(
                problem=f"its aliases expand to more than {MAX_VALUES:,} values", problem_mark=mark
            )
        if depth > MAX_DEPTH:
            raise _Refused(
                problem=f"nested more than {MAX_DEPTH} levels deep once aliases are expanded",
                problem_mark=mark,
            )
        self._measured[id(node)] = (size, depth)
        return node


def _refuse_duplicate_keys(node: yaml.MappingNode) -> None:
    """PyYAML keeps the last of two equal keys without a word; a second ``health:`` is a mistake to show."""
    seen: dict[str, Any] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if key.value in seen:
            raise yaml.composer.ComposerError(
                problem=f"the key {key.value[:64]!r} is given twice (first at {_where(seen[key.value])})",
                problem_mark=key.start_mark,
            )
        seen[key.value] = key.start_mark


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_message(exc: yaml.YAMLError) -> str:
    """PyYAML's error in a user's words: what is wrong and where, without its multi-line excerpt."""
    if isinstance(exc, _Refused):
        return f"refused at {_where(exc.problem_mark)}: {exc.problem}"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        text = f"not valid YAML at {_where(mark)}" if mark is not None else "not valid YAML"
        message = f"{text}: {exc.problem or exc.context or 'cannot be read'}"
        if exc.context and exc.problem and exc.context_mark is not None:
            message += f" ({exc.context.removeprefix('while ')} started at {_where(exc.context_mark)})"
        return message
    return f"not valid YAML: {exc}"


@dataclass(frozen=True)
class YamlDocument:
    """A loaded file: its data, and where each field was written (for error messages)."""

    path: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, field: str | None) -> int | None:
        """The line of ``field`` (``agents[0].health.timeout``), or of its deepest part the file has."""
        node, line = self.root, None
        for name, index in _FIELD_PART.findall(field or ""):
            position = index or (name if name.isdigit() else "")
            if isinstance(node, yaml.SequenceNode) and position and int(position) < len(node.value):
                node = node.value[int(position)]
            elif isinstance(node, yaml.MappingNode) and name:
                found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == name]
                if not found:
                    break
                key, node = found[0]
                line = key.start_mark.line + 1
                continue
            else:
                break
            line = node.start_mark.line + 1
        return line

    def locate(self, error: InvalidAgentError) -> InvalidAgentError:
        """``error`` in a YAML author's words, with `` (line N)`` when the file shows where its field is."""
        message = str(error)
        for technical, words in _WORDS:
            message = message.replace(technical, words)
        line = self.line_of(error.field)
        if line is not None:
            message += f" (line {line})"
        return InvalidAgentError(message, field=error.field)

    def field_error(self, error: InvalidAgentError) -> InvalidAgentError:
        """A model's ``invalid a.0.b: message`` as ``<file>: a[0].b: message (line N)``."""
        field = _DOTTED_INDEX.sub(r"[\1]", error.field or "")
        message = str(error).removeprefix(f"invalid {error.field}: ")
        return self.locate(InvalidAgentError(f"{self.path}: {field}: {message}", field=error.field))


#: pydantic's phrases, as someone editing YAML says them.
_WORDS = (
    ("Extra inputs are not permitted", "unknown field (check its spelling and indentation)"),
    ("Input should be a valid dictionary", "expected a mapping (key: value lines, or {key: value})"),
    ("Input should be a valid list", "expected a list ([a, b], or one '- item' per line)"),
    ("Input should be a valid string", "expected text"),
    ("Input should be a valid integer, unable to parse string as an integer", "expected a whole number"),
    ("Input should be a valid number, unable to parse string as a number", "expected a number"),
    ("Field required", "missing (this field is required)"),
)
_DOTTED_INDEX = re.compile(r"\.(\d+)(?=\.|$)")


def load_yaml(path: Path | str) -> YamlDocument:
    """Read one YAML document, bounded; InvalidAgentError (field ``file``) names the file and the line."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidAgentError(f"{path}: cannot read: {exc.strerror or exc}", field="file") from exc
    if len(raw) > MAX_BYTES:
        raise InvalidAgentError(f"{path}: refused: larger than {MAX_BYTES // 1024} KiB", field="file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidAgentError(f"{path}: not UTF-8 text (line {line})", field="file") from exc
    loader = _BoundedLoader(text, str(path))
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise InvalidAgentError(f"{path}: {_yaml_message(exc)}", field="file") from exc
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, root=root)
