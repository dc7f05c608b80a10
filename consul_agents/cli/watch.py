"""``consul-agents watch``: the agents matching filters, then one line per change as it happens.

The registry's cache watches Consul with blocking queries; each time it reports a change (or after
``--interval`` at most) the command asks the registry again and prints the difference from the last
answer: an agent added, removed (deregistered, or no longer matching, e.g. turned critical), or changed
(status, load, endpoint, capabilities, tags, weight, metadata). The diff is a pure function, :func:`changes`.

``--event-log FILE`` (``-`` for stderr) keeps the lifecycle history for a log store: one JSON object per
line and per agent, ``agent.present`` for each agent of the first answer, then ``agent.added``,
``agent.changed`` (with what moved) and ``agent.removed``, each with the time and the agent's id, type,
datacenter, node and status. With a tracer provider installed, each round of changes is also a span,
``consul_agents.watch.changes``, with one span event of the same name and attributes per change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace

from consul_agents._models import AgentInfo, DiscoveryRequest
from consul_agents._registry import AgentRegistry
from consul_agents._tracing import clean, tracer, tracing_enabled
from consul_agents.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
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

__all__ = ["Change", "LifecycleLog", "changes", "register"]

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


class LifecycleLog:
    """Lifecycle events as JSON lines on ``stream`` and, with a tracer provider, as span events."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    @staticmethod
    def event(kind: str, agent: AgentInfo, moved: dict[str, tuple[Any, Any]] | None = None) -> dict[str, Any]:
        """One event as a flat JSON object (what a log store indexes)."""
        body: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(),
            "event": f"agent.{kind}",
            "agent_id": agent.agent_id,
            "agent_type": agent.agent_type,
            "datacenter": agent.datacenter,
            "node": agent.node,
            "status": agent.status.value,
            "endpoint": agent.endpoint,
            "current_load": agent.current_load,
            "health_score": agent.health_score,
        }
        if moved:
            body["changed"] = {
                name: {"before": _plain(before), "after": _plain(after)}
                for name, (before, after) in moved.items()
            }
        return body

    def write(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        if self.stream is not None:
            for body in events:
                self.stream.write(json.dumps(body, default=str) + "\n")
            self.stream.flush()
        if tracing_enabled():
            with tracer.start_as_current_span(
                "consul_agents.watch.changes", kind=trace.SpanKind.INTERNAL
            ) as span:
                span.set_attribute("result.count", len(events))
                for body in events:
                    attributes = {k: v for k, v in body.items() if k not in ("event", "time", "changed")}
                    if "changed" in body:
                        attributes["changed"] = sorted(body["changed"])
                    span.add_event(body["event"], clean(attributes))

    def present(self, agents: Sequence[AgentInfo]) -> None:
        self.write([self.event("present", agent) for agent in agents])

    def changes(self, found: Sequence[Change]) -> None:
        self.write([self.event(change.kind, change.agent, change.fields) for change in found])


def _open_event_log(path: str | None, stack: contextlib.ExitStack) -> LifecycleLog:
    if path is None:
        return LifecycleLog(None)
    if path == "-":
        return LifecycleLog(sys.stderr)
    return LifecycleLog(stack.enter_context(open(path, "a", encoding="utf-8")))


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


async def _watch(
    args: argparse.Namespace, registry: AgentRegistry, request: DiscoveryRequest, lifecycle: LifecycleLog
) -> None:
    deadline = time.monotonic() + args.timeout if args.timeout else None
    reported = 0
    current = await _answer(registry, request)
    lifecycle.present(list(current.values()))
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
        found = changes(current, latest)
        if args.count is not None:
            found = found[: args.count - reported]
        lifecycle.changes(found)
        for change in found:
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
    with contextlib.ExitStack() as stack:
        try:
            lifecycle = _open_event_log(args.event_log, stack)
        except OSError as exc:
            problem = f"--event-log {args.event_log!r} cannot be written: {exc.strerror or exc}"
            print(f"consul-agents: {printable(problem)}", file=sys.stderr)
            return EXIT_USAGE
        with_registry(args, lambda registry: _watch(args, registry, request, lifecycle))
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
    parser.add_argument(
        "--event-log",
        metavar="FILE",
        help="also append each agent's lifecycle events (present, added, changed, removed) to FILE as JSON "
        "lines, for a log store ('-': stderr)",
    )
    add_connection_flags(parser)
    add_output_flags(parser)
    parser.set_defaults(handler=_handler)
