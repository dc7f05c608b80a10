"""HTTP liveness: Consul runs an HTTP check per agent against one small health server of this process.

Why: a server-mode Consul rewrites a TTL check's state file on every update (1.1 to 1.4 ms of its CPU
here), and the alias checks of ``liveness="process"`` re-read all of their Consul agent's checks once a
minute (a cost quadratic in the agents). Consul 1.8.7 persists check state only for TTL checks
(``persistCheckState`` is called from ``updateTTLCheck`` alone): an HTTP check whose status and output do
not change writes no state file, no Raft entry and no anti-entropy sync.

Cost, measured on Consul 1.8.7 (why it is opt-in, see reports/bench-liveness.json): Consul's ``CheckHTTP``
disables keep-alives, so every run is a new TCP connection and an HTTP exchange on both sides, about as much
Consul CPU as a TTL update. What saves is the interval: a TTL must be reset several times per TTL to survive
a late heartbeat, while a check Consul runs itself needs to run only once per TTL to keep the bound.

With ``liveness="http"``:

* the client starts, on first use, one aiohttp server bound to loopback when Consul is on loopback (else to
  the address this host reaches Consul from), on a free port, serving
  ``GET /consul-agents/health/<agent id>``: 200 with a constant body for an agent this process keeps alive,
  404 for any other. The body never changes, so neither does the check's output;
* each agent carries a Consul HTTP check ``alive:<id>`` of that URL, every TTL minus its one-second timeout
  (at least one second, Consul's minimum). When the process dies, the next run finds the port closed and
  the agent turns critical at once; when it hangs, the next run times out: critical within the TTL either
  way, inside the TTL + 1 s bound;
* each agent keeps its own check ``service:<id>``, a TTL of a year that the client sets only when the
  agent's status changes (as with ``"process"``): one agent fails alone, at once, its siblings untouched,
  and the status rules of _wire_read hold unchanged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from datetime import timedelta

from aiohttp import web

from consul_agents import _wire as wire
from consul_agents._models import AgentRegistration
from consul_agents._server_log import server_log
from consul_agents._settings import ConsulSettings

__all__ = ["HEALTH_PATH", "HttpLiveness"]

log = logging.getLogger("consul_agents.liveness")

HEALTH_PATH = "/consul-agents/health/"
_ALIVE = "alive"  # constant: an unchanged output is never synced to the servers
_MIN_INTERVAL = timedelta(seconds=1)  # Consul clamps shorter check intervals to one second
#: How long Consul waits for an answer (the check's Timeout): a hung process is critical this long after
#: the first run that finds it hung.
_TIMEOUT = timedelta(seconds=1)


#: aiohttp's logger for the health server: malformed requests from other local processes stay quiet.
_SERVER_LOG = server_log(log.name)


def _bind_host(settings: ConsulSettings) -> str:
    """Loopback when Consul is on loopback; otherwise the local address this host reaches Consul from."""
    if settings.loopback:
        host = settings.host
        try:
            return host if ipaddress.ip_address(host).is_loopback else "127.0.0.1"
        except ValueError:
            return "127.0.0.1"
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:  # no packet is sent: routing only
        probe.connect((settings.host, settings.port))
        return str(probe.getsockname()[0])


class HttpLiveness:
    """The health server of one client and the agents it answers for; started on first use."""

    def __init__(self, settings: ConsulSettings) -> None:
        self._settings = settings
        self._agents: dict[str, wire.HttpAlive] = {}
        #: When Consul last checked each agent (monotonic): a Consul agent that lost it stops checking it.
        self._seen: dict[str, float] = {}
        self._runner: web.AppRunner | None = None
        self._base: str | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"HttpLiveness(url={self._base!r}, agents={len(self._agents)})"

    def holds(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def spec(self, agent_id: str) -> wire.HttpAlive:
        return self._agents[agent_id]

    def unchecked(self, agent_id: str) -> bool:
        """Whether Consul has not checked ``agent_id`` for three intervals and a second: the local Consul
        agent lost it (a restart without its data dir), so its next heartbeat should re-register it."""
        spec = self._agents.get(agent_id)
        if spec is None:
            return False
        now = time.monotonic()
        if now - self._seen[agent_id] <= 3 * spec.interval.total_seconds() + 1:
            return False
        self._seen[agent_id] = now  # asked once per three intervals, not at every heartbeat
        return True

    async def attach(self, registration: AgentRegistration, agent_id: str) -> wire.HttpAlive:
        """The HTTP check spec of ``agent_id``, starting the health server first if need be."""
        async with self._lock:
            if self._base is None:
                await self._start()
            assert self._base is not None
            interval = max(registration.ttl - _TIMEOUT, _MIN_INTERVAL)
            spec = wire.HttpAlive(
                url=f"{self._base}{HEALTH_PATH}{agent_id}", interval=interval, timeout=_TIMEOUT
            )
            self._agents[agent_id] = spec
            self._seen[agent_id] = time.monotonic()
            return spec

    def detach(self, agent_id: str) -> None:
        """Answer 404 for ``agent_id`` from now on: its check (if it is still registered) turns critical."""
        self._agents.pop(agent_id, None)
        self._seen.pop(agent_id, None)

    async def close(self) -> None:
        """Stop the server: every check still pointing at it turns critical at its next run."""
        async with self._lock:
            self._agents.clear()
            self._seen.clear()
            runner, self._runner, self._base = self._runner, None, None
            if runner is not None:
                await runner.cleanup()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get(HEALTH_PATH + "{agent_id}", self._health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=_SERVER_LOG)
        await runner.setup()
        host = _bind_host(self._settings)
        site = web.TCPSite(runner, host, 0, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = site._server  # aiohttp exposes the bound port only through the asyncio server
        assert isinstance(server, asyncio.base_events.Server)
        port = server.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self._runner, self._base = runner, f"http://{shown}:{port}"
        log.info("liveness health server on %s", self._base)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        agent_id = request.match_info["agent_id"]
        if agent_id in self._agents:
            self._seen[agent_id] = time.monotonic()
            return web.Response(text=_ALIVE)
        raise web.HTTPNotFound(text="unknown")
