"""The pure parts of consul_agents.dev: binary lookup precedence, config generation, argv, CLI plumbing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consul_agents import dev
from consul_agents.dev import ConsulBinaryError, ConsulDevServer, ConsulDevServerError, find_consul_binary


def _fake_binary(folder: Path, name: str = "consul") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CONSUL_BIN, an empty PATH folder, and a private cache folder; returns the cache folder."""
    monkeypatch.delenv("CONSUL_BIN", raising=False)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cache = tmp_path / "cache"
    monkeypatch.setenv("CONSUL_AGENTS_CACHE", str(cache))
    return cache


@pytest.fixture
def make_server() -> Iterator[Any]:
    created: list[ConsulDevServer] = []

    def make(**kwargs: Any) -> ConsulDevServer:
        server = ConsulDevServer(**kwargs)
        created.append(server)
        return server

    yield make
    for server in created:
        server.close()


def test_consul_bin_wins_over_path(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CONSUL_BIN is used even when another consul is on PATH."""
    on_path = _fake_binary(tmp_path / "onpath")
    explicit = _fake_binary(tmp_path / "explicit", "my-consul")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.setenv("CONSUL_BIN", str(explicit))
    assert find_consul_binary(install=False) == explicit


def test_consul_bin_naming_nothing_is_an_error(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CONSUL_BIN that names no executable raises ConsulBinaryError instead of falling back."""
    _fake_binary(tmp_path / "onpath")
    monkeypatch.setenv("PATH", str(tmp_path / "onpath"))
    monkeypatch.setenv("CONSUL_BIN", str(tmp_path / "missing" / "consul"))
    with pytest.raises(ConsulBinaryError, match="CONSUL_BIN"):
        find_consul_binary(install=False)


def test_consul_bin_not_executable_is_an_error(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CONSUL_BIN file without the executable bit raises ConsulBinaryError."""
    plain = tmp_path / "consul"
    plain.write_text("not a program")
    plain.chmod(0o644)
    monkeypatch.setenv("CONSUL_BIN", str(plain))
    with pytest.raises(ConsulBinaryError):
        find_consul_binary(install=False)


def test_path_wins_over_cache(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CONSUL_BIN, consul on PATH is preferred to the cached binary."""
    _fake_binary(clean_env / "bin")
    on_path = _fake_binary(tmp_path / "onpath")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_consul_binary(install=False) == on_path


def test_cache_used_last(clean_env: Path) -> None:
    """Without CONSUL_BIN or PATH, the binary under $CONSUL_AGENTS_CACHE/bin is found."""
    cached = _fake_binary(clean_env / "bin")
    assert dev.default_binary_path() == cached
    assert find_consul_binary(install=False) == cached


def test_default_cache_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without CONSUL_AGENTS_CACHE the binary path is ~/.cache/consul-agents/bin/consul."""
    monkeypatch.delenv("CONSUL_AGENTS_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dev.default_binary_path() == tmp_path / ".cache" / "consul-agents" / "bin" / "consul"


def test_nothing_found_without_install_is_an_error(clean_env: Path) -> None:
    """With install=False and no binary anywhere, ConsulBinaryError says how to install one."""
    with pytest.raises(ConsulBinaryError, match=r"consul_agents\.dev install"):
        find_consul_binary(install=False)


def test_nothing_found_installs_into_cache(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With install=True and no binary anywhere, the installer is called for the cache folder."""
    calls: list[Path | None] = []

    def fake_install(dest_dir: Path | None = None) -> Path:
        calls.append(dest_dir)
        return _fake_binary(clean_env / "bin")

    monkeypatch.setattr(dev, "install_consul", fake_install)
    assert find_consul_binary() == clean_env / "bin" / "consul"
    assert calls == [clean_env / "bin"]


def test_install_keeps_an_existing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """install_consul returns an executable already in place without running apt-get."""
    existing = _fake_binary(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert dev.install_consul(tmp_path) == existing


def test_install_without_apt_names_the_missing_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """install_consul on a machine without apt-get raises ConsulBinaryError naming apt-get."""
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConsulBinaryError, match="apt-get"):
        dev.install_consul(tmp_path / "dest")


def test_cli_install_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m consul_agents.dev install --dest DIR` prints the binary's path."""
    existing = _fake_binary(tmp_path)
    assert dev.main(["install", "--dest", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(existing)


def test_cli_find_reports_errors_on_stderr(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m consul_agents.dev find` with no binary exits 1 with the error on stderr."""
    assert dev.main(["find"]) == 1
    assert "no consul binary" in capsys.readouterr().err


def test_dev_config_has_our_ports_and_no_grpc(make_server: Any) -> None:
    """A dev-mode config names every port we picked, disables gRPC and keeps state in memory."""
    server = make_server(datacenter="dc7", node_name="n1")
    config = server.build_config()
    ports = config["ports"]
    assert ports == {
        "http": server.http_port,
        "https": -1,
        "dns": server.dns_port,
        "serf_lan": server.serf_lan_port,
        "serf_wan": server.serf_wan_port,
        "server": server.server_port,
        "grpc": -1,
    }
    assert len({v for v in ports.values() if v != -1}) == 5
    assert config["datacenter"] == "dc7"
    assert config["node_name"] == "n1"
    assert config["bind_addr"] == config["client_addr"] == "127.0.0.1"
    assert "data_dir" not in config
    assert "server" not in config
    assert server.data_dir is None
    assert server.http_addr == f"http://127.0.0.1:{server.http_port}"


def test_server_config_keeps_a_data_dir(make_server: Any, tmp_path: Path) -> None:
    """A non-dev config is a bootstrapping server with the given data dir and retry_join."""
    server = make_server(dev_mode=False, data_dir=tmp_path / "d", bootstrap_expect=3, retry_join=["10.0.0.1"])
    config = server.build_config()
    assert config["server"] is True
    assert config["bootstrap_expect"] == 3
    assert config["data_dir"] == str(tmp_path / "d")
    assert config["retry_join"] == ["10.0.0.1"]
    assert server.data_dir == tmp_path / "d"


def test_extra_config_is_deep_merged(make_server: Any) -> None:
    """extra_config overrides single keys inside nested sections and keeps the rest of each section."""
    acl = {"enabled": True, "default_policy": "deny", "tokens": {"master": "root-token"}}
    server = make_server(extra_config={"ports": {"https": 1234}, "acl": acl, "log_level": "DEBUG"})
    config = server.build_config()
    assert config["ports"]["https"] == 1234
    assert config["ports"]["http"] == server.http_port
    assert config["acl"] == acl
    assert config["log_level"] == "DEBUG"


def test_master_token_from_extra_config_is_used(make_server: Any) -> None:
    """The ACL master token in extra_config becomes the token the server uses for its own checks."""
    server = make_server(extra_config={"acl": {"tokens": {"master": "root-token"}}})
    assert server._token == "root-token"
    assert (
        make_server(token="explicit", extra_config={"acl": {"tokens": {"master": "x"}}})._token == "explicit"
    )


def test_https_opens_a_port(make_server: Any) -> None:
    """https=True adds an HTTPS port to the config and an https_addr."""
    server = make_server(https=True)
    assert server.build_config()["ports"]["https"] == server.https_port > 0
    assert server.https_addr == f"https://127.0.0.1:{server.https_port}"
    assert make_server().https_addr is None


def test_command_uses_dev_flag_only_in_dev_mode(make_server: Any) -> None:
    """The argv passes -dev for dev mode only, and always the generated config file."""
    binary = Path("/opt/consul")
    dev_argv = make_server().command(binary)
    assert dev_argv[:3] == ["/opt/consul", "agent", "-dev"]
    server_argv = make_server(dev_mode=False).command(binary)
    assert "-dev" not in server_argv
    assert server_argv[-1].startswith("-config-file=")


def test_ports_differ_between_servers(make_server: Any) -> None:
    """Two servers created in one process never share a port."""
    a, b = make_server(), make_server()
    ports_a = {a.http_port, a.dns_port, a.serf_lan_port, a.serf_wan_port, a.server_port}
    ports_b = {b.http_port, b.dns_port, b.serf_lan_port, b.serf_wan_port, b.server_port}
    assert not ports_a & ports_b


def test_explicit_ports_are_kept(make_server: Any) -> None:
    """http_port and dns_port given to the constructor are used as they are."""
    server = make_server(http_port=28500, dns_port=28600)
    assert (server.http_port, server.dns_port) == (28500, 28600)


def test_stopped_server_state(make_server: Any) -> None:
    """A server that was never started has no pid, is not running, and refuses wait_settled and wait."""
    server = make_server()
    assert server.pid is None
    assert not server.running
    server.stop()  # stopping a stopped server is a no-op
    with pytest.raises(ConsulDevServerError):
        server.wait_settled()
    with pytest.raises(ConsulDevServerError):
        server.wait()


def test_close_removes_the_temporary_folder(make_server: Any) -> None:
    """close() removes the folder holding the generated config and the default log."""
    server = make_server()
    folder = server.config_path.parent
    assert folder.is_dir()
    server.close()
    assert not os.path.exists(folder)
