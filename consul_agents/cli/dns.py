"""DNS commands: ``dns setup`` creates the prepared query template; ``dns names`` prints an agent's names."""

from __future__ import annotations

import argparse
from typing import Any

from consul_agents._models import DiscoveryRequest
from consul_agents._registry import AgentRegistry
from consul_agents.cli._common import EXIT_OK, add_connection_flags, printable, split_csv, with_registry
from consul_agents.dns import (
    SetupOutcome,
    query_dns_name,
    rfc2782_name,
    service_dns_name,
    setup_prepared_query,
)

__all__ = ["register"]


async def _set_up(args: argparse.Namespace, registry: AgentRegistry) -> list[tuple[str, SetupOutcome]]:
    gateway = registry.gateway
    if args.all_datacenters:
        response = await gateway.get("list datacenters", "/v1/catalog/datacenters")
        targets: list[str | None] = list(response.body or [])
    else:
        targets = [args.datacenter]
    results = []
    for dc in targets:
        outcome = await setup_prepared_query(
            gateway,
            datacenter=dc,
            nearest_n=args.nearest_n,
            failover_datacenters=split_csv(args.failover),
            only_passing=args.only_passing,
        )
        results.append((dc or "(local)", outcome))
    return results


def _setup(args: argparse.Namespace) -> int:
    for dc, outcome in with_registry(args, lambda registry: _set_up(args, registry)):
        print(f"{printable(dc)}: prepared query template {outcome}")
    print("Resolve with e.g.: " + query_dns_name("<type>", "<capability>"))
    return EXIT_OK


def _names(args: argparse.Namespace) -> int:
    # Validates the type and capability as the registry would (DNS labels).
    request = DiscoveryRequest(agent_type=args.agent_type, capabilities=split_csv(args.capability))
    assert request.agent_type is not None
    capability = request.capabilities[0] if request.capabilities else None
    print(service_dns_name(request.agent_type, capability, domain=args.domain))
    if capability:
        print(rfc2782_name(request.agent_type, capability, domain=args.domain))
    print(query_dns_name(request.agent_type, capability, domain=args.domain))
    return EXIT_OK


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dns", help="Consul DNS names for agents and their failover template.")
    commands = p.add_subparsers(dest="dns_command", metavar="SUBCOMMAND", required=True)

    s = commands.add_parser(
        "setup",
        help="Create or update the prepared query template behind agent-<type>[.<capability>].query.consul.",
    )
    s.add_argument(
        "--nearest-n", type=int, default=3, help="fail over to this many nearest datacenters (default 3)"
    )
    s.add_argument("--failover", metavar="DC,DC", help="then try these datacenters, in order")
    s.add_argument("--only-passing", action="store_true", help="leave agents in warning out of answers")
    s.add_argument(
        "--all-datacenters", action="store_true", help="set the template up in every known datacenter"
    )
    add_connection_flags(s)
    s.set_defaults(handler=_setup)

    n = commands.add_parser("names", help="Print the DNS names of an agent type (and capability).")
    n.add_argument("agent_type", help="agent type")
    n.add_argument("capability", nargs="?", help="capability")
    n.add_argument("--domain", default="consul", help="Consul's DNS domain (default consul)")
    n.set_defaults(handler=_names)
