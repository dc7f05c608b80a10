"""The operational commands as real subprocesses: watch, serve and bench, and the full command list."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from support import eventually

from consul_agents import AgentRegistration, AgentRegistry, AgentStatus

CLI = [sys.executable, "-m", "consul_agents.cli"]
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


async def test_watch_prints_each_change_as_json_lines(consul_addr: str, unique: str, tmp_path: Path) -> None:
    """watch --json prints a snapshot, then added / changed / removed events as the registry changes."""
    out = tmp_path / "watch.out"
    argv = [*CLI, "watch", "--type", unique, "--json", "--interval", "0.1", "--count", "3", "--timeout", "60"]
    with out.open("w") as sink:
        process = await asyncio.create_subprocess_exec(
            *argv, "-http-addr", consul_addr, stdout=sink, stderr=asyncio.subprocess.DEVNULL
        )
    try:

        async def printed(lines: int) -> bool:
            return len(out.read_text().splitlines()) >= lines

        await eventually(lambda: printed(1), what="the snapshot line")
        async with AgentRegistry(consul_addr) as registry:
            reg = AgentRegistration(
                agent_type=unique, agent_id=f"{unique}-1", capabilities=["x"], endpoint="http://h:1"
            )
            await registry.register_agent(reg)
            await eventually(lambda: printed(2), what="the added line")
            await registry.heartbeat(f"{unique}-1", 0.8, status=AgentStatus.WARNING)
            await eventually(lambda: printed(3), what="the changed line")
            await registry.deregister_agent(f"{unique}-1")
            await eventually(lambda: printed(4), what="the removed line")
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events[0] == {"event": "snapshot", "agents": []}
    assert [(e["event"], e["agent"]["agent_id"]) for e in events[1:]] == [
        ("added", f"{unique}-1"),
        ("changed", f"{unique}-1"),
        ("removed", f"{unique}-1"),
    ]
    assert events[2]["changed"]["status"] == {"before": "passing", "after": "warning"}
    assert events[2]["changed"]["current_load"] == {"before": 0.0, "after": 0.8}


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
