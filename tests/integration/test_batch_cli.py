"""The register-many, deregister-many and replace commands against a real Consul."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import consul_get

from consul_agents.cli import main


def _ids(consul_addr: str, agent_type: str) -> set[str]:
    entries, _ = consul_get(consul_addr, f"/v1/health/service/agent-{agent_type}")
    return {e["Service"]["ID"] for e in entries}


def _yaml(agent_type: str, count: int, bad: dict[int, str] | None = None) -> str:
    lines = ["agents:"]
    for i in range(count):
        endpoint = (bad or {}).get(i, f"http://127.0.0.1:{33000 + i}")
        lines += [
            f"  - agent_id: {agent_type}-{i}",
            f"    agent_type: {agent_type}",
            "    capabilities: [plan]",
            f"    endpoint: {endpoint}",
        ]
    return "\n".join(lines) + "\n"


def test_register_many_then_deregister_many_from_one_yaml_file(
    consul_addr: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sidecar-shaped YAML file registers every agent (one result line each, exit 0), and the same file
    given to deregister-many removes them."""
    path = tmp_path / "fleet.yaml"
    path.write_text(_yaml(unique, 4))
    assert main(["register-many", str(path), "-http-addr", consul_addr, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [(r["index"], r["agent_id"], r["ok"]) for r in results] == [
        (i, f"{unique}-{i}", True) for i in range(4)
    ]
    assert _ids(consul_addr, unique) == {f"{unique}-{i}" for i in range(4)}
    assert main(["deregister-many", str(path), "-http-addr", consul_addr]) == 0
    assert capsys.readouterr().out.count(" ok") == 4
    assert _ids(consul_addr, unique) == set()


def test_an_invalid_file_is_exit_2_with_every_item_and_line(
    consul_addr: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two bad endpoints: exit 2, one stderr line per invalid item with its line number, nothing written."""
    path = tmp_path / "fleet.yaml"
    path.write_text(_yaml(unique, 3, bad={0: "nowhere", 2: "ftp//x"}))
    assert main(["register-many", str(path), "-http-addr", consul_addr]) == 2
    err = capsys.readouterr().err
    assert "2 invalid item(s), nothing written" in err
    assert "item 0:" in err and "(line 5)" in err and "item 2:" in err and "(line 13)" in err
    assert _ids(consul_addr, unique) == set()


def test_a_failed_item_is_exit_1_and_named(
    consul_addr: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON list whose second id is held by another type: exit 1, that item's error printed, the others
    registered."""
    held = [
        "register",
        "--type",
        f"{unique}x",
        "-c",
        "plan",
        "--endpoint",
        "http://h:2",
        "--id",
        f"{unique}-1",
    ]
    assert main([*held, "-http-addr", consul_addr]) == 0
    items = [
        {
            "agent_id": f"{unique}-{i}",
            "agent_type": unique,
            "capabilities": ["plan"],
            "endpoint": "http://h:1",
        }
        for i in range(3)
    ]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(items))
    assert main(["register-many", str(path), "-http-addr", consul_addr]) == 1
    out = capsys.readouterr().out
    assert "InvalidAgentError" in out and f"{unique}-1" in out
    assert _ids(consul_addr, unique) == {f"{unique}-0", f"{unique}-2"}
    assert main(["deregister", f"{unique}-1", "-http-addr", consul_addr]) == 0
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps({"agent_ids": [f"{unique}-0", f"{unique}-2"]}))
    assert main(["deregister-many", str(ids), "-http-addr", consul_addr]) == 0


def test_replace_a_new_agent_that_never_passes(
    consul_addr: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replace OLD --file NEW` whose new agent is not heartbeated: exit 1, the step and the state on
    stderr, the old agent still registered and the new one rolled back."""
    fleet = tmp_path / "old.yaml"
    fleet.write_text(_yaml(unique, 1))
    assert main(["register-many", str(fleet), "-http-addr", consul_addr]) == 0
    new = tmp_path / "new.yaml"
    new.write_text(
        f"agent_id: {unique}-9\nagent_type: {unique}\ncapabilities: [plan]\nendpoint: http://h:9\n"
    )
    capsys.readouterr()
    argv = ["replace", f"{unique}-0", "--file", str(new), "--timeout", "0.5", "-http-addr", consul_addr]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "step wait_passing" in err and "rolled back" in err
    assert _ids(consul_addr, unique) == {f"{unique}-0"}
    assert main(["deregister", f"{unique}-0", "-http-addr", consul_addr]) == 0


def test_replace_by_the_id_of_a_passing_agent(
    consul_addr: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replace OLD --new-id NEW` with NEW already passing deregisters OLD and prints the replacement."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(_yaml(unique, 2))
    assert main(["register-many", str(fleet), "-http-addr", consul_addr]) == 0
    capsys.readouterr()
    argv = [
        "replace",
        f"{unique}-0",
        "--new-id",
        f"{unique}-1",
        "--drain-timeout",
        "1",
        "-http-addr",
        consul_addr,
    ]
    assert main([*argv, "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["old_id"], done["new_id"], done["leases_left"]) == (f"{unique}-0", f"{unique}-1", 0)
    assert _ids(consul_addr, unique) == {f"{unique}-1"}
    assert main(["deregister", f"{unique}-1", "-http-addr", consul_addr]) == 0
