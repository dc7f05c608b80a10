"""What the faces' input bounds cost: bounded JSON bodies, the bounded YAML loader, terminal escaping.

Run with ``python -m benchmarks.faces [--iterations N]`` (no Consul needed: these are the pure steps each
request or command adds). Each row times the bounded step beside the unbounded one it replaced,
alternately in the same run, and reports/bench-faces.json holds the figures:

* ``body_register``: a 300-byte POST /v1/agents body, ``loads_bounded`` vs ``json.loads``;
* ``body_100k``: a registration with 100 KB of metadata (what goes to KV), the same two;
* ``yaml_example``: config/agents/planner.yaml, ``load_yaml`` vs ``yaml.safe_load`` (PyYAML's pure-Python
  loader, as before);
* ``yaml_1000_agents``: a sidecar file of 1,000 agents (about 170 KB), the same two;
* ``table_1000_rows``: escaping the cells of a 1,000-agent table, ``printable`` vs ``str``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks._stats import benchmark_parser, compare, print_comparison, write_report
from consul_agents._bounded_json import loads_bounded
from consul_agents._yaml import load_yaml
from consul_agents.api._body import MAX_BODY_DEPTH
from consul_agents.cli._common import printable

REPORT = Path("reports/bench-faces.json")


def _registration(metadata_bytes: int) -> bytes:
    body = {
        "agent_type": "planner",
        "capabilities": ["plan", "summarize"],
        "endpoint": "http://10.0.0.5:9000/v1",
        "tags": {"tier": "gold", "zone": "eu-1"},
        "metadata": {"model": "m1", "notes": "x" * metadata_bytes, "limits": {"rpm": [1, 2, 3]}},
        "weight": 10,
    }
    return json.dumps(body).encode()


def _fleet_file(folder: Path, agents: int) -> Path:
    entries = [
        {
            "agent_id": f"planner-{i}",
            "agent_type": "planner",
            "capabilities": ["plan", "summarize"],
            "endpoint": f"http://10.0.{i // 250}.{i % 250}:9101",
            "tags": {"tier": "gold"},
            "ttl": 15,
            "health": {"path": "/health", "interval": 5, "timeout": 2, "load_field": "load"},
        }
        for i in range(agents)
    ]
    path = folder / f"fleet-{agents}.yaml"
    path.write_text(yaml.safe_dump({"agents": entries}))
    return path


def _safe_load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=yaml.SafeLoader)


async def run(iterations: int) -> dict[str, Any]:
    def timed(fn: Any) -> Any:
        async def call(_: int) -> None:
            fn()

        return call

    results: dict[str, Any] = {}
    for name, raw in (("body_register", _registration(60)), ("body_100k", _registration(100_000))):
        results[name] = await compare(
            timed(lambda raw=raw: loads_bounded(raw, MAX_BODY_DEPTH)),
            timed(lambda raw=raw: json.loads(raw)),
            iterations,
        )
    with tempfile.TemporaryDirectory() as folder:
        big = _fleet_file(Path(folder), 1000)
        for name, path, rounds in (
            ("yaml_example", Path("config/agents/planner.yaml"), iterations),
            ("yaml_1000_agents", big, max(5, iterations // 20)),
        ):
            results[name] = await compare(
                timed(lambda path=path: load_yaml(path)),
                timed(lambda path=path: _safe_load(path)),
                rounds,
                warmup=2,
            )
    cells = [
        [
            f"planner-{i}",
            "planner",
            "passing",
            "0.25",
            "10",
            "dc1",
            f"http://10.0.0.{i % 250}:9101",
            "plan,summarize",
        ]
        for i in range(1000)
    ]
    results["table_1000_rows"] = await compare(
        timed(lambda: [[printable(c) for c in row] for row in cells]),
        timed(lambda: [[str(c) for c in row] for row in cells]),
        max(20, iterations // 5),
    )
    return results


def main() -> None:
    args = benchmark_parser(__doc__ or "", REPORT, consul_addr=False).parse_args()
    results = asyncio.run(run(args.iterations))
    print_comparison(results, "bounded", "before")
    write_report(args.output, results, iterations=args.iterations)
    sys.exit(0)


if __name__ == "__main__":
    main()
