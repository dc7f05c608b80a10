"""An aiohttp agent using the consul-agents-aiohttp plugin, for the plugin tests (a child process).

``python plugin_agent.py <agent_type> <capacity>``; Consul comes from CONSUL_HTTP_ADDR. It prints
``PORT <n>`` once it listens. ``GET /work`` waits until ``POST /release`` so a test can hold requests
in flight.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from aiohttp import web
from consul_agents_aiohttp import setup_agent
from processes import serve_until_signalled

from consul_agents import AgentRegistration

RELEASE = web.AppKey("release", asyncio.Event)


async def work(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()
    return web.Response(text="done")


async def release(request: web.Request) -> web.Response:
    request.app[RELEASE].set()
    return web.Response(text="released")


async def main(agent_type: str, capacity: int) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/work", work)
    app.router.add_post("/release", release)
    registration = AgentRegistration(
        agent_type=agent_type,
        capabilities=["plan"],
        endpoint=f"http://127.0.0.1:{port}",
        agent_id=f"{agent_type}-plugin",
        ttl=2,
    )
    setup_agent(app, registration, capacity=capacity, heartbeat_interval=0.2)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await serve_until_signalled(port)
    app[RELEASE].set()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
