"""Run a real local Consul for development and tests.

Two jobs, both pure standard library so that they work before anything else is set up:

* :func:`find_consul_binary` finds a ``consul`` executable, and can install one. Debian 12 has no consul
  package, Debian 11 (bullseye) ships Consul 1.8.7 as a static binary, so the installer fetches that package
  with ``apt-get download`` through a private sources list (the system's apt configuration is never touched)
  and unpacks it with ``dpkg-deb -x`` into a cache folder.
* :class:`ConsulDevServer` runs one Consul agent as a child process on loopback ports it picks itself, from
  a JSON config file it writes, and returns from :meth:`ConsulDevServer.start` only once the agent has a
  leader and lists its own node in the catalog.

From the command line::

    python -m consul_agents.dev install            # print the path of the (installed) binary
    python -m consul_agents.dev run [--datacenter dc1] [--http-port 8500] [--dns-port 8600]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from consul_agents._apt_sources import DEFAULT_MIRROR, Mirror, debian_mirrors

__all__ = [
    "ConsulBinaryError",
    "ConsulDevServer",
    "ConsulDevServerError",
    "default_binary_path",
    "find_consul_binary",
    "install_consul",
    "main",
    "run_dev_server",
]

_DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_LOG_TAIL_BYTES = 4000
# Ports are drawn below Linux's ephemeral range (32768-60999), so that an outgoing connection made between
# picking a port and Consul binding it (or between a stop and a restart) cannot be holding it.
_PORT_RANGE = (20000, 32767)
_port_random = random.SystemRandom()
_ports_handed_out: set[int] = set()


class ConsulBinaryError(RuntimeError):
    """No usable ``consul`` executable: not found, not executable, or the install step failed."""


class ConsulDevServerError(RuntimeError):
    """A local Consul agent did not start, did not become ready in time, or a command against it failed."""


# --------------------------------------------------------------------------------------------------------
# Finding and installing the binary


def default_binary_path() -> Path:
    """Where :func:`install_consul` puts the binary: ``$CONSUL_AGENTS_CACHE/bin/consul``.

    ``CONSUL_AGENTS_CACHE`` defaults to ``~/.cache/consul-agents`` (the same rule as
    ``scripts/install-consul.sh``).
    """
    cache = os.environ.get("CONSUL_AGENTS_CACHE") or str(Path.home() / ".cache" / "consul-agents")
    return Path(cache) / "bin" / "consul"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_consul_binary(install: bool = True) -> Path:
    """Return the path of a ``consul`` executable.

    Looked for in this order: the ``CONSUL_BIN`` environment variable, ``consul`` on ``PATH``, then the
    cache path (:func:`default_binary_path`). A ``CONSUL_BIN`` that names no executable is an error rather
    than a reason to look elsewhere: whoever set it meant that binary. When nothing is found and ``install``
    is true, Consul 1.8.7 is installed into the cache path.

    Raises:
        ConsulBinaryError: ``CONSUL_BIN`` is wrong, or nothing was found (``install=False``), or the
            install failed.
    """
    explicit = os.environ.get("CONSUL_BIN")
    if explicit:
        path = Path(explicit).expanduser()
        if not _is_executable(path):
            raise ConsulBinaryError(f"CONSUL_BIN={explicit!r} is not an executable file")
        return path
    on_path = shutil.which("consul")
    if on_path:
        return Path(on_path)
    cached = default_binary_path()
    if _is_executable(cached):
        return cached
    if not install:
        raise ConsulBinaryError(
            f"no consul binary: CONSUL_BIN is unset, none on PATH, none at {cached} "
            "(run `python -m consul_agents.dev install`)"
        )
    return install_consul(cached.parent)


def _run_step(cmd: Sequence[str], cwd: Path, what: str) -> str:
    """Run one install step; its output (stderr, else stdout), or ConsulBinaryError naming the step."""
    try:
        result = subprocess.run(
            list(cmd), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise ConsulBinaryError(f"{what} could not run ({exc})") from exc
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-_LOG_TAIL_BYTES:]
        raise ConsulBinaryError(f"{what} failed with exit status {result.returncode}: {output}")
    return (result.stderr or result.stdout).strip()


def install_consul(dest_dir: Path | None = None, *, apt_etc: Path = Path("/etc/apt")) -> Path:
    """Install Debian bullseye's consul package's binary into ``dest_dir`` and return its path.

    Does nothing when ``dest_dir/consul`` is already executable. Needs ``apt-get``, ``dpkg-deb`` and the
    Debian archive keyring (any Debian or Ubuntu). It downloads from the Debian mirrors the system's apt
    sources under ``apt_etc`` name (so a local mirror or caching proxy works), trying each in turn, or from
    deb.debian.org when they name none; apt's own proxy settings apply. It writes its apt state into a
    temporary folder and never touches the system's apt configuration.

    Raises:
        ConsulBinaryError: naming each mirror tried, the step that failed there and why.
    """
    dest_dir = dest_dir if dest_dir is not None else default_binary_path().parent
    target = dest_dir / "consul"
    if _is_executable(target):
        return target
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ConsulBinaryError(
                f"installing consul needs {tool}, which is not on PATH; "
                "install Consul yourself and set CONSUL_BIN to its path"
            )
    if not _DEBIAN_KEYRING.is_file():
        raise ConsulBinaryError(
            f"installing consul needs the Debian archive keyring at {_DEBIAN_KEYRING} "
            "(package debian-archive-keyring); or install Consul yourself and set CONSUL_BIN"
        )
    mirrors = debian_mirrors(apt_etc) or [
        Mirror(DEFAULT_MIRROR, f"the default: no Debian mirror in {apt_etc}")
    ]
    failures = []
    for mirror in mirrors:
        try:
            return _install_from(mirror, target)
        except ConsulBinaryError as exc:
            failures.append(f"- {mirror.uri} (named in {mirror.source}): {exc}")
    raise ConsulBinaryError(
        "installing consul failed from every Debian mirror tried:\n"
        + "\n".join(failures)
        + "\nCheck that this machine reaches that mirror (apt's proxy settings apply), or install Consul "
        "yourself and set CONSUL_BIN to its path."
    )


def _install_from(mirror: Mirror, target: Path) -> Path:
    dest_dir = target.parent
    with tempfile.TemporaryDirectory(prefix="consul-install-") as tmp:
        work = Path(tmp)
        for sub in ("lists/partial", "archives/partial", "extract"):
            (work / sub).mkdir(parents=True)
        sources = work / "sources.list"
        sources.write_text(
            f"deb [signed-by={_DEBIAN_KEYRING}] {mirror.uri} bullseye main\n", encoding="utf-8"
        )
        opts = [
            f"-oDir::Etc::SourceList={sources}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={work / 'lists'}",
            f"-oDir::Cache::Archives={work / 'archives'}",
            f"-oDir::Cache={work}",
            "-oDebug::NoLocking=1",
            "-qq",
        ]
        if os.geteuid() == 0:
            # apt drops to the _apt user to download, which cannot write into a root-owned temp folder.
            opts.append("-oAPT::Sandbox::User=root")
        what = f"apt-get update (bullseye lists from {mirror.uri})"
        said = _run_step(["apt-get", *opts, "update"], work, what)
        if not any((work / "lists").glob("*_Packages*")):
            # apt-get update exits 0 when a source cannot be fetched; only its warnings say why.
            reason = said[-_LOG_TAIL_BYTES:] or "no package lists were fetched"
            raise ConsulBinaryError(f"{what} fetched nothing: {reason}")
        _run_step(["apt-get", *opts, "download", "consul"], work, "apt-get download consul")
        debs = sorted(work.glob("consul_*.deb"))
        if not debs:
            raise ConsulBinaryError("apt-get download produced no consul_*.deb")
        _run_step(["dpkg-deb", "-x", str(debs[-1]), str(work / "extract")], work, "dpkg-deb -x")
        unpacked = work / "extract" / "usr" / "bin" / "consul"
        if not unpacked.is_file():
            raise ConsulBinaryError(f"{debs[-1].name} holds no usr/bin/consul")
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            partial = dest_dir / f".consul.{os.getpid()}.partial"
            shutil.copyfile(unpacked, partial)
            partial.chmod(0o755)
            partial.replace(target)  # atomic: a concurrent reader sees no binary or a whole one
        except OSError as exc:
            raise ConsulBinaryError(f"cannot write {target} ({exc})") from exc
    return target


# --------------------------------------------------------------------------------------------------------
# Ports


def _port_free(host: str, port: int, udp: bool) -> bool:
    kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp else [socket.SOCK_STREAM]
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                # Go's listeners set SO_REUSEADDR: a port held by TIME_WAIT connections only is free to Go.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def _pick_port(host: str, udp: bool = True) -> int:
    """A port free on ``host`` for TCP (and UDP), never handed out before by this process."""
    for _ in range(200):
        port = _port_random.randint(*_PORT_RANGE)
        if port not in _ports_handed_out and _port_free(host, port, udp):
            _ports_handed_out.add(port)
            return port
    raise ConsulDevServerError(f"found no free port on {host} in {_PORT_RANGE}")


def _deep_merge(base: dict[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------------------------------------
# The server


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class ConsulDevServer:
    """One local Consul agent in a child process, on loopback ports chosen when the object is created.

    ``dev_mode=True`` runs ``consul agent -dev`` (in-memory state, gone at stop). ``dev_mode=False`` runs a
    real server (``server: true``, ``bootstrap_expect``) whose ``data_dir`` stays on disk, so that
    :meth:`restart` brings back the same node with the same catalog. Ports and data dir survive
    :meth:`restart`. ``extra_config`` is deep-merged into the generated JSON config last (ACLs, TLS, ...).
    ``token`` is the ACL token this class uses for its own readiness checks and ``consul join``; it defaults
    to ``acl.tokens.master`` from ``extra_config`` when that is set. ``https=True`` also opens an HTTPS
    port (give the certificates in ``extra_config``); readiness is always checked over plain HTTP.

    The API is synchronous; from async code call it through ``asyncio.to_thread``. Use it as a context
    manager, or call :meth:`close` (which also removes the temporary folder), so no agent outlives you.
    """

    def __init__(
        self,
        *,
        datacenter: str = "dc1",
        node_name: str | None = None,
        dev_mode: bool = True,
        data_dir: Path | None = None,
        extra_config: Mapping[str, object] | None = None,
        bootstrap_expect: int = 1,
        retry_join: Sequence[str] | None = None,
        bind: str = "127.0.0.1",
        log_file: Path | None = None,
        consul_bin: Path | None = None,
        http_port: int | None = None,
        dns_port: int | None = None,
        https: bool = False,
        token: str | None = None,
    ) -> None:
        self._datacenter = datacenter
        self._node_name = node_name or f"consul-agents-{datacenter}-{uuid.uuid4().hex[:6]}"
        self._dev_mode = dev_mode
        self._extra_config: dict[str, object] = dict(extra_config or {})
        self._bootstrap_expect = bootstrap_expect
        self._retry_join = list(retry_join or [])
        self._bind = bind
        self._consul_bin = consul_bin
        self._token = token if token is not None else _master_token(self._extra_config)

        self._tmp = Path(tempfile.mkdtemp(prefix=f"consul-{datacenter}-"))
        self._tmp_finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        self._data_dir = data_dir if data_dir is not None else self._tmp / "data"
        self._log_path = log_file if log_file is not None else self._tmp / "consul.log"
        self._config_path = self._tmp / "config.json"

        self._http_port = http_port if http_port is not None else _pick_port(bind, udp=False)
        self._dns_port = dns_port if dns_port is not None else _pick_port(bind)
        self._serf_lan_port = _pick_port(bind)
        self._serf_wan_port = _pick_port(bind)
        self._server_port = _pick_port(bind, udp=False)
        self._https_port = _pick_port(bind, udp=False) if https else -1

        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_finalizer: weakref.finalize[[subprocess.Popen[bytes]], ConsulDevServer] | None = None
        self._log_handle: IO[bytes] | None = None
        self._ready_at: float | None = None

    # ---- addresses and state

    @property
    def datacenter(self) -> str:
        return self._datacenter

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def bind(self) -> str:
        return self._bind

    @property
    def http_addr(self) -> str:
        """``http://HOST:PORT`` of the HTTP API."""
        return f"http://{self._bind}:{self._http_port}"

    @property
    def https_addr(self) -> str | None:
        """``https://HOST:PORT`` when created with ``https=True``, else None."""
        return f"https://{self._bind}:{self._https_port}" if self._https_port > 0 else None

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def https_port(self) -> int:
        """The HTTPS port, or -1 when HTTPS is off."""
        return self._https_port

    @property
    def dns_port(self) -> int:
        return self._dns_port

    @property
    def serf_lan_port(self) -> int:
        return self._serf_lan_port

    @property
    def serf_wan_port(self) -> int:
        return self._serf_wan_port

    @property
    def server_port(self) -> int:
        return self._server_port

    @property
    def data_dir(self) -> Path | None:
        """The on-disk state folder, or None in dev mode (state in memory)."""
        return None if self._dev_mode else self._data_dir

    @property
    def pid(self) -> int | None:
        """The agent's process id while it runs, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def retry_join(self) -> list[str]:
        """The ``host:serf_lan_port`` addresses this agent joins at start (settable until then)."""
        return list(self._retry_join)

    @retry_join.setter
    def retry_join(self, addresses: Sequence[str]) -> None:
        # Settable after creation because servers started together must each know the others' ports,
        # which are only chosen when each object is created.
        self._retry_join = list(addresses)

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def config_path(self) -> Path:
        return self._config_path

    # ---- config

    def build_config(self) -> dict[str, object]:
        """The JSON config the agent is started with (pure: no I/O)."""
        config: dict[str, object] = {
            "datacenter": self._datacenter,
            "node_name": self._node_name,
            "bind_addr": self._bind,
            "client_addr": self._bind,
            "ports": {
                "http": self._http_port,
                "https": self._https_port,
                "dns": self._dns_port,
                "serf_lan": self._serf_lan_port,
                "serf_wan": self._serf_wan_port,
                "server": self._server_port,
                "grpc": -1,
            },
            "disable_update_check": True,
            "disable_host_node_id": True,
            "log_level": "INFO",
        }
        if not self._dev_mode:
            config.update(
                {
                    "server": True,
                    "bootstrap_expect": self._bootstrap_expect,
                    "data_dir": str(self._data_dir),
                    # Production timing (multiplier 5) makes a fresh single server wait seconds to elect.
                    "performance": {"raft_multiplier": 1},
                }
            )
        if self._retry_join:
            config["retry_join"] = list(self._retry_join)
        return _deep_merge(config, self._extra_config)

    def command(self, consul_bin: Path) -> list[str]:
        """The argv that starts the agent."""
        argv = [str(consul_bin), "agent", f"-config-file={self._config_path}"]
        if self._dev_mode:
            argv.insert(2, "-dev")
        return argv

    # ---- lifecycle

    def start(self, timeout: float = 30) -> None:
        """Start the agent and return once it has a leader and lists its own node in the catalog.

        Raises:
            ConsulBinaryError: no usable consul binary.
            ConsulDevServerError: the agent exited (the message ends with its log) or was not ready within
                ``timeout`` seconds (it is then stopped).
        """
        if self.running:
            raise ConsulDevServerError(f"consul agent {self._node_name} is already running")
        binary = self._resolve_binary()
        if not self._dev_mode:
            self._data_dir.mkdir(parents=True, exist_ok=True)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._config_path.write_text(json.dumps(self.build_config(), indent=2), encoding="utf-8")
        self._log_handle = self._log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.command(binary),
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches our process, which deregisters its
                # agents and then stops Consul, instead of killing Consul first.
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            raise ConsulBinaryError(f"cannot run consul binary {binary}: {exc}") from exc
        # Reap the agent if this object is dropped or the interpreter exits without a stop().
        self._proc_finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self._ready_at = time.monotonic()

    def _resolve_binary(self) -> Path:
        if self._consul_bin is None:
            return find_consul_binary()
        if not _is_executable(self._consul_bin):
            raise ConsulBinaryError(f"consul binary {self._consul_bin} is not an executable file")
        return self._consul_bin

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                raise ConsulDevServerError(
                    f"consul agent {self._node_name} exited with status {code} while starting; "
                    f"log {self._log_path}:\n{self.log_tail()}"
                )
            leader = self.get_json("/v1/status/leader")
            if isinstance(leader, str) and leader:
                nodes = self.get_json("/v1/catalog/nodes")
                if isinstance(nodes, list) and any(
                    isinstance(n, dict) and n.get("Node") == self._node_name for n in nodes
                ):
                    return
                last = f"leader {leader}, node {self._node_name} not yet in the catalog"
            elif leader is not None:
                last = "no leader yet"
            if time.monotonic() >= deadline:
                raise ConsulDevServerError(
                    f"consul agent {self._node_name} not ready after {timeout:g}s ({last}); "
                    f"log {self._log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        """Stop the agent: SIGTERM, then SIGKILL after ``timeout`` seconds. Does nothing if not running."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._proc = None
        if self._proc_finalizer is not None:
            self._proc_finalizer.detach()
            self._proc_finalizer = None
        self._close_log()
        self._ready_at = None

    def kill(self) -> None:
        """Kill the agent with SIGKILL (no graceful leave) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self.stop()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the agent exits and return its exit status.

        Raises:
            ConsulDevServerError: the agent was not started.
            subprocess.TimeoutExpired: it still runs after ``timeout`` seconds.
        """
        if self._proc is None:
            raise ConsulDevServerError("wait() needs a started agent")
        return self._proc.wait(timeout)

    def restart(self, timeout: float = 30) -> None:
        """Stop, then start again on the same ports and data dir."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the agent and remove its temporary folder (a ``data_dir`` or ``log_file`` given is kept)."""
        self.stop()
        self._tmp_finalizer()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<ConsulDevServer {self._datacenter} {self.http_addr} {state}>"

    # ---- helpers for tests

    def wait_settled(self, seconds: float = 2.0) -> None:
        """Sleep until ``seconds`` have passed since the agent became ready (at once if they already have).

        Only for tests that *time* something: for its first one or two seconds after a leader is elected, a
        dev agent can take seconds to copy a TTL expiry into the catalog. This is a documented warm-up
        window of Consul, not a way to wait for a result; to wait for a result, poll with a deadline.
        """
        if self._ready_at is None:
            raise ConsulDevServerError("wait_settled() needs a started agent")
        remaining = self._ready_at + seconds - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def join_wan(self, other: ConsulDevServer, timeout: float = 15) -> None:
        """Join ``other``'s datacenter over WAN (``consul join -wan``), then wait until this agent lists it.

        Raises:
            ConsulDevServerError: the join failed, or ``other.datacenter`` did not appear in
                ``/v1/catalog/datacenters`` within ``timeout`` seconds.
        """
        env = dict(os.environ)
        env.pop("CONSUL_HTTP_TOKEN", None)
        env.pop("CONSUL_HTTP_TOKEN_FILE", None)
        if self._token:
            env["CONSUL_HTTP_TOKEN"] = self._token
        cmd = [
            str(self._resolve_binary()),
            "join",
            "-wan",
            f"-http-addr={self.http_addr}",
            f"{other.bind}:{other.serf_wan_port}",
        ]
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ConsulDevServerError(
                f"consul join -wan {other.datacenter} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        deadline = time.monotonic() + timeout
        while True:
            dcs = self.get_json("/v1/catalog/datacenters")
            if isinstance(dcs, list) and other.datacenter in dcs:
                return
            if time.monotonic() >= deadline:
                raise ConsulDevServerError(
                    f"{other.datacenter} not in {self.datacenter}'s datacenters after {timeout:g}s: {dcs}"
                )
            time.sleep(0.05)

    def log_tail(self, size: int = _LOG_TAIL_BYTES) -> str:
        """The last ``size`` bytes of the agent's log, decoded."""
        try:
            with self._log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - size))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"

    def get_json(self, path: str) -> object:
        """GET ``path`` from the HTTP API with this class's token; None until the agent answers 200."""
        request = urllib.request.Request(self.http_addr + path)
        if self._token:
            request.add_header("X-Consul-Token", self._token)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):  # URLError, HTTPError, resets and timeouts are OSErrors
            return None

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def _master_token(config: Mapping[str, object]) -> str | None:
    acl = config.get("acl")
    tokens = acl.get("tokens") if isinstance(acl, Mapping) else None
    master = tokens.get("master") if isinstance(tokens, Mapping) else None
    return master if isinstance(master, str) and master else None


# --------------------------------------------------------------------------------------------------------
# Entry points


def run_dev_server(
    http_port: int | None = 8500, dns_port: int | None = 8600, datacenter: str = "dc1"
) -> ConsulDevServer:
    """Start and return a dev agent on ``http_port``/``dns_port``; a port that is None or taken is replaced
    by a free one (read the chosen ports from the returned server). The caller must ``close()`` it."""
    bind = "127.0.0.1"
    if http_port is not None and not _port_free(bind, http_port, udp=False):
        http_port = None
    if dns_port is not None and not _port_free(bind, dns_port, udp=True):
        dns_port = None
    server = ConsulDevServer(datacenter=datacenter, http_port=http_port, dns_port=dns_port, bind=bind)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _cmd_run(args: argparse.Namespace) -> int:
    server = run_dev_server(http_port=args.http_port, dns_port=args.dns_port, datacenter=args.datacenter)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for what, asked, got in (
            ("HTTP", args.http_port, server.http_port),
            ("DNS", args.dns_port, server.dns_port),
        ):
            if asked != got:
                print(f"port {asked} ({what}) is taken (another Consul?); using {got} instead")
        print(f"consul {server.datacenter} ready (pid {server.pid})")
        print(f"  HTTP  {server.http_addr}")
        print(f"  DNS   {server.bind}:{server.dns_port}")
        print(f"  log   {server.log_path}")
        print(f"  export CONSUL_HTTP_ADDR={server.http_addr}")
        print("Ctrl-C to stop.", flush=True)
        code = server.wait()
        print(f"consul exited with status {code}; log:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        print(f"consul {server.datacenter} stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m consul_agents.dev``: ``install``, ``find`` or ``run``."""
    parser = argparse.ArgumentParser(prog="python -m consul_agents.dev", description="Run a local Consul.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser(
        "install", help="install consul into the cache folder if missing; print its path"
    )
    p_install.add_argument("--dest", type=Path, default=None, help="folder for the binary (default: cache)")
    sub.add_parser("find", help="print the consul binary that would be used (no install)")
    p_run = sub.add_parser("run", help="run a dev agent until Ctrl-C or SIGTERM")
    p_run.add_argument("--datacenter", default="dc1")
    p_run.add_argument("--http-port", type=int, default=8500)
    p_run.add_argument("--dns-port", type=int, default=8600)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(install_consul(args.dest))
        elif args.command == "find":
            print(find_consul_binary(install=False))
        else:
            return _cmd_run(args)
    except (ConsulBinaryError, ConsulDevServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
