"""The operational commands as real subprocesses: watch, serve and bench, and the full command list."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from processes import CLI
from support import eventually

from consul_agents import AgentRegistration, AgentRegistry, AgentStatus
from consul_agents.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


async def test_watch_prints_each_change_as_json_lines(consul_addr: str, unique: str, tmp_path: Path) -> None:
    """watch --json prints a snapshot, then added / changed / removed events as the registry changes."""
    out = tmp_path / "watch.out"
    argv = [*CLI, "watch", "--type", unique, "--json", "--interval", "30", "--timeout", "60"]
    with out.open("w") as sink:
        process = await asyncio.create_subprocess_exec(
            *argv, "-http-addr", consul_addr, stdout=sink, stderr=asyncio.subprocess.DEVNULL
        )

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.read_text().splitlines()]

    def seen(kind: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return any(event["event"] == kind for event in events())

        return check

    try:
        await eventually(seen("snapshot"), what="the snapshot line")
        async with AgentRegistry(consul_addr) as registry:
            reg = AgentRegistration(
                agent_type=unique, agent_id=f"{unique}-1", capabilities=["x"], endpoint="http://h:1"
            )
            await registry.register_agent(reg)
            await eventually(seen("added"), what="the added line")
            await registry.heartbeat(f"{unique}-1", 0.8, status=AgentStatus.WARNING)

            async def status_and_load_changed() -> bool:
                moved = {name for e in events() if e["event"] == "changed" for name in e["changed"]}
                return {"status", "current_load"} <= moved

            await eventually(status_and_load_changed, what="the status and load changes")
            await registry.deregister_agent(f"{unique}-1")
            await eventually(seen("removed"), what="the removed line")
    finally:
        process.kill()
        await process.wait()
    printed = events()
    assert printed[0] == {"event": "snapshot", "agents": []}
    kinds = [(e["event"], e["agent"]["agent_id"]) for e in printed[1:]]
    assert kinds[0] == ("added", f"{unique}-1") and kinds[-1] == ("removed", f"{unique}-1")
    # Status and load may reach Consul (and the watch) as one change or as two.
    changed: dict[str, Any] = {}
    for event in printed[2:-1]:
        assert event["event"] == "changed"
        changed.update(event["changed"])
    assert changed["status"]["after"] == "warning"
    assert changed["current_load"]["after"] == 0.8


def test_every_subcommand_the_issue_names_is_there() -> None:
    """consul-agents --help lists dev, register, ..., serve and bench, and each has its own --help."""
    names = [
        *("dev", "register", "deregister", "status", "discover", "select", "watch"),
        *("sidecar", "render", "acl", "dns", "serve", "bench"),
    ]
    listing = cli("--help")
    assert listing.returncode == 0
    listed = set(listing.stdout.split())
    assert [name for name in names if name not in listed] == []
    subcommands = next(
        action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    for name in names:
        assert subcommands.choices[name].format_help().startswith("usage: consul-agents " + name), name


def test_serve_refuses_a_token_of_its_own() -> None:
    """serve takes no token (it forwards callers' tokens), and says so with the usage exit code."""
    done = cli("serve", "-token", "s3cret")
    assert done.returncode == 2
    assert "forwards each caller's own token" in done.stderr
    assert "s3cret" not in done.stderr


def test_bench_lists_and_rejects_unknown_suites() -> None:
    """bench finds the checkout's suites, and an unknown suite is a usage error."""
    listed = cli("bench", "--list", cwd=REPO)
    assert listed.returncode == 0 and "core" in listed.stdout.split()
    unknown = cli("bench", "no-such-suite", cwd=REPO)
    assert unknown.returncode == 2 and "unknown suite" in unknown.stderr


def test_bench_outside_a_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    """Outside a source checkout, bench explains that the suites live in the repository."""
    done = cli("bench", "--list", cwd=tmp_path)
    assert done.returncode == 1 and "source checkout" in done.stderr


def test_watch_against_unreachable_consul_exits_unavailable(unused_tcp_port: int) -> None:
    """watch tells an unreachable Consul apart from other failures: exit code 5 and one line on stderr."""
    done = cli("watch", "-http-addr", f"http://127.0.0.1:{unused_tcp_port}", "--timeout", "5")
    assert done.returncode == 5
    assert done.stderr.count("\n") == 1 and "unreachable" in done.stderr


def test_serve_answers_a_malformed_request_400_without_a_traceback(consul_addr: str) -> None:
    """A client sending `consul-agents serve` a request line over 8 KiB gets a 400; serve's output holds no
    traceback and no error line for it, and serve goes on answering."""
    command = [*CLI, "serve", "--listen", "127.0.0.1:0", "-http-addr", consul_addr]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("serving on "), line
            host, port = line.split()[-1].split("//")[1].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(b"GET /v1/" + b"x" * 10_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
                answer = conn.makefile("rb").readline()
            assert answer.split(b" ", 2)[1] == b"400", answer
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=10) as still:
                assert still.status in (200, 503)
        finally:
            proc.terminate()
        _, errors = proc.communicate(timeout=30)
    assert "Traceback" not in errors and "Error handling request" not in errors, errors[-2000:]
