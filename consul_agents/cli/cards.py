"""A2A commands: drain and undrain an agent, show an agent's card, list cards."""

from __future__ import annotations

import argparse
from typing import Any

from consul_agents._models import DiscoveryRequest
from consul_agents.cli._common import (
    EXIT_OK,
    add_filter_flags,
    add_subcommand,
    filter_fields,
    print_json,
    print_table,
    with_registry,
)

__all__ = ["register"]


def _drain(args: argparse.Namespace, draining: bool) -> int:
    with_registry(args, lambda registry: registry.set_draining(args.agent_id, draining))
    if args.json:
        print_json({"agent_id": args.agent_id, "draining": draining})
    else:
        print(f"{args.agent_id} {'draining' if draining else 'no longer draining'}")
    return EXIT_OK


def _card(args: argparse.Namespace) -> int:
    print_json(with_registry(args, lambda registry: registry.get_agent_card(args.agent_id)))
    return EXIT_OK


def _cards(args: argparse.Namespace) -> int:
    request = DiscoveryRequest(**filter_fields(args))
    entries = with_registry(args, lambda registry: registry.agent_cards(request))
    if args.json:
        print_json([{"agent_id": e.agent.agent_id, "card_digest": e.digest, "card": e.card} for e in entries])
        return EXIT_OK
    print_table(
        ["ID", "TYPE", "STATUS", "NAME", "VERSION", "SKILLS"],
        [
            (
                e.agent.agent_id,
                e.agent.agent_type,
                e.agent.status.value + (",draining" if e.agent.draining else ""),
                str(e.card.get("name", "")),
                str(e.card.get("version", "")),
                ",".join(e.agent.capabilities),
            )
            for e in entries
        ],
    )
    return EXIT_OK


def register(subparsers: Any) -> None:
    p = add_subcommand(
        subparsers,
        "drain",
        "Mark an agent draining: it keeps heartbeating but is never selected and leaves DNS answers.",
        lambda args: _drain(args, True),
    )
    p.add_argument("agent_id")
    p = add_subcommand(
        subparsers, "undrain", "Take an agent out of draining.", lambda args: _drain(args, False)
    )
    p.add_argument("agent_id")
    p = add_subcommand(subparsers, "card", "Print an agent's A2A Agent Card as registered.", _card)
    p.add_argument("agent_id")
    p = add_subcommand(
        subparsers, "cards", "List the A2A Agent Cards of the live agents that match filters.", _cards
    )
    add_filter_flags(p)
