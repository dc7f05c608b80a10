"""Child processes for the tests: the consul-agents command, fake agents and sidecars, always reaped.

The child side is here too: a child script prints ``PORT <n>`` once it listens (:func:`serve_until_signalled`)
and the test reads it (:func:`read_port`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLI",
    "TESTS",
    "A2AAgent",
    "FakeAgent",
    "SidecarProcess",
    "cli_env",
    "read_port",
    "reap",
    "serve_until_signalled",
    "write_sidecar_file",
]

TESTS = Path(__file__).parent

#: The consul-agents command, run by this interpreter.
CLI = [sys.executable, "-m", "consul_agents.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without CONSUL_HTTP_* variables (so a child uses only what the test
    passes), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}, **extra}


async def serve_until_signalled(port: int) -> None:
    """In a child script: report ``PORT <port>`` to the test, then return on SIGINT or SIGTERM."""
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def read_port(proc: subprocess.Popen[str], timeout: float = 15.0) -> int:
    """Wait for the child's ``PORT <n>`` line (it prints it once it listens)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PORT "):
            return int(line.split()[1])
        if not line and proc.poll() is not None:
            raise RuntimeError(f"child exited with {proc.returncode} before listening")
    raise RuntimeError("child did not report its port in time")


def reap(proc: subprocess.Popen[Any]) -> None:
    """Kill the child if it still runs, wait for it and close its stdout pipe."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class FakeAgent:
    """``tests/fake_agent.py`` in a child process; ``set(mode=..., load=...)`` changes its health answer."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "fake_agent.py")], stdout=subprocess.PIPE, text=True
        )
        try:
            self.port = read_port(self.proc)
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, **query: Any) -> None:
        url = f"{self.endpoint}/control?" + "&".join(f"{k}={v}" for k, v in query.items())
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as response:
            json.loads(response.read())

    def close(self) -> None:
        reap(self.proc)


class A2AAgent:
    """``tests/a2a_agent.py`` (a real a2a-sdk agent) in a child process, serving a card with ``skills``."""

    def __init__(self, name: str, *skills: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "a2a_agent.py"), name, *skills],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        try:
            self.port = read_port(self.proc)
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def card(self) -> dict[str, Any]:
        """The card the agent serves now, as JSON."""
        url = f"{self.endpoint}/.well-known/agent-card.json"
        with urllib.request.urlopen(url, timeout=5) as response:
            card: dict[str, Any] = json.loads(response.read())
        return card

    def control(self, **query: str) -> dict[str, Any]:
        """Change the agent (see tests/a2a_agent.py); returns its state, card_requests included."""
        url = f"{self.endpoint}/control?" + "&".join(f"{k}={v}" for k, v in query.items())
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as response:
            state: dict[str, Any] = json.loads(response.read())
        return state

    def close(self) -> None:
        reap(self.proc)


@contextmanager
def two_a2a_agents() -> Iterator[tuple[A2AAgent, A2AAgent]]:
    """Two real A2A agents: alpha (skills echo, hello_world) and beta (summarize); both closed after."""
    alpha = A2AAgent("alpha", "echo", "hello_world")
    try:
        beta = A2AAgent("beta", "summarize")
    except BaseException:
        alpha.close()
        raise
    try:
        yield alpha, beta
    finally:
        alpha.close()
        beta.close()


def write_sidecar_file(path: Path, agents: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"agents": agents}))
    return path


class SidecarProcess:
    """``consul-agents sidecar FILE`` in a child process (stderr goes to a log file the test can read)."""

    def __init__(self, config: Path, consul_addr: str, log: Path, *extra: str) -> None:
        self.log = log
        self._log_handle = log.open("w")
        self.proc = subprocess.Popen(
            [*CLI, "sidecar", str(config), "-http-addr", consul_addr, *extra],
            stdout=subprocess.DEVNULL,
            stderr=self._log_handle,
            env=cli_env(),
        )

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        reap(self.proc)
        self._log_handle.close()
