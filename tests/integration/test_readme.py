"""The README, followed literally: every code block runs (or is checked) against real Consul.

Each fenced block is found by its language and first line. Python blocks run as scripts; bash blocks run
line by line in bash, with ``.venv/bin`` on PATH as the README's activate step puts it; YAML blocks are
loaded by what reads them. A line that runs until Ctrl-C is started, left running until it is ready, then
sent SIGINT and must exit cleanly. What cannot run here (Docker, pip into this environment, ACL set-up
with a management token) is listed in EXEMPT with the test that covers it instead; a new block or line with
neither a runner nor an exemption fails :func:`test_every_block_and_line_is_covered`.

The only changes made to a block before it runs: Consul's default address and ports (8500, 8600) become
the test Consul's, port 8080 a free port, and /etc/consul.d a temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import CLI, TESTS, cli_env, reap
from support import consul_get

from consul_agents.dev import ConsulDevServer
from consul_agents.sidecar.config import load_config

ROOT = TESTS.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    language: str
    line: int
    text: str

    @property
    def first(self) -> str:
        return self.text.splitlines()[0].strip()


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, flags=re.MULTILINE | re.DOTALL):
        body = textwrap.dedent(match.group(3))
        blocks.append(Block(match.group(2), text[: match.start()].count("\n") + 1, body))
    return blocks


def commands(block: Block) -> list[str]:
    """The shell commands of a bash block: comments and blank lines dropped, continuations joined."""
    joined = block.text.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


#: Blocks (by first line) and bash lines (by their start) that do not run here, and what covers them.
EXEMPT = {
    "make run": "the make targets: `make test` is this suite; `make run` is `consul-agents demo`, run by "
    "test_cli_core.py and test_cli_ecosystem.py",
    "make test": "see make run",
    "ConsulAgentsError": "the exception tree, not code",
    "consul_agents/": "the source layout, not code",
    'service "agent-planner"': "ACL rules, checked by tests/unit/test_acl_rules.py",
    "pip install": "installs into this environment; `make venv` installs the plugins (editable) and the "
    "logfire extra, and their tests import them",
    "cd docker": "needs a Docker engine; tests/unit/test_docker.py checks every file the compose file names",
    'echo "CONSUL_BOOTSTRAP_TOKEN': "see cd docker",
    "docker compose up": "see cd docker",
    "consul-agents acl setup": "needs Consul with ACLs and a management token: test_acl.py runs this command",
    "consul-agents bench core": "a benchmark of minutes; `make bench` runs it",
    '"""An A2A agent written with a2a-sdk': "the A2A example, examples/a2a/echo_agent.py: "
    "test_a2a_example.py checks the block is that file and runs agent, sidecar and caller together",
    '"""Select an agent with the skill': "the A2A example's caller, examples/a2a/caller.py: see the agent",
    "python examples/a2a/": "the A2A example's processes: see the agent",
    "consul-agents serve --card-keys": "needs a JWK Set of the keys that signed cards: "
    "test_a2a_signing.py::test_serve_verifies_with_a_jwks_file serves with one and both settings",
}

#: Lines that run until Ctrl-C: what they print (stdout or stderr) once they are up.
LONG_RUNNING = {
    "consul-agents dev": "Running; Ctrl-C",
    "consul-agents demo": "Running;",
    "consul-agents sidecar": "",
    "consul-agents watch": "",
    "consul-agents serve": "",
}


def exemption(text: str) -> str | None:
    return next((why for start, why in EXEMPT.items() if text.startswith(start)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def consul() -> Any:
    """A Consul of this module's own, whose DNS port the dig example can be pointed at."""
    with ConsulDevServer(datacenter="dc1") as server:
        server.wait_settled()
        yield server


@pytest.fixture(scope="module")
def api_port() -> int:
    return free_port()


def adapt(text: str, consul: ConsulDevServer, api_port: int, tmp: Path) -> str:
    """The block as the reader would run it against this test's Consul and a free API port."""
    return (
        text.replace("http://127.0.0.1:8500", consul.http_addr)
        .replace("-p 8600", f"-p {consul.dns_port}")
        .replace("8080", str(api_port))
        .replace("/etc/consul.d", str(tmp))
    )


def environment(consul: ConsulDevServer, **extra: str) -> dict[str, str]:
    env = cli_env(CONSUL_HTTP_ADDR=consul.http_addr.removeprefix("http://"), **extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return {k: v for k, v in env.items() if not k.startswith(("LOGFIRE_", "OTEL_"))}


def run_until_ready(command: str, ready: str, env: dict[str, str], cwd: Path) -> None:
    """Start a command that runs until Ctrl-C, wait until it prints ``ready`` (or 3 s alive), Ctrl-C it."""
    log = cwd / f"long-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            alive_since = time.monotonic()
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"{command!r} exited early:\n{log.read_text()}"
                if ready and ready in log.read_text():
                    break
                if not ready and time.monotonic() - alive_since > 3:
                    break
                time.sleep(0.1)  # polling a child's output file; there is nothing to wait on
            else:
                pytest.fail(f"{command!r} not ready within 60 s:\n{log.read_text()}")
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            reap(proc)
    output = log.read_text()
    assert code in (0, 130), f"{command!r} exited {code} on Ctrl-C:\n{output}"
    assert "Traceback" not in output, output


def python_blocks() -> list[Any]:
    """The Python blocks; the one starting a 3-server cluster is slow (`make test-slow`)."""
    return [
        pytest.param(b, id=f"line{b.line}", marks=[pytest.mark.slow] if "ConsulCluster" in b.text else [])
        for b in readme_blocks()
        if b.language == "python" and not exemption(b.first)
    ]


def block_id(block: Block) -> str:
    return f"line{block.line}"


def test_every_block_and_line_is_covered() -> None:
    """Each README block is Python, YAML, bash (each line run or exempted with a reason) or exempted."""
    for block in readme_blocks():
        if block.language in ("python", "yaml"):
            continue
        if block.language == "bash":
            for line in commands(block):
                runnable = line.split()[0] in {"consul-agents", "dig", "curl", "export"}
                assert runnable or exemption(line), f"README line {block.line}: no runner for {line!r}"
            continue
        assert exemption(block.first), (
            f"README line {block.line}: {block.language or 'plain'} block not covered"
        )


@pytest.mark.parametrize("block", python_blocks())
def test_python_block_runs_as_written(
    block: Block, consul: ConsulDevServer, api_port: int, tmp_path: Path
) -> None:
    """A README Python block, saved as a script and run, exits 0 (a SyntaxError or a missing name fails)."""
    script = tmp_path / "example.py"
    script.write_text(adapt(block.text, consul, api_port, tmp_path))
    env = environment(consul)
    if "web.run_app" in block.text:
        run_until_ready(f"{sys.executable} {script}", "", env, tmp_path)
        return
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"README line {block.line}:\n{done.stderr[-3000:]}"


def test_yaml_blocks_are_read_by_what_reads_them(tmp_path: Path) -> None:
    """The sidecar example loads as a sidecar file; the Prometheus examples parse and pass promtool."""
    blocks = [b for b in readme_blocks() if b.language == "yaml"]
    assert blocks
    promtool = shutil.which("promtool")
    for block in blocks:
        document = yaml.safe_load(block.text)
        if "agents" in document:
            path = tmp_path / "sidecar.yaml"
            path.write_text(block.text)
            assert load_config(path).agents
        elif "http_sd_configs" in block.text and promtool is not None:
            path = tmp_path / "prometheus.yml"
            path.write_text(
                block.text.replace("credentials_file: /etc/prometheus/discoverer.token", "credentials: x")
            )
            checked = subprocess.run(
                [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
        else:
            # consul_sd: Debian's Prometheus cannot load it; test_prometheus_sd.py runs its relabelling.
            assert document["scrape_configs"][0]["relabel_configs"]


def bash_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.language == "bash" and not exemption(b.first)]


@pytest.mark.parametrize("block", bash_blocks(), ids=block_id)
def test_bash_block_runs_as_written(
    block: Block, consul: ConsulDevServer, api_port: int, tmp_path: Path
) -> None:
    """Each command of a README bash block exits 0, or, run until Ctrl-C, is ready and stops cleanly."""
    if any(line.startswith("dig ") for line in commands(block)) and shutil.which("dig") is None:
        pytest.skip("dig is not installed (`make tools` installs Debian's bind9-dnsutils)")
    env = environment(consul, TOKEN="")
    server = None
    if any(line.startswith("curl") for line in commands(block)):
        server = subprocess.Popen(
            [*CLI, "serve", "--listen", f"127.0.0.1:{api_port}", "-http-addr", consul.http_addr],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_for_port(api_port)
    try:
        for line in commands(block):
            if exemption(line):
                continue
            command = adapt(line, consul, api_port, tmp_path)
            ready = next((r for start, r in LONG_RUNNING.items() if line.startswith(start)), None)
            if ready is not None:
                run_until_ready(command, ready, env, tmp_path)
                continue
            done = subprocess.run(
                ["bash", "-c", command],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env=env,
                cwd=ROOT,
            )
            assert done.returncode == 0, f"README line {block.line}: {line!r}:\n{done.stdout}\n{done.stderr}"
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    left, _ = consul_get(consul.http_addr, "/v1/agent/services")
    assert not [s for s in left if s.endswith(("-cli-1", "-rest-1"))], "an example left an agent behind"


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a port; there is nothing to wait on
    pytest.fail(f"nothing listens on {port} after {timeout}s")
