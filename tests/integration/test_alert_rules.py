"""The shipped Prometheus rules and Alertmanager example: promtool's unit tests, amtool's check, and a
real Prometheus that loads the rules, scrapes a real REST API over real Consul and fires
ConsulAgentsNoPassingAgent.

Debian's prometheus (promtool, prometheus) and prometheus-alertmanager (amtool) provide the binaries; `make
tools` installs them. Locally a missing binary skips its test with the reason; in CI (CI set) it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import test_utils
from processes import reap
from support import eventually, registration

from consul_agents import AgentRegistry, AgentStatus

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "consul-agents-rules.yml"


def tool(name: str, package: str) -> str:
    """The binary's path; skips the test where it is absent, except in CI, where it must be installed."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed in CI: `make tools` installs Debian's {package}")
        pytest.skip(f"{name} is not installed (Debian's {package}; `make tools` installs it as root)")
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=DEPLOY, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules` passes every unit test of the alerting and availability rules."""
    done = run(tool("promtool", "prometheus"), "test", "rules", "consul-agents-rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_and_example_config_pass_promtool_check() -> None:
    """`promtool check rules` and `check config` accept the rules and the example prometheus.yml."""
    promtool = tool("promtool", "prometheus")
    for command in (("check", "rules", "consul-agents-rules.yml"), ("check", "config", "prometheus.yml")):
        done = run(promtool, *command)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_names_are_the_documented_ones() -> None:
    """The rules file alerts under exactly the names docs/alerts.md documents, each with a runbook link
    to its section and a severity."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert set(alerts) == {
        "ConsulAgentsNoPassingAgent",
        "ConsulAgentsCriticalShareHigh",
        "ConsulAgentsUnmetSelections",
        "ConsulAgentsDeniedOrUnavailable",
        "ConsulAgentsWatchLagHigh",
        "ConsulAgentsRegistrationTakenOver",
    }
    doc = (DEPLOY.parents[1] / "docs" / "alerts.md").read_text()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["runbook"] == f"docs/alerts.md#{name.lower()}"
        assert re.search(rf"^### {name}$", doc, re.MULTILINE), f"docs/alerts.md has no section for {name}"


def test_alertmanager_example_passes_amtool() -> None:
    """`amtool check-config` accepts the Alertmanager example."""
    done = run(tool("amtool", "prometheus-alertmanager"), "check-config", "alertmanager.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fast_copy(tmp: Path) -> Path:
    """The rules with every group evaluated each second and every `for:` one second: the same
    expressions, on a test's time scale."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


def _start_prometheus(binary: str, port: int, config: dict[str, Any], tmp: Path) -> subprocess.Popen[Any]:
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp / "prometheus.log").open("w") as log:
        return subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _alerts(port: int, proc: subprocess.Popen[Any]) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=2) as answer:
            alerts: list[dict[str, Any]] = json.loads(answer.read())["data"]["alerts"]
    except OSError:
        assert proc.poll() is None, "prometheus exited"
        return []
    return alerts


async def test_prometheus_fires_no_passing_agent_when_the_only_agent_goes_critical(
    api: test_utils.TestClient[Any, Any], consul_addr: str, unique: str, tmp_path: Path
) -> None:
    """A real Prometheus scraping the REST API's /metrics over real Consul keeps ConsulAgentsNoPassingAgent
    quiet while the type's only agent passes, and fires it for that type once the agent turns critical."""
    prometheus = tool("prometheus", "prometheus")
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(_fast_copy(tmp_path))],
        "scrape_configs": [
            {
                "job_name": "consul-agents",
                "static_configs": [{"targets": [f"{api.host}:{api.port}"]}],
            }
        ],
    }
    proc = _start_prometheus(prometheus, port, config, tmp_path)
    try:
        async with AgentRegistry(consul_addr) as registry:
            agent_id = await registry.register_agent(registration(unique, ttl=60))

            def ours(state: str) -> list[dict[str, Any]]:
                return [
                    alert
                    for alert in _alerts(port, proc)
                    if alert["labels"].get("agent_type") == unique
                    and alert["state"] == state
                    and alert["labels"]["alertname"] == "ConsulAgentsNoPassingAgent"
                ]

            def query(expr: str) -> list[dict[str, Any]]:
                url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.request.quote(expr)}"
                try:
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
                except OSError:
                    assert proc.poll() is None, "prometheus exited"
                    return []
                return result

            async def recorded_passing() -> bool:
                # the recording rules ran on a scrape that saw the agent passing
                series = "datacenter_agent_type:consul_agents_agents_passing:sum"
                found = query(f'{series}{{agent_type="{unique}"}}')
                return [sample["value"][1] for sample in found] == ["1"]

            await eventually(recorded_passing, timeout=60, what="prometheus records the passing agent")
            assert not ours("pending") and not ours("firing")

            await registry.heartbeat(agent_id, status=AgentStatus.CRITICAL)

            async def firing() -> bool:
                return bool(ours("firing"))

            await eventually(firing, timeout=60, what=f"ConsulAgentsNoPassingAgent fires for {unique}")
            (alert,) = ours("firing")
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["datacenter"] == "dc1"
            await registry.deregister_agent(agent_id)
    finally:
        reap(proc)
