"""The `render`, `sidecar` (bad input) and `dns` commands as a user runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from processes import CLI
from support import consul_get

from consul_agents import _wire as wire
from consul_agents.cli import main
from consul_agents.dev import find_consul_binary

CONFIG_DIR = Path(__file__).parents[2] / "config" / "agents"
EXAMPLES = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("fmt", ["json", "hcl"])
@pytest.mark.parametrize("check", ["http", "ttl"])
def test_rendered_files_pass_consul_validate(
    tmp_path: Path, fmt: str, check: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every example file rendered as JSON or HCL is a configuration Consul itself accepts."""
    (tmp_path / "base.hcl").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    for path in EXAMPLES:
        assert main(["render", str(path), "--format", fmt, "--check", check]) == 0
        (tmp_path / f"{path.stem}.{fmt}").write_text(capsys.readouterr().out)
    result = subprocess.run(
        [str(find_consul_binary()), "validate", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_consul_validate_rejects_a_broken_render(tmp_path: Path) -> None:
    """The validation above can fail: Consul rejects an API-style key in a config file."""
    (tmp_path / "base.hcl").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    (tmp_path / "a.json").write_text(json.dumps({"services": [{"name": "x", "check": {"CheckID": "c"}}]}))
    result = subprocess.run(
        [str(find_consul_binary()), "validate", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def test_sidecar_bad_file_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    """A sidecar started on an invalid file exits 2 before touching Consul, naming the file and field."""
    path = tmp_path / "broken.yaml"
    path.write_text("agents:\n  - agent_type: planner\n    capabilities: [plan]\n    endpoint: nowhere\n")
    result = subprocess.run(
        [*CLI, "sidecar", str(path), "-http-addr", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f"{path}: agents[0].endpoint: endpoint 'nowhere' has no scheme" in result.stderr


def test_render_notes_metadata_for_kv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Metadata too large for Meta is pointed out on stderr with the KV key to store it under."""
    path = tmp_path / "big.yaml"
    path.write_text(
        "agents:\n  - {agent_id: big-1, agent_type: big, capabilities: [x], endpoint: 'http://h:1',\n"
        f"     metadata: {{blob: '{'x' * 600}'}}}}\n"
    )
    assert main(["render", str(path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["services"][0]["meta"]["agent-metadata"] == "kv"
    assert f"consul kv put {wire.metadata_key('big', 'big-1')}" in captured.err


def test_dns_names(capsys: pytest.CaptureFixture[str]) -> None:
    """`dns names` prints the service, RFC 2782 and query names; a bad label is exit 2."""
    assert main(["dns", "names", "planner", "plan"]) == 0
    assert capsys.readouterr().out.split() == [
        "plan.agent-planner.service.consul",
        "_agent-planner._plan.service.consul",
        "agent-planner.plan.query.consul",
    ]
    assert main(["dns", "names", "Bad_Type"]) == 2


def test_dns_setup_command(consul_addr: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`dns setup` creates the template once; running it again changes nothing."""
    assert main(["dns", "setup", "-http-addr", consul_addr, "--all-datacenters"]) == 0
    assert main(["dns", "setup", "-http-addr", consul_addr]) == 0
    out = capsys.readouterr().out
    assert "(local): prepared query template unchanged" in out
    queries, _ = consul_get(consul_addr, "/v1/query")
    assert [q["Name"] for q in queries] == ["agent-"]
