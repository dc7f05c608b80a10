"""``consul-agents watch``: the agents matching filters, then one line per change as it happens.

The registry's cache watches Consul with blocking queries; each time it reports a change (or after
``--interval`` at most) the command asks the registry again and prints the difference from the last
answer: an agent added, removed (deregistered, or no longer matching, e.g. turned critical), or changed
(status, load, endpoint, capabilities, tags, weight, metadata). The diff is a pure function, :func:`changes`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from consul_agents._models import AgentInfo, DiscoveryRequest
from consul_agents._registry import AgentRegistry
from consul_agents.cli._common import (
    EXIT_OK,
    add_connection_flags,
    add_filter_flags,
    add_output_flags,
    filter_fields,
    positive_int,
    positive_number,
    print_agents,
    printable,
    with_registry,
)

__all__ = ["Change", "changes", "register"]

#: The AgentInfo fields whose change is worth a line (heartbeat time and staleness move all the time).
WATCHED_FIELDS = ("status", "current_load", "endpoint", "capabilities", "tags", "weight", "metadata")


@dataclass(frozen=True)
class Change:
    kind: Literal["added", "removed", "changed"]
    agent: AgentInfo
    #: For "changed": field name -> (before, after).
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.kind, "agent": self.agent.model_dump(mode="json")}
        if self.fields:
            body["changed"] = {
                name: {"before": _plain(before), "after": _plain(after)}
                for name, (before, after) in self.fields.items()
            }
        return body

    def to_line(self) -> str:
        agent = self.agent
        if self.kind == "added":
            detail = f"{agent.status.value} load {agent.current_load:.2f} {agent.endpoint}"
            return f"+ {agent.agent_id} ({agent.agent_type}) {detail}"
        if self.kind == "removed":
            return f"- {agent.agent_id} ({agent.agent_type})"
        moves = ", ".join(f"{name} {_plain(a)} -> {_plain(b)}" for name, (a, b) in self.fields.items())
        return f"~ {agent.agent_id} ({agent.agent_type}) {moves}"


def _plain(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def changes(before: dict[str, AgentInfo], after: dict[str, AgentInfo]) -> list[Change]:
    """What happened between two answers (agent id -> agent), in agent id order."""
    found: list[Change] = []
    for agent_id in sorted(before.keys() | after.keys()):
        old, new = before.get(agent_id), after.get(agent_id)
        if old is None and new is not None:
            found.append(Change("added", new))
        elif new is None and old is not None:
            found.append(Change("removed", old))
        elif old is not None and new is not None:
            moved = {
                name: (getattr(old, name), getattr(new, name))
                for name in WATCHED_FIELDS
                if getattr(old, name) != getattr(new, name)
            }
            if moved:
                found.append(Change("changed", new, moved))
    return found


async def _answer(registry: AgentRegistry, request: DiscoveryRequest) -> dict[str, AgentInfo]:
    return {agent.agent_id: agent for agent in await registry.discover_agents(request)}


async def _watch(args: argparse.Namespace, registry: AgentRegistry, request: DiscoveryRequest) -> None:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    reported = 0
    current = await _answer(registry, request)
    if args.json:
        agents = [agent.model_dump(mode="json") for agent in current.values()]
        print(json.dumps({"event": "snapshot", "agents": agents}), flush=True)
    else:
        print_agents(list(current.values()), as_json=False)
        print(flush=True)
    while args.count is None or reported < args.count:
        if deadline is not None and time.monotonic() >= deadline:
            return
        # The cache wakes this as soon as one of its Consul watches sees a change.
        await registry.discovery.cache.wait_changed(args.interval)
        latest = await _answer(registry, request)
        for change in changes(current, latest):
            if args.json:
                print(json.dumps(change.to_json()), flush=True)
            else:
                print(f"{datetime.now():%H:%M:%S} {printable(change.to_line())}", flush=True)
            reported += 1
            if args.count is not None and reported >= args.count:
                return
        current = latest


def _handler(args: argparse.Namespace) -> int:
    request = DiscoveryRequest(**filter_fields(args))
    with_registry(args, lambda registry: _watch(args, registry, request))
    return EXIT_OK


def register(subparsers: Any) -> None:
    description = (
        "Show the agents matching filters, then print each change (+ added, - removed or no longer "
        "matching, ~ changed) as it happens, until Ctrl-C. With --json: one JSON object per line."
    )
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watch", help="Follow agents live as they change.", description=description
    )
    add_filter_flags(parser)
    parser.add_argument(
        "--interval",
        type=positive_number,
        default=5.0,
        help="longest wait between two looks, in seconds (default 5)",
    )
    parser.add_argument("--count", type=positive_int, help="exit after this many changes")
    parser.add_argument("--timeout", type=positive_number, help="exit after this many seconds")
    add_connection_flags(parser)
    add_output_flags(parser)
    parser.set_defaults(handler=_handler)
