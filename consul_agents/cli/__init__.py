"""The ``consul-agents`` command line.

Each command group lives in its own module exposing ``register(subparsers)``, which adds its subcommands
with a ``handler`` default: ``handler(args) -> int``. Connection flags follow Consul's CLI (``-http-addr``,
``-token``, ``-token-file``, ``-datacenter``, ``-ca-file``, with the same CONSUL_* variables).

Exit codes tell outcomes apart for scripts: 0 success, 1 other error, 2 bad usage or invalid input,
3 not found, 4 permission denied, 5 Consul unavailable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from consul_agents.cli._common import run_handler

__all__ = ["build_parser", "main"]

#: Command modules, each with ``register(subparsers)``. Add a line to add a command group.
COMMAND_MODULES = (
    "consul_agents.cli.acl",
    "consul_agents.cli.agents",
    "consul_agents.cli.batch",
    "consul_agents.cli.cards",
    "consul_agents.cli.bench",
    "consul_agents.cli.dev",
    "consul_agents.cli.reap",
    "consul_agents.cli.sidecar",
    "consul_agents.cli.dns",
    "consul_agents.cli.pools",
    "consul_agents.cli.serve",
    "consul_agents.cli.watch",
    "consul_agents.cli.alert_handler",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consul-agents", description="A registry and discovery layer for AI agents, on HashiCorp Consul."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
