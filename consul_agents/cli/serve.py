"""``consul-agents serve``: the REST API, the web page and /metrics, until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from aiohttp import web

from consul_agents._cards import CardVerifier
from consul_agents._errors import InvalidAgentError
from consul_agents._server_log import server_log
from consul_agents.api import create_app
from consul_agents.cli._common import EXIT_OK, add_connection_flags, stop_on_signals

__all__ = ["register"]


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} must look like HOST:PORT (port 0 picks a free one)")
    return host.strip("[]") or "127.0.0.1", int(port)


#: The environment variables the card-signature options default from.
CARD_KEYS_VAR, REQUIRE_SIGNED_VAR = "CONSUL_AGENTS_CARD_KEYS", "CONSUL_AGENTS_REQUIRE_SIGNED_CARDS"


def _card_verifier(args: argparse.Namespace) -> CardVerifier | None:
    """The verifier of the JWK Set file named by --card-keys (or CONSUL_AGENTS_CARD_KEYS); None without one.
    Verifying needs a2a-sdk's signing helpers, the ``a2a`` extra, imported only then."""
    path = args.card_keys or os.environ.get(CARD_KEYS_VAR, "").strip()
    if not path:
        return None
    try:
        from consul_agents.a2a import jwks_verifier
    except ImportError as exc:
        raise InvalidAgentError(
            "invalid card_keys: verifying card signatures needs the a2a extra "
            "(pip install 'consul-agents[a2a]')",
            field="card_keys",
        ) from exc
    return jwks_verifier(path)


def _require_signed(args: argparse.Namespace) -> bool:
    """--require-signed-cards, else CONSUL_AGENTS_REQUIRE_SIGNED_CARDS; a value that is neither yes nor
    no is refused rather than read as no (it guards what may register)."""
    if args.require_signed_cards:
        return True
    value = os.environ.get(REQUIRE_SIGNED_VAR, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"", "0", "false", "no", "off"}:
        return False
    raise InvalidAgentError(
        f"invalid {REQUIRE_SIGNED_VAR}: {value[:40]!r} is neither true nor false",
        field="require_signed_cards",
    )


async def _serve(args: argparse.Namespace, verifier: CardVerifier | None, require_signed: bool) -> None:
    app = create_app(
        args.http_addr,
        args.datacenter,
        ca_cert=args.ca_file,
        card_verifier=verifier,
        require_signed_cards=require_signed,
    )
    runner = web.AppRunner(app, access_log=None, logger=server_log("consul_agents.api"))
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
    require_signed = _require_signed(args)
    verifier = _card_verifier(args)
    if require_signed and verifier is None:
        raise InvalidAgentError(
            f"invalid require_signed_cards: it needs --card-keys ({CARD_KEYS_VAR}), the keys to verify with",
            field="require_signed_cards",
        )
    asyncio.run(_serve(args, verifier, require_signed))
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
    signing = parser.add_argument_group("A2A card signatures (need the a2a extra)")
    signing.add_argument(
        "--card-keys",
        metavar="FILE",
        help="JWK Set (RFC 7517) of the public keys card signatures are verified with; card reads then say "
        f"whether each card verified ({CARD_KEYS_VAR})",
    )
    signing.add_argument(
        "--require-signed-cards",
        action="store_true",
        help="refuse to register (POST /v1/cards) a card that is unsigned or does not verify with "
        f"--card-keys ({REQUIRE_SIGNED_VAR}=true)",
    )
    add_connection_flags(parser)
    parser.set_defaults(handler=_handler)
