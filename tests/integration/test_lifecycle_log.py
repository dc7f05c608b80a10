"""Lifecycle history: `consul-agents watch --event-log` writes each agent's events as JSON lines (a real
subprocess over real Consul), and as span events when a tracer provider is installed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from processes import CLI
from support import candidate, eventually, registration

from consul_agents import AgentRegistry, AgentStatus
from consul_agents.cli import main
from consul_agents.cli.watch import Change, LifecycleLog


async def test_watch_event_log_keeps_each_agents_lifecycle_as_json_lines(
    consul_addr: str, unique: str, tmp_path: Path
) -> None:
    """An agent present at start, one registered, changed (status and load) and deregistered: the event log
    holds agent.present, agent.added, agent.changed with what moved, and agent.removed, in that order, each a
    JSON object with the time, id, type, datacenter, node and status."""
    log = tmp_path / "lifecycle.jsonl"
    async with AgentRegistry(consul_addr) as registry:
        early = await registry.register_agent(registration(unique, agent_id=f"{unique}-early", ttl=60))
        argv = [
            *CLI,
            "watch",
            "--type",
            unique,
            "--interval",
            "30",
            "--timeout",
            "90",
            "--event-log",
            str(log),
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            "-http-addr",
            consul_addr,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        def events() -> list[dict[str, Any]]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

        def logged(kind: str, agent_id: str) -> Any:
            async def check() -> bool:
                return any(e["event"] == kind and e["agent_id"] == agent_id for e in events())

            return check

        try:
            await eventually(logged("agent.present", early), what="the present line")
            late = await registry.register_agent(registration(unique, agent_id=f"{unique}-late", ttl=60))
            await eventually(logged("agent.added", late), what="the added line")
            await registry.heartbeat(late, 0.7, status=AgentStatus.WARNING)

            async def status_and_load() -> bool:
                moved = {n for e in events() if e["event"] == "agent.changed" for n in e["changed"]}
                return {"status", "current_load"} <= moved

            await eventually(status_and_load, what="the changed lines")
            await registry.deregister_agent(late)
            await eventually(logged("agent.removed", late), what="the removed line")
        finally:
            process.kill()
            await process.wait()
            await registry.deregister_agent(early)
    found = events()
    assert found[0]["event"] == "agent.present"
    kinds = [e["event"] for e in found if e["agent_id"] == f"{unique}-late"]
    assert kinds[0] == "agent.added" and kinds[-1] == "agent.removed"
    assert set(kinds[1:-1]) == {"agent.changed"}
    last_change = [e for e in found if e["event"] == "agent.changed"][-1]
    assert last_change["status"] == "warning" and last_change["current_load"] == 0.7
    for event in found:
        assert {"time", "agent_id", "agent_type", "datacenter", "node", "status"} <= set(event)
        assert event["agent_type"] == unique and event["datacenter"] == "dc1" and event["node"]


def test_watch_refuses_an_event_log_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An --event-log path that cannot be opened is exit 2 naming it, before Consul is asked anything."""
    bad = tmp_path / "no-such-dir" / "log.jsonl"
    assert main(["watch", "--event-log", str(bad), "-http-addr", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.splitlines()) == 1


def test_lifecycle_changes_are_span_events_when_a_tracer_is_set(spans: InMemorySpanExporter) -> None:
    """With a tracer provider, a round of changes is one span whose events are the changes, with the
    agent's id, type and status, and what changed."""
    before, after = candidate("a1"), candidate("a1", health=0.5)
    LifecycleLog(None).changes(
        [
            Change("added", candidate("a2")),
            Change("changed", after, {"status": (before.status, after.status)}),
        ]
    )
    (span,) = [s for s in spans.get_finished_spans() if s.name == "consul_agents.watch.changes"]
    assert [event.name for event in span.events] == ["agent.added", "agent.changed"]
    changed = span.events[1].attributes
    assert changed is not None
    assert (changed["agent_id"], changed["status"], tuple(changed["changed"])) == (
        "a1",
        "warning",
        ("status",),
    )
