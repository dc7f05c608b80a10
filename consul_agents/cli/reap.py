"""``consul-agents reap-metadata``: delete the KV metadata no registered agent uses any more."""

from __future__ import annotations

import argparse
from typing import Any

from consul_agents.cli._common import (
    EXIT_OK,
    add_connection_flags,
    add_output_flags,
    print_json,
    with_registry,
)

__all__ = ["register"]


def _reap(args: argparse.Namespace) -> int:
    keys = with_registry(args, lambda registry: registry.reap_metadata(dry_run=args.dry_run))
    if args.json:
        print_json({"reaped": keys, "dry_run": args.dry_run})
    else:
        verb = "would reap" if args.dry_run else "reaped"
        for key in keys:
            print(f"{verb} {key}")
        print(f"{verb} {len(keys)} metadata entr{'y' if len(keys) == 1 else 'ies'}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    text = (
        "Delete KV metadata (consul-agents/metadata/...) that no registered agent uses: left by agents "
        "Consul reaped or that were deregistered or re-registered elsewhere. Needs an operator token."
    )
    parser: argparse.ArgumentParser = subparsers.add_parser("reap-metadata", help=text, description=text)
    add_connection_flags(parser)
    add_output_flags(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    parser.set_defaults(handler=_reap)
