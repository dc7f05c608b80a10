"""What every command shares: Consul connection flags, output as tables or JSON, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from consul_agents._errors import (
    AgentNotFoundError,
    ConsulAgentsError,
    InvalidAgentError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from consul_agents._models import AgentInfo, AgentStatus
from consul_agents._registry import AgentRegistry
from consul_agents._settings import check_token, read_token_file

__all__ = [
    "EXIT_DENIED",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "PrintableFormatter",
    "add_connection_flags",
    "add_filter_flags",
    "add_output_flags",
    "add_subcommand",
    "filter_fields",
    "http_address",
    "key_values",
    "make_registry",
    "positive_int",
    "positive_number",
    "print_agents",
    "print_json",
    "print_table",
    "printable",
    "run_handler",
    "split_csv",
    "stop_on_signals",
    "with_registry",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_DENIED, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5

Handler = Callable[[argparse.Namespace], int]
T = TypeVar("T")


def http_address(value: str) -> str:
    """A ``-http-addr`` value as a URL: ``host:port`` is accepted like Consul's CLI and CONSUL_HTTP_ADDR do
    (https when CONSUL_HTTP_SSL=true, else http); a full ``scheme://host:port`` is kept as given."""
    value = value.strip()
    if not value or "://" in value:
        return value
    ssl = os.environ.get("CONSUL_HTTP_SSL", "").strip().lower() in {"1", "true", "yes", "on"}
    return f"{'https' if ssl else 'http'}://{value}"


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Consul's own flag names (single dash, as in `consul members -http-addr=...`); double dash works too."""
    group = parser.add_argument_group("Consul connection (defaults from CONSUL_* environment variables)")
    group.add_argument(
        "-http-addr",
        "--http-addr",
        dest="http_addr",
        metavar="ADDR",
        type=http_address,
        help="Consul HTTP address, host:port or scheme://host:port (CONSUL_HTTP_ADDR; default "
        "http://127.0.0.1:8500)",
    )
    group.add_argument(
        "-token",
        "--token",
        dest="token",
        metavar="TOKEN",
        help="ACL token (CONSUL_HTTP_TOKEN); prefer -token-file, which keeps it out of ps",
    )
    group.add_argument(
        "-token-file",
        "--token-file",
        dest="token_file",
        metavar="FILE",
        help="file holding the ACL token (CONSUL_HTTP_TOKEN_FILE)",
    )
    group.add_argument(
        "-datacenter",
        "--datacenter",
        dest="datacenter",
        metavar="DC",
        help="Consul datacenter to query (default: the agent's own)",
    )
    group.add_argument(
        "-ca-file",
        "--ca-file",
        dest="ca_file",
        metavar="FILE",
        help="CA certificate for HTTPS to Consul (CONSUL_CACERT)",
    )


def add_subcommand(subparsers: Any, name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
    """A subcommand that talks to Consul: the connection and output flags, and its handler."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    add_connection_flags(parser)
    add_output_flags(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def positive_number(value: str) -> float:
    """An argparse type: a finite number above 0 (seconds, for example)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number above 0")
    return number


def positive_int(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def split_csv(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def key_values(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` flags as a dict."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidAgentError(f"{flag} {pair!r} must look like key=value", field=flag.lstrip("-"))
        result[key] = value
    return result


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    """The discovery filters of ``discover``, ``select`` and ``watch``, read back by :func:`filter_fields`."""
    parser.add_argument("--type", dest="agent_type", help="agent type")
    parser.add_argument("--capabilities", "-c", help="comma-separated capabilities, all required")
    parser.add_argument(
        "--status",
        choices=[s.value for s in AgentStatus],
        help="only this status (default: passing or warning)",
    )
    parser.add_argument("--max-load", type=float, help="only agents whose load is at most this")
    parser.add_argument(
        "--tag", action="append", metavar="KEY=VALUE", help="tag that must match (repeatable)"
    )
    parser.add_argument("--region", help="Consul datacenter to discover in")
    parser.add_argument(
        "--draining", action="store_true", help="include draining agents (shown as draining; never selected)"
    )


def filter_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The DiscoveryRequest fields given by :func:`add_filter_flags`' flags."""
    return {
        "agent_type": args.agent_type,
        "capabilities": split_csv(args.capabilities),
        "status": args.status,
        "max_load": args.max_load,
        "tags": key_values(args.tag, "--tag"),
        "region": args.region,
        "include_draining": args.draining,
    }


def make_registry(args: argparse.Namespace, **kwargs: Any) -> AgentRegistry:
    token = check_token(args.token, "-token") if args.token is not None else None
    if token is None and args.token_file:
        token = read_token_file(args.token_file, f"token file {args.token_file!r}") or ""
    return AgentRegistry(args.http_addr, token, args.datacenter, ca_cert=args.ca_file, **kwargs)


def with_registry(args: argparse.Namespace, call: Callable[[AgentRegistry], Awaitable[T]]) -> T:
    """Run ``call`` on a registry opened from the connection flags, and close the registry."""

    async def go() -> T:
        async with make_registry(args) as registry:
            return await call(registry)

    return asyncio.run(go())


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM. Install it before announcing readiness, so no signal is missed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


#: Unicode categories never printed raw: control characters (ESC starts terminal sequences that retitle
#: windows or clear screens), format characters (bidirectional overrides that reorder what is shown),
#: surrogates and line or paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: every control or format character as a visible escape (``\\x1b``).

    Everything the CLI prints that came from Consul (ids, endpoints, tags, capabilities, Consul's own error
    text) goes through here, since anyone who can write one agent type can write those strings.
    """
    value = str(text)
    if value.isprintable():  # the common case, in C
        return value
    return "".join(
        character
        if (keep_newlines and character == "\n") or unicodedata.category(character) not in _UNPRINTABLE
        else _escape(character)
        for character in value
    )


class PrintableFormatter(logging.Formatter):
    """Log lines (which quote agents' answers and Consul's errors) with control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), keep_newlines=True)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text_rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]
    for row in [list(headers), *text_rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_agents(agents: Sequence[AgentInfo], as_json: bool) -> None:
    if as_json:
        print_json([agent.model_dump(mode="json") for agent in agents])
        return
    print_table(
        ["ID", "TYPE", "STATUS", "LOAD", "WEIGHT", "DC", "ENDPOINT", "CAPABILITIES"],
        [
            (
                a.agent_id,
                a.agent_type,
                a.status.value + (",draining" if a.draining else ""),
                f"{a.current_load:.2f}",
                a.weight,
                a.datacenter,
                a.endpoint,
                ",".join(a.capabilities),
            )
            for a in agents
        ],
    )


def exit_code_for(exc: ConsulAgentsError) -> int:
    if isinstance(exc, AgentNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, PermissionDeniedError):
        return EXIT_DENIED
    if isinstance(exc, RegistryUnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, InvalidAgentError):
        return EXIT_USAGE
    return EXIT_ERROR


def run_handler(args: argparse.Namespace) -> int:
    """Run the chosen command, turning our errors into one line on stderr and an exit code."""
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConsulAgentsError as exc:
        print(f"consul-agents: {printable(exc)}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130
