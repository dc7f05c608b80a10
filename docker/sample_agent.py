"""A stand-in AI agent for docker/compose.yaml: answers GET /health with a load that drifts.

Real agents need nothing from consul-agents; their sidecar probes this endpoint, reads ``load`` and
heartbeats for them. Run: ``python docker/sample_agent.py --port 9101``.
"""

from __future__ import annotations

import argparse
import random

from aiohttp import web


def make_app(rng: random.Random) -> web.Application:
    state = {"load": 0.2}

    async def health(request: web.Request) -> web.Response:
        state["load"] = min(1.0, max(0.0, state["load"] + rng.uniform(-0.1, 0.1)))
        return web.json_response({"status": "ok", "load": round(state["load"], 2)})

    app = web.Application()
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    web.run_app(make_app(random.Random()), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
