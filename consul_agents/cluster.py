"""A multi-server Consul cluster on loopback, for fault tests and scale benchmarks.

:class:`ConsulCluster` runs ``size`` Consul servers (``bootstrap_expect=size``, each with a data dir and
``retry_join`` to the others) plus, by default, one Consul client agent joined to them. Each server binds its
own loopback address (127.0.0.1, 127.0.0.2, ...; Linux routes all of 127/8 to ``lo``) so that the cluster
looks like separate machines to Consul. Registries talk to the client agent, as an application on a
machine of a real datacenter would: its local agent owns its services and TTL checks, and the servers
(one of which may be failing) hold the catalog.

It only uses :class:`~consul_agents.dev.ConsulDevServer` and Consul's HTTP API; like that class it is
synchronous (call it through ``asyncio.to_thread`` from async code) and must be closed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from consul_agents.dev import ConsulDevServer, ConsulDevServerError

__all__ = ["ConsulCluster"]


class ConsulCluster:
    """``size`` Consul servers and (``client=True``) one client agent, all on loopback.

    Servers keep their data dirs across :meth:`stop_server`/:meth:`start_server`/:meth:`restart_server`,
    so a restarted server rejoins with its Raft log and catalog.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        datacenter: str = "dc1",
        client: bool = True,
        extra_config: Mapping[str, object] | None = None,
        consul_bin: Path | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one server, not {size}")
        self.datacenter = datacenter
        self.servers = [
            ConsulDevServer(
                datacenter=datacenter,
                node_name=f"server{i + 1}-{datacenter}",
                dev_mode=False,
                bootstrap_expect=size,
                bind=f"127.0.0.{i + 1}",
                extra_config=extra_config,
                consul_bin=consul_bin,
            )
            for i in range(size)
        ]
        for server in self.servers:
            server.retry_join = [self.serf_address(other) for other in self.servers if other is not server]
        self.client: ConsulDevServer | None = None
        if client:
            self.client = ConsulDevServer(
                datacenter=datacenter,
                node_name=f"client-{datacenter}",
                dev_mode=False,
                bind="127.0.0.1",
                retry_join=[self.serf_address(s) for s in self.servers],
                extra_config={**(extra_config or {}), "server": False, "bootstrap_expect": 0},
                consul_bin=consul_bin,
            )

    @staticmethod
    def serf_address(server: ConsulDevServer) -> str:
        return f"{server.bind}:{server.serf_lan_port}"

    @staticmethod
    def rpc_address(server: ConsulDevServer) -> str:
        """How Raft names a server (``/v1/status/leader`` and ``/v1/status/peers`` answer these)."""
        return f"{server.bind}:{server.server_port}"

    @property
    def http_addr(self) -> str:
        """Where registries should point: the client agent, or the first server when there is none."""
        return (self.client or self.servers[0]).http_addr

    @property
    def running_servers(self) -> list[ConsulDevServer]:
        return [s for s in self.servers if s.running]

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start every server (together: none elects a leader alone), then the client agent; return once
        a leader is elected and every server is a Raft peer."""
        try:
            self._start_servers(timeout)
            if self.client is not None:
                self.client.start(timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop and clean up every agent (also the ones already stopped)."""
        for agent in [*([self.client] if self.client else []), *self.servers]:
            agent.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- leadership ---------------------------------------------------------------------------------------

    def leader_address(self) -> str | None:
        """The Raft address of the leader that every running server agrees on, or None (no agreement yet)."""
        answers = {s.get_json("/v1/status/leader") for s in self.running_servers}
        if len(answers) != 1:
            return None
        (answer,) = answers
        return answer if isinstance(answer, str) and answer else None

    def server_at(self, rpc_address: str) -> ConsulDevServer:
        for server in self.servers:
            if self.rpc_address(server) == rpc_address:
                return server
        raise ConsulDevServerError(f"no server of this cluster is at {rpc_address}")

    def peers(self) -> list[str]:
        """The Raft peers as the first running server sees them (empty while it has no leader)."""
        for server in self.running_servers:
            answer = server.get_json("/v1/status/peers")
            if isinstance(answer, list):
                return sorted(str(p) for p in answer)
        return []

    def wait_for_leader(
        self,
        timeout: float = 30,
        *,
        peers: int | None = None,
        exclude: Sequence[ConsulDevServer] = (),
    ) -> ConsulDevServer:
        """Poll until every running server names the same running leader (not one of ``exclude``) and,
        when ``peers`` is given, Raft has that many peers; return the leader."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            address = self.leader_address()
            if address is not None:
                leader = self.server_at(address)
                current = self.peers()
                if not leader.running or leader in exclude:
                    last = f"leader {address} is a server being replaced"
                elif peers is not None and len(current) != peers:
                    last = f"leader {address}, peers {current} (want {peers})"
                else:
                    return leader
            else:
                last = "running servers do not agree on a leader"
            if time.monotonic() >= deadline:
                raise ConsulDevServerError(f"cluster has no settled leader after {timeout:g}s: {last}")
            time.sleep(0.05)

    def leader(self) -> ConsulDevServer:
        return self.wait_for_leader(timeout=10)

    def kill_leader(self) -> ConsulDevServer:
        """SIGKILL the current leader (no graceful leave, as a crash) and return it."""
        leader = self.leader()
        leader.kill()
        return leader

    # -- single servers -----------------------------------------------------------------------------------

    def stop_server(self, server: ConsulDevServer) -> None:
        """Stop one server gracefully (SIGTERM; servers do not leave the Raft configuration on SIGTERM)."""
        server.stop()

    def start_server(self, server: ConsulDevServer, timeout: float = 30) -> None:
        """Start a stopped server again on its ports and data dir; return once the cluster has a leader
        and every server is a peer again."""
        server.start(timeout)
        self.wait_for_leader(timeout=timeout, peers=len(self.servers))

    def restart_server(self, server: ConsulDevServer, timeout: float = 30) -> None:
        self.stop_server(server)
        self.start_server(server, timeout)

    def restart_all(self, timeout: float = 60) -> None:
        """Stop every server, then start them together (no server elects alone); return once they have
        a leader and all are peers. The client agent keeps running."""
        for server in self.running_servers:
            server.stop()
        self._start_servers(timeout)

    def _start_servers(self, timeout: float) -> None:
        """Start every server at once (none elects a leader alone) and wait until all are Raft peers."""
        with ThreadPoolExecutor(len(self.servers)) as pool:
            for future in [pool.submit(s.start, timeout) for s in self.servers]:
                future.result()
        self.wait_for_leader(timeout=timeout, peers=len(self.servers))
