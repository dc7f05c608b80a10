"""Batch and replacement commands: register-many, deregister-many, replace.

``register-many FILE`` reads registrations from a YAML or JSON file: a list, or a mapping with ``agents:``
(a sidecar file works as it is: its ``health`` blocks, the sidecar's probes, are not registration fields
and are left out). ``deregister-many FILE`` reads agent ids: a list of ids, a mapping with
``agent_ids:``, or the same registration file (each item's ``agent_id``). Every item is validated first:
an invalid file is exit 2 with one line per invalid item (index, field, line) and nothing written. Then
each item's result is printed; the exit code is 0 when every item succeeded, 1 when any failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consul_agents._batch import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, BatchResult, InvalidBatchError
from consul_agents._errors import InvalidAgentError
from consul_agents._models import AgentRegistration
from consul_agents._replace import ReplacementError
from consul_agents._yaml import YamlDocument, load_yaml
from consul_agents.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    add_subcommand,
    positive_number,
    print_json,
    print_table,
    printable,
    with_registry,
)

if TYPE_CHECKING:
    from consul_agents._registry import AgentRegistry

__all__ = ["register"]


def _concurrency(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1 to {MAX_CONCURRENCY}")
    return int(value)


def _items(document: YamlDocument, key: str) -> tuple[list[Any], str]:
    """The file's list of items, and the field path its items are under (for line numbers)."""
    data = document.data
    if isinstance(data, dict) and key in data:
        data, prefix = data[key], key
    else:
        prefix = ""
    if not isinstance(data, list):
        raise InvalidAgentError(
            f"{document.path}: expected a list of items, or a mapping with {key}:", field="file"
        )
    return data, prefix


def _print_refused(document: YamlDocument, prefix: str, exc: InvalidBatchError) -> int:
    print(
        f"consul-agents: {document.path}: {len(exc.invalid)} invalid item(s), nothing written:",
        file=sys.stderr,
    )
    for item in exc.invalid:
        where = f"{prefix}[{item.index}]" if prefix else f"[{item.index}]"
        line = document.line_of(f"{where}.{item.field}" if item.field else where)
        at = f" (line {line})" if line is not None else ""
        print(f"  item {item.index}: {printable(item.message)}{at}", file=sys.stderr)
    return EXIT_USAGE


def _print_results(result: BatchResult, as_json: bool) -> int:
    if as_json:
        print_json([r.model_dump(mode="json", exclude_none=True) for r in result.results])
    else:
        rows = []
        for r in result.results:
            outcome = "ok" if r.ok else f"{r.error}: {r.message}"
            if r.ok and r.removed is False:
                outcome = "ok (was not registered)"
            rows.append((r.index, r.agent_id or "-", outcome))
        print_table(["INDEX", "AGENT", "RESULT"], rows)
    return EXIT_OK if result.ok else EXIT_ERROR


def _run_batch(
    args: argparse.Namespace,
    document: YamlDocument,
    prefix: str,
    call: Callable[[AgentRegistry], Awaitable[BatchResult]],
) -> int:
    """Run one batch call on the file's items: its refusal printed item by item, or every item's result."""
    try:
        result = with_registry(args, call)
    except InvalidBatchError as exc:
        return _print_refused(document, prefix, exc)
    return _print_results(result, args.json)


def _register_many(args: argparse.Namespace) -> int:
    document = load_yaml(args.file)
    items, prefix = _items(document, "agents")
    # A sidecar file works as it is: its `health` blocks are the sidecar's probes, not registration fields.
    items = [{k: v for k, v in i.items() if k != "health"} if isinstance(i, dict) else i for i in items]
    return _run_batch(
        args,
        document,
        prefix,
        lambda registry: registry.register_many(items, concurrency=args.concurrency, timeout=args.timeout),
    )


def _deregister_many(args: argparse.Namespace) -> int:
    document = load_yaml(args.file)
    data = document.data
    key = "agents" if isinstance(data, dict) and "agents" in data else "agent_ids"
    items, prefix = _items(document, key)
    ids: list[Any] = [item.get("agent_id") if isinstance(item, dict) else item for item in items]
    return _run_batch(
        args,
        document,
        prefix,
        lambda registry: registry.deregister_many(ids, concurrency=args.concurrency, timeout=args.timeout),
    )


def _replace(args: argparse.Namespace) -> int:
    new: AgentRegistration | str
    if args.new_id:
        new = args.new_id
    else:
        document = load_yaml(args.file)
        data = document.data
        if isinstance(data, dict) and isinstance(data.get("agents"), list) and len(data["agents"]) == 1:
            data = data["agents"][0]
        if not isinstance(data, dict):
            raise InvalidAgentError(f"{args.file}: expected one registration (a mapping)", field="file")
        try:
            new = AgentRegistration(**data)
        except InvalidAgentError as exc:
            raise document.field_error(exc) from exc
    try:
        done = with_registry(
            args,
            lambda registry: registry.replace_agent(
                args.old_id, new, timeout=args.timeout, drain_timeout=args.drain_timeout
            ),
        )
    except ReplacementError as exc:
        print(f"consul-agents: {printable(exc)}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print_json(
            {
                "old_id": done.old_id,
                "new_id": done.new_id,
                "passing_after": done.passing_after,
                "drained_for": done.drained_for,
                "leases_left": done.leases_left,
                "old_load": done.old_load,
            }
        )
    else:
        print(
            f"replaced {done.old_id} by {done.new_id}: passing after {done.passing_after:.1f}s, "
            f"drained for {done.drained_for:.1f}s"
        )
    return EXIT_OK


def register(subparsers: Any) -> None:
    for name, text, handler in [
        (
            "register-many",
            "Register the agents of a YAML or JSON file; every item is reported.",
            _register_many,
        ),
        (
            "deregister-many",
            "Deregister the agents a YAML or JSON file names; every item is reported.",
            _deregister_many,
        ),
    ]:
        p = add_subcommand(subparsers, name, text, handler)
        p.add_argument("file", type=Path, help="YAML or JSON: a list, or a mapping with agents: / agent_ids:")
        p.add_argument(
            "--concurrency",
            type=_concurrency,
            default=DEFAULT_CONCURRENCY,
            help="writes in flight at once (default %(default)s)",
        )
        p.add_argument("--timeout", type=positive_number, help="seconds for the whole batch (default: none)")

    p = add_subcommand(
        subparsers,
        "replace",
        "Replace an agent: register the new one, wait until it passes, drain and deregister the old one.",
        _replace,
    )
    p.add_argument("old_id")
    new = p.add_mutually_exclusive_group(required=True)
    new.add_argument("--file", type=Path, help="YAML or JSON file with the new agent's registration")
    new.add_argument("--new-id", help="the id of an agent already registered (a sidecar's, a session's)")
    p.add_argument("--timeout", type=positive_number, default=60.0, help="seconds for the new agent to pass")
    p.add_argument(
        "--drain-timeout",
        type=positive_number,
        default=30.0,
        help="seconds to wait for leases on the old one",
    )
