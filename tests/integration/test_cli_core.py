"""The consul-agents command as a real subprocess against real Consul: registry commands and the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any

import pytest
from processes import CLI


def cli(*args: str, addr: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, *args]
    if addr is not None:
        argv += ["-http-addr", addr]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def cli_json(*args: str, addr: str) -> Any:
    done = cli(*args, "--json", addr=addr)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_register_discover_status_deregister(consul_addr: str, unique: str) -> None:
    """The registry commands round-trip an agent, print JSON for scripts and exit 0."""
    registered = cli_json(
        "register",
        "--type",
        unique,
        "-c",
        "plan,summarize",
        "--endpoint",
        "http://127.0.0.1:9100",
        "--tag",
        "tier=gold",
        "--metadata",
        '{"model": "m1"}',
        "--weight",
        "7",
        # Nothing heartbeats for it, and each CLI call starts an interpreter: a TTL that outlives the test.
        "--ttl",
        "600",
        addr=consul_addr,
    )
    agent_id = registered["agent_id"]
    found = cli_json("discover", "--type", unique, "-c", "plan", "--tag", "tier=gold", addr=consul_addr)
    assert [(a["agent_id"], a["weight"], a["metadata"]) for a in found] == [(agent_id, 7, {"model": "m1"})]
    assert cli_json("status", agent_id, addr=consul_addr)[0]["status"] == "passing"
    assert (
        cli_json("select", "--type", unique, "--strategy", "round_robin", addr=consul_addr)[0]["agent_id"]
        == agent_id
    )
    assert unique in cli_json("types", addr=consul_addr)
    table = cli("discover", "--type", unique, addr=consul_addr)
    assert table.returncode == 0 and agent_id in table.stdout and "STATUS" in table.stdout
    assert cli_json("deregister", agent_id, addr=consul_addr) == {"agent_id": agent_id, "removed": True}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("status", "no-such-agent"), 3, "not registered"),
        (("deregister", "no-such-agent"), 3, "was not registered"),
        (("register", "--type", "bad type", "-c", "x", "--endpoint", "http://h:1"), 2, "agent_type"),
        (("discover", "--max-load", "2"), 2, "max_load"),
        (("discover", "--tag", "novalue"), 2, "key=value"),
    ],
)
def test_exit_codes(consul_addr: str, args: tuple[str, ...], code: int, message: str) -> None:
    """Not found exits 3 and invalid input exits 2, each with a one-line message naming the problem."""
    done = cli(*args, addr=consul_addr)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_unavailable_consul_exits_5() -> None:
    """An unreachable Consul exits 5 with a message naming the address, not a traceback."""
    done = cli("discover", addr="http://127.0.0.1:9")
    assert done.returncode == 5
    assert "http://127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr


def test_demo_once_shows_discovery_and_selection(consul_addr: str) -> None:
    """The demo behind `make run` registers the fleet, prints discovery and selection, and cleans up."""
    done = cli("demo", "--once", "--seed", "1", addr=consul_addr, timeout=120)
    assert done.returncode == 0, done.stderr
    for expected in ("planner-1", "coder-2", "researcher-1", "round_robin", "power_of_two", "Discover: tag"):
        assert expected in done.stdout
    left = cli_json("discover", "--type", "planner", addr=consul_addr)
    assert [a for a in left if a["agent_id"] in {"planner-1", "planner-2"}] == []


def test_demo_rejects_a_broken_fleet_file(tmp_path: Any, consul_addr: str) -> None:
    """A fleet file with a bad entry fails with the file, the entry and the field named."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("agents:\n  - agent_type: ok\n    capabilities: [a]\n    endpoint: nohost\n")
    done = cli("demo", "--once", "--fleet", str(fleet), addr=consul_addr)
    assert done.returncode == 2
    assert str(fleet) in done.stderr and "agents[0]" in done.stderr and "endpoint" in done.stderr


def test_demo_ctrl_c_deregisters_and_exits_cleanly() -> None:
    """Ctrl-C (SIGINT to the whole process group, as from a terminal) lets the demo deregister and exit 0."""
    demo = subprocess.Popen(
        [*CLI, "demo", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("Running;"):
                break
        else:
            pytest.fail(
                "the demo ended before it was running: " + (demo.stderr.read() if demo.stderr else "")
            )
        os.killpg(demo.pid, signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, stderr
    assert "unreachable" not in stderr
