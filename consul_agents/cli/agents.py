"""Registry commands: register, deregister, status, discover, select, types."""

from __future__ import annotations

import argparse
from typing import Any

from consul_agents._bounded_json import loads_bounded
from consul_agents._errors import InvalidAgentError
from consul_agents._models import AgentRegistration, DiscoveryRequest, SelectionCriteria
from consul_agents._selection import STRATEGIES
from consul_agents.cli._common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    add_filter_flags,
    add_subcommand,
    filter_fields,
    key_values,
    print_agents,
    print_json,
    print_table,
    split_csv,
    with_registry,
)

__all__ = ["register"]

#: Far deeper than any metadata, far below what would make the parser or the model recurse too deep; the
#: model applies its own, documented bound after this.
MAX_METADATA_NESTING = 64


def _metadata(text: str | None) -> Any:
    """``--metadata`` as JSON; anything that does not parse, or nests absurdly deep, is exit 2."""
    if not text:
        return {}
    try:
        return loads_bounded(text, MAX_METADATA_NESTING)
    except ValueError as exc:
        raise InvalidAgentError(f"--metadata is not a usable JSON object: {exc}", field="metadata") from exc


def _register(args: argparse.Namespace) -> int:
    registration = AgentRegistration(
        agent_type=args.agent_type,
        capabilities=split_csv(args.capabilities),
        endpoint=args.endpoint,
        agent_id=args.id,
        tags=key_values(args.tag, "--tag"),
        metadata=_metadata(args.metadata),
        weight=args.weight,
        ttl=args.ttl,
        deregister_after=args.deregister_after,
    )
    agent_id = with_registry(args, lambda registry: registry.register_agent(registration))
    print_json({"agent_id": agent_id}) if args.json else print(agent_id)
    return EXIT_OK


def _deregister(args: argparse.Namespace) -> int:
    removed = with_registry(args, lambda registry: registry.deregister_agent(args.agent_id))
    if args.json:
        print_json({"agent_id": args.agent_id, "removed": removed})
    else:
        print(f"deregistered {args.agent_id}" if removed else f"{args.agent_id} was not registered")
    return EXIT_OK if removed else EXIT_NOT_FOUND


def _status(args: argparse.Namespace) -> int:
    agent = with_registry(args, lambda registry: registry.get_agent(args.agent_id))
    print_agents([agent], args.json)
    return EXIT_OK


def _discover(args: argparse.Namespace) -> int:
    request = DiscoveryRequest(**filter_fields(args))
    print_agents(with_registry(args, lambda registry: registry.discover_agents(request)), args.json)
    return EXIT_OK


def _select(args: argparse.Namespace) -> int:
    criteria = SelectionCriteria(
        **filter_fields(args), strategy=args.strategy, exclude=split_csv(args.exclude)
    )
    chosen = with_registry(args, lambda registry: registry.select_agent(criteria))
    if chosen is None:
        if args.json:
            print_json(None)
        else:
            print("no agent matches")
        return EXIT_NOT_FOUND
    print_agents([chosen], args.json)
    return EXIT_OK


def _types(args: argparse.Namespace) -> int:
    types = with_registry(args, lambda registry: registry.agent_types(args.region))
    if args.json:
        print_json(types)
    else:
        print_table(["TYPE", "CAPABILITIES"], [(t, ",".join(caps)) for t, caps in types.items()])
    return EXIT_OK


def register(subparsers: Any) -> None:
    p = add_subcommand(subparsers, "register", "Register (or update) an agent.", _register)
    p.add_argument("--type", dest="agent_type", required=True)
    p.add_argument("--capabilities", "-c", required=True, help="comma-separated capabilities")
    p.add_argument("--endpoint", required=True, help="scheme://host:port[/path]")
    p.add_argument("--id", help="agent id (default: generated)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--metadata", help="JSON object")
    p.add_argument("--weight", type=int, default=1)
    p.add_argument("--ttl", type=float, default=15.0, help="heartbeat TTL in seconds")
    p.add_argument("--deregister-after", type=float, default=60.0, help="seconds critical before reaping")

    p = add_subcommand(subparsers, "deregister", "Deregister an agent.", _deregister)
    p.add_argument("agent_id")

    p = add_subcommand(subparsers, "status", "Show one agent as Consul's catalog sees it.", _status)
    p.add_argument("agent_id")

    p = add_subcommand(subparsers, "discover", "List the live agents that match filters.", _discover)
    add_filter_flags(p)

    p = add_subcommand(subparsers, "select", "Pick one agent that matches filters.", _select)
    add_filter_flags(p)
    p.add_argument("--strategy", choices=STRATEGIES, default="least_loaded")
    p.add_argument("--exclude", help="comma-separated agent ids to skip")

    p = add_subcommand(subparsers, "types", "List agent types and their capabilities.", _types)
    p.add_argument("--region", help="Consul datacenter")
