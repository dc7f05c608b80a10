"""The README's "A2A agents" example runs as written: its code blocks are the files in examples/a2a/, and
the agent, the sidecar file and the caller work together against real Consul."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from processes import SidecarProcess, cli_env, reap, write_sidecar_file

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples" / "a2a"


def readme_section_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## A2A agents\n", 1)[1].split("\n## ", 1)[0]
    return [block for _, block in re.findall(r"```(python|yaml)\n(.*?)```", section, flags=re.S)]


def test_readme_example_blocks_are_the_example_files() -> None:
    """Each file of examples/a2a/ appears verbatim as a code block of the README's A2A section."""
    blocks = readme_section_blocks()
    for name in ("echo_agent.py", "echo.yaml", "caller.py"):
        assert (EXAMPLES / name).read_text() in blocks, name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_example_agent_sidecar_and_caller_work_together(
    consul_addr: str, unique: str, tmp_path: Path
) -> None:
    """The echo agent registered by the sidecar from its card answers the caller's message."""
    port = free_port()
    agent = subprocess.Popen([sys.executable, str(EXAMPLES / "echo_agent.py"), str(port)], env=cli_env())
    sidecar = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/.well-known/agent-card.json", timeout=2
                ):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the example agent did not start"
                time.sleep(0.1)
        entry = yaml.safe_load((EXAMPLES / "echo.yaml").read_text())["agents"][0]
        entry.update(agent_id=f"{unique}-echo", agent_type=unique, endpoint=f"http://127.0.0.1:{port}")
        entry["health"] = {"interval": 0.5, "timeout": 0.4}
        config = write_sidecar_file(tmp_path / "echo.yaml", [entry])
        sidecar = SidecarProcess(config, consul_addr, tmp_path / "sidecar.log")
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(
                [sys.executable, str(EXAMPLES / "caller.py")],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=cli_env(CONSUL_HTTP_ADDR=consul_addr),
            )
            if done.returncode == 0:
                break
            assert time.monotonic() < deadline, done.stderr[-2000:]
            time.sleep(0.2)
        assert f"{unique}-echo Echo 1.0.0 http://127.0.0.1:{port}" in done.stdout
        assert "echo: hello" in done.stdout
    finally:
        if sidecar is not None:
            sidecar.signal(signal.SIGTERM)  # deregisters its agent
            sidecar.wait()
            sidecar.close()
        reap(agent)
