"""What every command shares: Consul connection flags, output as tables or JSON, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from consul_agents._errors import (
    AgentNotFoundError,
    ConsulAgentsError,
    InvalidAgentError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from consul_agents._models import AgentInfo
from consul_agents._registry import AgentRegistry

__all__ = [
    "EXIT_DENIED",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "add_connection_flags",
    "add_output_flags",
    "make_registry",
    "print_agents",
    "print_table",
    "run_handler",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_DENIED, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5

Handler = Callable[[argparse.Namespace], int]


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Consul's own flag names (single dash, as in `consul members -http-addr=...`); double dash works too."""
    group = parser.add_argument_group("Consul connection (defaults from CONSUL_* environment variables)")
    group.add_argument(
        "-http-addr",
        "--http-addr",
        dest="http_addr",
        metavar="URL",
        help="Consul HTTP address (CONSUL_HTTP_ADDR; default http://127.0.0.1:8500)",
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


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def make_registry(args: argparse.Namespace, **kwargs: Any) -> AgentRegistry:
    token = args.token
    if token is None and args.token_file:
        try:
            with open(args.token_file) as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise InvalidAgentError(
                f"cannot read token file {args.token_file!r}: {exc.strerror}", field="token_file"
            ) from exc
    return AgentRegistry(args.http_addr, token, args.datacenter, ca_cert=args.ca_file, **kwargs)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text_rows = [[str(cell) for cell in row] for row in rows]
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
                a.status.value,
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
        print(f"consul-agents: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
