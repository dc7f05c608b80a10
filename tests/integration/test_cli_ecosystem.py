"""The command line as Consul users expect it: host:port addresses, and `dns setup` refusing bad input."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from processes import CLI, cli_env, reap
from support import consul_get


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=cli_env(**env)
    )


def host_port(addr: str) -> str:
    return addr.removeprefix("http://")


def test_http_addr_accepts_host_port_like_consuls_cli(consul_addr: str) -> None:
    """`-http-addr 127.0.0.1:8501` works as in Consul's CLI (http unless CONSUL_HTTP_SSL=true)."""
    answer = run_cli("types", "--json", "-http-addr", host_port(consul_addr))
    assert answer.returncode == 0, answer.stderr
    answer = run_cli("types", "--json", "--http-addr", host_port(consul_addr))
    assert answer.returncode == 0, answer.stderr


def test_http_addr_host_port_is_https_with_consul_http_ssl(consul_addr: str) -> None:
    """With CONSUL_HTTP_SSL=true a bare host:port means https, so a plain-HTTP Consul is unreachable (5)."""
    answer = run_cli("types", "-http-addr", host_port(consul_addr), CONSUL_HTTP_SSL="true")
    assert answer.returncode == 5
    assert "https://" + host_port(consul_addr) in answer.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--nearest-n", "-1"], ["nearest_n", "-1"]),
        (["--failover", "dc3,dc9"], ["'dc3'", "'dc9'", "known: dc1"]),
    ],
)
def test_dns_setup_refuses_invalid_input_with_exit_2_and_writes_nothing(
    consul_addr: str, flags: list[str], words: list[str]
) -> None:
    """A negative --nearest-n or an unknown --failover datacenter exits 2 naming it; no query is written."""
    before, _ = consul_get(consul_addr, "/v1/query")
    answer = run_cli("dns", "setup", *flags, "-http-addr", consul_addr)
    assert answer.returncode == 2, answer.stderr
    for word in words:
        assert word in answer.stderr
    assert "Traceback" not in answer.stderr
    after, _ = consul_get(consul_addr, "/v1/query")
    assert after == before


def test_demo_says_which_ports_it_uses_and_what_it_does_on_ctrl_c() -> None:
    """`make run`'s demo says a taken port was replaced, prints the real dig port and reports its shutdown."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = subprocess.Popen(
            [*CLI, "demo", "--seed", "1", "--http-port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=cli_env(),
        )
        try:
            assert demo.stdout is not None
            seen = []
            for line in demo.stdout:
                seen.append(line)
                if line.startswith("Running;"):
                    break
            else:
                pytest.fail("the demo ended before it was running: " + "".join(seen))
            os.killpg(demo.pid, signal.SIGINT)
            rest, stderr = demo.communicate(timeout=60)
        finally:
            reap(demo)
    started = "".join(seen)
    assert f"Port {port} (HTTP) is taken" in started
    dns_port = re.search(r"DNS 127\.0\.0\.1:(\d+)", started)
    assert dns_port is not None, started
    assert f"dig @127.0.0.1 -p {dns_port.group(1)} agent-planner.service.consul SRV" in started
    assert demo.returncode == 0, stderr
    assert "Stopping: deregistering 5 agents" in rest
    assert "Demo agents deregistered." in rest and "Consul dc1 stopped." in rest


def test_dev_run_says_a_taken_port_was_replaced_and_that_it_stopped() -> None:
    """`python -m consul_agents.dev run` says which port was taken and what it uses, and that it stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.Popen(
            [sys.executable, "-m", "consul_agents.dev", "run", "--http-port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=cli_env(),
        )
        try:
            assert run.stdout is not None
            seen = []
            for line in run.stdout:
                seen.append(line)
                if line.startswith("Ctrl-C"):
                    break
            else:
                pytest.fail("consul did not start: " + "".join(seen))
            os.killpg(run.pid, signal.SIGINT)
            rest, stderr = run.communicate(timeout=60)
        finally:
            reap(run)
    assert f"port {port} (HTTP) is taken" in "".join(seen)
    assert run.returncode == 0, stderr
    assert "consul dc1 stopped" in rest
