"""consul_agents.dev against real Consul processes: readiness, restart, stop, WAN join, bad binaries."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeConsul

from consul_agents.dev import ConsulBinaryError, ConsulDevServer, ConsulDevServerError, run_dev_server


def get_json(url: str, method: str = "GET", body: bytes | None = None) -> Any:
    request = urllib.request.Request(url, method=method, data=body)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_session_server_is_ready(consul_server: ConsulDevServer) -> None:
    """A started server has a leader and lists its own node in the catalog on its own HTTP port."""
    assert consul_server.running
    assert consul_server.pid is not None and pid_alive(consul_server.pid)
    assert get_json(consul_server.http_addr + "/v1/status/leader")
    nodes = get_json(consul_server.http_addr + "/v1/catalog/nodes")
    assert consul_server.node_name in [n["Node"] for n in nodes]
    config = get_json(consul_server.http_addr + "/v1/agent/self")["Config"]
    assert config["Datacenter"] == consul_server.datacenter


def test_consul_addr_is_the_session_server(consul_addr: str, consul_server: ConsulDevServer) -> None:
    """consul_addr is the HTTP address of the session's agent."""
    assert consul_addr == consul_server.http_addr


def test_unique_names_are_dns_safe_and_distinct(unique: str) -> None:
    """unique gives a short lowercase DNS label ('t' + 8 hex digits)."""
    assert len(unique) == 9
    assert unique[0] == "t"
    int(unique[1:], 16)
    assert unique == unique.lower()


def test_restart_keeps_ports_and_data(make_consul: MakeConsul) -> None:
    """restart() of a non-dev server comes back on the same ports, with a new pid and the same KV data."""
    server = make_consul(dev_mode=False)
    ports = (
        server.http_port,
        server.dns_port,
        server.serf_lan_port,
        server.serf_wan_port,
        server.server_port,
    )
    old_pid = server.pid
    assert get_json(server.http_addr + "/v1/kv/restart-probe", "PUT", b"kept") is True
    server.restart()
    assert (
        server.http_port,
        server.dns_port,
        server.serf_lan_port,
        server.serf_wan_port,
        server.server_port,
    ) == ports
    assert server.pid != old_pid
    entry = get_json(server.http_addr + "/v1/kv/restart-probe")
    assert base64.b64decode(entry[0]["Value"]) == b"kept"
    assert server.data_dir is not None and server.data_dir.is_dir()


def test_restart_after_kill(make_consul: MakeConsul) -> None:
    """After kill() (SIGKILL, no leave), start() brings the agent back to readiness."""
    server = make_consul()
    pid = server.pid
    assert pid is not None
    server.kill()
    assert not server.running and not pid_alive(pid)
    server.start()
    assert get_json(server.http_addr + "/v1/status/leader")


def test_stop_ends_the_process_and_frees_the_port(make_consul: MakeConsul) -> None:
    """stop() reaps the agent process and its HTTP port stops accepting connections."""
    server = make_consul()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert server.pid is None and not server.running
    assert not pid_alive(pid)
    assert port_refuses(server.http_port)


def test_context_manager_stops_and_cleans_up() -> None:
    """Leaving the with-block stops the agent and removes its temporary folder."""
    with ConsulDevServer() as server:
        pid = server.pid
        folder = server.config_path.parent
        assert pid is not None and pid_alive(pid)
    assert not pid_alive(pid)
    assert not folder.exists()


def test_wan_joined_datacenters_answer_through_dc1(make_consul: MakeConsul) -> None:
    """After join_wan, dc1 lists dc2 and answers ?dc=dc2 catalog queries with dc2's node."""
    dc1 = make_consul(datacenter="dc1")
    dc2 = make_consul(datacenter="dc2")
    dc1.join_wan(dc2)
    assert sorted(get_json(dc1.http_addr + "/v1/catalog/datacenters")) == ["dc1", "dc2"]
    nodes = get_json(dc1.http_addr + "/v1/catalog/nodes?dc=dc2")
    assert [n["Node"] for n in nodes] == [dc2.node_name]


def test_missing_binary_is_a_binary_error(tmp_path: Path) -> None:
    """start() with a consul_bin that does not exist raises ConsulBinaryError naming the path."""
    server = ConsulDevServer(consul_bin=tmp_path / "no-such-consul")
    try:
        with pytest.raises(ConsulBinaryError, match="no-such-consul"):
            server.start()
    finally:
        server.close()


def test_unrunnable_binary_is_a_binary_error(tmp_path: Path) -> None:
    """start() with an executable file that is no program raises ConsulBinaryError."""
    bogus = tmp_path / "consul"
    bogus.write_bytes(b"\x00\x01 not an executable format")
    bogus.chmod(0o755)
    server = ConsulDevServer(consul_bin=bogus)
    try:
        with pytest.raises(ConsulBinaryError, match="cannot run"):
            server.start()
    finally:
        server.close()


def test_agent_dying_at_start_reports_its_log(tmp_path: Path) -> None:
    """When the agent exits while starting, start() raises with the exit status and the log's tail."""
    dying = tmp_path / "consul"
    dying.write_text("#!/bin/sh\necho 'boom: bad config' >&2\nexit 3\n")
    dying.chmod(0o755)
    server = ConsulDevServer(consul_bin=dying)
    try:
        with pytest.raises(ConsulDevServerError, match=r"(?s)status 3.*boom: bad config"):
            server.start()
        assert not server.running
    finally:
        server.close()


def test_bad_extra_config_fails_fast_with_log(make_consul: MakeConsul) -> None:
    """An invalid config makes start() raise with Consul's own complaint, not time out."""
    with pytest.raises(ConsulDevServerError, match="exited"):
        make_consul(extra_config={"no_such_option_xyz": True})


def test_run_dev_server_moves_off_a_taken_port() -> None:
    """run_dev_server picks another HTTP port when the one asked for is taken, and starts."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server = run_dev_server(http_port=taken, dns_port=None, datacenter="dc5")
        try:
            assert server.http_port != taken
            assert server.datacenter == "dc5"
            assert get_json(server.http_addr + "/v1/status/leader")
        finally:
            server.close()


def test_wait_settled_returns_after_the_window(make_consul: MakeConsul) -> None:
    """wait_settled returns once the given time since readiness has passed, and at once afterwards."""
    server = make_consul()
    ready = server._ready_at
    server.wait_settled(1.0)
    assert ready is not None and time.monotonic() - ready >= 1.0
    start = time.monotonic()
    server.wait_settled(1.0)
    assert time.monotonic() - start < 0.1
