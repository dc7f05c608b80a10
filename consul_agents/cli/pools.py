"""Pool commands: ``pools`` (every pool and its scaling signal), ``pool show|set|clear TYPE``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from consul_agents._pools import PoolSettings, PoolStatus
from consul_agents._registry import AgentRegistry
from consul_agents.cli._common import EXIT_OK, add_subcommand, print_json, print_table, with_registry

__all__ = ["register"]

#: ``pool set`` flag -> PoolSettings field.
_FIELDS = {
    "min": "min_agents",
    "max": "max_agents",
    "desired": "desired_agents",
    "target_load": "target_load",
    "cost": "cost_per_agent_hour",
}


_HEADERS = [
    "DC",
    "TYPE",
    "PASSING",
    "WARNING",
    "CRITICAL",
    "MAINT",
    "DRAINING",
    "CAPACITY",
    "LOAD",
    "MAX",
    "UNMET",
    "DESIRED",
    "MIN..MAX",
    "COST/H",
    "SETTINGS",
]


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_pools(pools: Sequence[PoolStatus], as_json: bool) -> None:
    if as_json:
        print_json([pool.model_dump(mode="json") for pool in pools])
        return
    print_table(
        _HEADERS,
        [
            (
                p.datacenter,
                p.agent_type,
                p.passing,
                p.agents.get("warning", 0),
                p.agents.get("critical", 0),
                p.agents.get("maintenance", 0),
                p.draining,
                p.capacity,
                _number(p.load_mean),
                _number(p.load_max),
                p.unmet_recent,
                "-" if p.desired_agents is None else p.desired_agents,
                "-"
                if p.settings is None
                else f"{p.settings.min_agents}..{_number(p.settings.max_agents, 0)}",
                "-" if p.settings is None else _number(p.settings.cost_per_agent_hour),
                p.settings_error or ("set" if p.settings else "none"),
            )
            for p in pools
        ],
    )


def _pools(args: argparse.Namespace) -> int:
    _print_pools(with_registry(args, lambda registry: registry.pools()), args.json)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    pool = with_registry(args, lambda registry: registry.pool(args.agent_type, args.region))
    _print_pools([pool], args.json)
    return EXIT_OK


async def _merge(registry: AgentRegistry, args: argparse.Namespace) -> PoolSettings:
    """The pool's current settings (defaults when it has none or they are unusable) with the flags given."""
    current = (await registry.pool(args.agent_type, args.region)).settings or PoolSettings()
    given: dict[str, Any] = {
        field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag) is not None
    }
    for flag in args.unset or []:
        given[_FIELDS[flag]] = PoolSettings.model_fields[_FIELDS[flag]].default
    settings = PoolSettings(**{**current.model_dump(), **given})
    await registry.set_pool_settings(args.agent_type, settings, args.region)
    return settings


def _set(args: argparse.Namespace) -> int:
    settings = with_registry(args, lambda registry: _merge(registry, args))
    if args.json:
        print_json(settings.model_dump(mode="json"))
    else:
        print(f"pool {args.agent_type}: {settings.to_json()}")
    return EXIT_OK


def _clear(args: argparse.Namespace) -> int:
    with_registry(args, lambda registry: registry.set_pool_settings(args.agent_type, None, args.region))
    print_json({"agent_type": args.agent_type, "cleared": True}) if args.json else print(
        f"pool {args.agent_type}: settings removed"
    )
    return EXIT_OK


def register(subparsers: Any) -> None:
    add_subcommand(
        subparsers, "pools", "List every pool (type and datacenter) with its scaling signal.", _pools
    )

    group = subparsers.add_parser("pool", help="Show or change one pool's settings (kept in Consul KV).")
    commands = group.add_subparsers(dest="pool_command", metavar="COMMAND", required=True)
    p = add_subcommand(commands, "show", "Show one pool: agents, load, settings, signal.", _show)
    p.add_argument("agent_type")
    p.add_argument("--region", help="Consul datacenter (default: the local one)")

    p = add_subcommand(commands, "set", "Change a pool's settings; fields not given keep their value.", _set)
    p.add_argument("agent_type")
    p.add_argument("--region", help="Consul datacenter (default: the local one)")
    p.add_argument("--min", type=int, help="min_agents: the signal never goes below it")
    p.add_argument("--max", type=int, help="max_agents: the signal never goes above it")
    p.add_argument("--desired", type=int, help="desired_agents: pin the signal to this count")
    p.add_argument("--target-load", type=float, help="target_load: the mean load aimed for (default 0.7)")
    p.add_argument("--cost", type=float, help="cost_per_agent_hour, published on /metrics")
    p.add_argument("--unset", action="append", choices=sorted(_FIELDS), help="reset a field to its default")

    p = add_subcommand(commands, "clear", "Remove a pool's settings.", _clear)
    p.add_argument("agent_type")
    p.add_argument("--region", help="Consul datacenter (default: the local one)")
