"""``consul-agents serve``: the REST API, the web page and /metrics, until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from aiohttp import web

from consul_agents._errors import InvalidAgentError
from consul_agents.api import create_app
from consul_agents.cli._common import EXIT_OK, add_connection_flags, stop_on_signals

__all__ = ["register"]


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} must look like HOST:PORT (port 0 picks a free one)")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _serve(args: argparse.Namespace) -> None:
    app = create_app(args.http_addr, args.datacenter, ca_cert=args.ca_file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        host, port = args.listen
        site = web.TCPSite(runner, host, port)
        await site.start()
        stop = stop_on_signals()
        for address in runner.addresses:
            bound_host, bound_port = address[0], address[1]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            print(f"serving on http://{shown}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _handler(args: argparse.Namespace) -> int:
    if args.token or args.token_file:
        raise InvalidAgentError(
            "serve takes no token: the API forwards each caller's own token (X-Consul-Token or "
            "Authorization: Bearer) to Consul",
            field="token",
        )
    asyncio.run(_serve(args))
    print("stopped", file=sys.stderr)
    return EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="Run the REST API, web page and /metrics.",
        description="Serve the REST API (OpenAPI at /openapi.json), the web page at / and Prometheus "
        "metrics at /metrics. The API holds no token: each request acts with its caller's.",
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="default 127.0.0.1:8080",
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=_handler)
