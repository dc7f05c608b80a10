"""An aiohttp agent run by ``web.run_app`` with the consul-agents-aiohttp plugin (a child of the tests).

``python plugin_run_app.py <agent_type>``; Consul comes from CONSUL_HTTP_ADDR. It prints ``PORT <n>`` once
its socket is bound. ``GET /work?seconds=S`` answers after S seconds, so a test can keep a request in flight
through a shutdown (aiohttp waits up to 30 s for it).
"""

from __future__ import annotations

import asyncio
import socket
import sys

from aiohttp import web
from consul_agents_aiohttp import setup_agent

from consul_agents import AgentRegistration


async def work(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query["seconds"]))
    return web.Response(text="done")


def main(agent_type: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = web.Application()
    app.router.add_get("/work", work)
    registration = AgentRegistration(
        agent_type=agent_type,
        capabilities=["plan"],
        endpoint=f"http://127.0.0.1:{port}",
        agent_id=f"{agent_type}-run-app",
        ttl=2,
    )
    setup_agent(app, registration, heartbeat_interval=0.2)
    print(f"PORT {port}", flush=True)
    web.run_app(app, sock=sock, shutdown_timeout=30, print=None, access_log=None)


if __name__ == "__main__":
    main(sys.argv[1])
