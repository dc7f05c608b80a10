"""A tiny agent process for the sidecar tests: an aiohttp app whose health endpoint the test controls.

Run ``python fake_agent.py``; it binds a free loopback port and prints ``PORT <n>`` once it listens.
``GET /health`` answers as the current mode says: ``ok`` (200 with ``{"load": <load>}``), ``hung``
(never answers), ``status:<n>`` (that HTTP status), ``garbage`` (200 with a body that is not JSON).
Hostile modes for the sidecar's probe: ``nested`` (200 with ``{"load": ...}`` nested 100,000 deep),
``huge`` (200 streaming 20 MB of JSON), ``badutf8`` (200 with bytes that are not UTF-8).
``POST /control?mode=...&load=...&draining=true|false`` changes the mode, load and the ``draining`` field of
the answer; it always answers, even when hung.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiohttp import web
from processes import serve_until_signalled

STATE: dict[str, Any] = {"mode": "ok", "load": 0.25, "draining": False}


async def health(request: web.Request) -> web.Response:
    mode = str(STATE["mode"])
    if mode == "hung":
        await asyncio.Event().wait()
    if mode.startswith("status:"):
        return web.json_response({"load": STATE["load"]}, status=int(mode.split(":", 1)[1]))
    if mode == "garbage":
        return web.Response(text="not json")
    if mode == "nested":
        depth = 100_000
        return web.Response(
            text='{"load": ' + "[" * depth + "]" * depth + "}", content_type="application/json"
        )
    if mode == "huge":
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"pad": "')
        for _ in range(20):
            await response.write(b"x" * 1_000_000)
        await response.write(b'", "load": 0.5}')
        return response
    if mode == "badutf8":
        return web.Response(body=b'{"load": \xff\xfe\xc0}', content_type="application/json")
    return web.json_response(
        {"load": STATE["load"], "stats": {"load": STATE["load"]}, "draining": STATE["draining"]}
    )


async def control(request: web.Request) -> web.Response:
    if "mode" in request.query:
        STATE["mode"] = request.query["mode"]
    if "load" in request.query:
        STATE["load"] = float(request.query["load"])
    if "draining" in request.query:
        STATE["draining"] = request.query["draining"] == "true"
    return web.json_response(STATE)


async def main() -> None:
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/control", control)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await serve_until_signalled(runner.addresses[0][1])
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
