"""The example files' agent ids: the sidecar examples never take over the demo fleet's agents."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG = Path(__file__).parents[2] / "config"


def ids(path: Path) -> set[str]:
    return {entry["agent_id"] for entry in yaml.safe_load(path.read_text())["agents"]}


def test_sidecar_examples_and_the_demo_fleet_have_no_id_in_common() -> None:
    """Running `consul-agents sidecar config/agents/*.yaml` beside `make run` registers other agents, so the
    demo's heartbeats cannot mask a sidecar's verdict and a sidecar's exit cannot remove the demo's agents."""
    demo = ids(CONFIG / "demo-fleet.yaml")
    examples = sorted((CONFIG / "agents").glob("*.yaml"))
    assert examples and demo
    for example in examples:
        assert not ids(example) & demo, example.name
