"""Local development: `consul-agents dev` runs a Consul agent; `consul-agents demo` shows the registry."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

from consul_agents._errors import InvalidAgentError
from consul_agents._models import AgentRegistration, DiscoveryRequest, SelectionCriteria
from consul_agents._registry import AgentRegistry, AgentSession
from consul_agents._selection import STRATEGIES
from consul_agents._yaml import load_yaml
from consul_agents.cli._common import EXIT_OK, http_address, print_agents, print_table, stop_on_signals
from consul_agents.dev import ConsulDevServer, run_dev_server

__all__ = ["load_fleet", "register"]

DEFAULT_FLEET = Path("config/demo-fleet.yaml")


def load_fleet(path: Path) -> list[AgentRegistration]:
    """The registrations of a fleet file; errors name the file, the entry, the field and its line."""
    document = load_yaml(path)
    entries = document.data.get("agents") if isinstance(document.data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InvalidAgentError(f"{path}: expected a non-empty list under 'agents'", field="agents")
    fleet = []
    for index, entry in enumerate(entries):
        where = f"agents[{index}]"
        if not isinstance(entry, dict):
            error = InvalidAgentError(f"{path}: {where} is not a mapping", field=where)
            raise document.locate(error)
        try:
            fleet.append(AgentRegistration(**{str(key): value for key, value in entry.items()}))
        except InvalidAgentError as exc:
            field = f"{where}.{exc.field}"
            message = str(exc).removeprefix(f"invalid {exc.field}: ")
            raise document.locate(InvalidAgentError(f"{path}: {field}: {message}", field=field)) from exc
    return fleet


async def _until_stopped(message: str) -> None:
    stop = stop_on_signals()
    print(message, flush=True)
    await stop.wait()


async def _show(registry: AgentRegistry) -> None:
    print("\n== Every live agent (discover_agents())")
    print_agents(await registry.discover_agents(), False)
    for title, request in (
        ("capability 'summarize', any type", DiscoveryRequest(capabilities=["summarize"])),
        (
            "type 'coder' with 'python', load at most 0.5",
            DiscoveryRequest(agent_type="coder", capabilities=["python"], max_load=0.5),
        ),
        ("tag tier=gold", DiscoveryRequest(tags={"tier": "gold"})),
    ):
        print(f"\n== Discover: {title}")
        print_agents(await registry.discover_agents(request), False)
    print("\n== select_agent(capability 'summarize'): 200 picks per strategy")
    rows = []
    for strategy in STRATEGIES:
        counts: Counter[str] = Counter()
        for _ in range(200):
            chosen = await registry.select_agent(
                SelectionCriteria(capabilities=["summarize"], strategy=strategy)
            )
            counts[chosen.agent_id if chosen else "-"] += 1
        rows.append((strategy, ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))))
    print_table(["STRATEGY", "PICKS"], rows)


async def _demo(args: argparse.Namespace, address: str, dns_port: int | None) -> None:
    fleet = load_fleet(args.fleet)
    rng = random.Random(args.seed)
    async with AgentRegistry(address) as registry, contextlib.AsyncExitStack() as stack:
        sessions: list[AgentSession] = []
        for registration in fleet:
            sessions.append(await stack.enter_async_context(registry.session(registration, interval=2.0)))
        print(f"Registered {len(sessions)} agents with Consul at {address}; each heartbeats every 2 s.")
        await _show(registry)
        port = str(dns_port) if dns_port is not None else "<its DNS port, 8600 by default>"
        print(f"\nConsul UI: {address}/ui   DNS: dig @127.0.0.1 -p {port} agent-planner.service.consul SRV")
        if not args.once:
            drift = asyncio.create_task(_drift(sessions, rng))
            try:
                await _until_stopped(
                    "Running; loads drift every few seconds. "
                    "Ctrl-C to stop (agents deregister on the way out)."
                )
            finally:
                drift.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drift
            print(f"Stopping: deregistering {len(sessions)} agents...", flush=True)
    print("Demo agents deregistered.", flush=True)


async def _drift(sessions: list[AgentSession], rng: random.Random) -> None:
    while True:
        await asyncio.sleep(3.0)
        for session in sessions:
            session.load = min(1.0, max(0.0, round(session.load + rng.uniform(-0.15, 0.15), 2)))


def _start_consul(args: argparse.Namespace, datacenter: str) -> ConsulDevServer:
    """A dev agent on the asked ports (8500 and 8600 by default), saying so when one was taken and another
    used instead: a Consul already on 8500 is the usual reason, and its agents are not the demo's."""
    http_port, dns_port = args.http_port or 8500, args.dns_port or 8600
    server = run_dev_server(http_port, dns_port, datacenter)
    for what, asked, got in (("HTTP", http_port, server.http_port), ("DNS", dns_port, server.dns_port)):
        if asked != got:
            print(f"Port {asked} ({what}) is taken (another Consul?); this Consul uses {got} instead.")
    print(
        f"Started Consul {server.datacenter}: HTTP {server.http_addr}, DNS 127.0.0.1:{server.dns_port}.",
        flush=True,
    )
    return server


def _run_demo(args: argparse.Namespace) -> int:
    server = None
    address = args.http_addr
    if address is None:
        server = _start_consul(args, "dc1")
        address = server.http_addr
    try:
        asyncio.run(_demo(args, address, server.dns_port if server is not None else None))
    finally:
        if server is not None:
            server.close()
            print(f"Consul {server.datacenter} stopped.", flush=True)
    return EXIT_OK


def _run_dev(args: argparse.Namespace) -> int:
    server = _start_consul(args, args.datacenter)
    try:
        asyncio.run(_until_stopped(f"export CONSUL_HTTP_ADDR={server.http_addr}\nRunning; Ctrl-C to stop."))
    finally:
        server.close()
        print(f"Consul {server.datacenter} stopped.", flush=True)
    return EXIT_OK


def _ports(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-port", type=int, default=None, help="default: 8500 if free, else a free port")
    parser.add_argument("--dns-port", type=int, default=None, help="default: 8600 if free, else a free port")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("dev", help="Run a local Consul dev agent until Ctrl-C.")
    _ports(p)
    p.add_argument("--datacenter", default="dc1")
    p.set_defaults(handler=_run_dev)

    p = subparsers.add_parser(
        "demo", help="Start Consul, register a demo fleet, show discovery and selection."
    )
    _ports(p)
    p.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help="fleet YAML (default: %(default)s)")
    p.add_argument(
        "-http-addr",
        "--http-addr",
        dest="http_addr",
        type=http_address,
        help="use this Consul (host:port or scheme://host:port) instead of starting one",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for load drift")
    p.add_argument("--once", action="store_true", help="show the results and exit (used by the tests)")
    p.set_defaults(handler=_run_demo)
