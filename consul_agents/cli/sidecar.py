"""Sidecar commands: ``sidecar FILE`` runs the sidecar, ``render FILE`` prints Consul service definitions."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from consul_agents import _wire as wire
from consul_agents._errors import ConsulAgentsError, InvalidAgentError
from consul_agents.cli._common import (
    EXIT_ERROR,
    EXIT_OK,
    PrintableFormatter,
    add_connection_flags,
    make_registry,
    printable,
)
from consul_agents.sidecar.config import load_config
from consul_agents.sidecar.render import render
from consul_agents.sidecar.runner import run_sidecar

__all__ = ["register"]


def _sidecar(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler])
    config = load_config(args.file)
    registry = make_registry(args)
    try:
        clean = asyncio.run(run_sidecar(config, registry))
    except ConsulAgentsError:
        raise  # the CLI's one line and exit code (denied 4, invalid 2, ...)
    except Exception as exc:
        # Logged with its traceback where it happened; the agents were deregistered before this.
        print(f"consul-agents: sidecar stopped after an unexpected error: {printable(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK if clean else EXIT_ERROR


def _render(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    for index, spec in enumerate(config.agents):
        if spec.card is not None:
            raise InvalidAgentError(
                f"{args.file}: agents[{index}].card: an agent registered from its A2A card takes its "
                "capabilities from the card at run time; run it with `consul-agents sidecar`",
                field=f"agents[{index}].card",
            )
    sys.stdout.write(render(config, args.format, args.check))
    for spec in config.agents:
        registration = spec.registration
        _, kv_value = wire.encode_metadata(registration.metadata, private=registration.private_metadata)
        if kv_value is not None:
            print(
                f"consul-agents: note: metadata of {spec.agent_id!r} is kept in KV; store it with\n"
                f"  consul kv put {wire.metadata_key(spec.registration.agent_type, spec.agent_id)} "
                f"'{printable(kv_value)}'",
                file=sys.stderr,
            )
    return EXIT_OK


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sidecar",
        help="Register the agents of a YAML file, probe their health and heartbeat until SIGTERM/SIGINT.",
    )
    p.add_argument("file", type=Path, help="sidecar YAML file (see config/agents/planner.yaml)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_connection_flags(p)
    p.set_defaults(handler=_sidecar)

    p = subparsers.add_parser(
        "render", help="Print the agents of a sidecar YAML file as Consul service definitions."
    )
    p.add_argument("file", type=Path, help="sidecar YAML file")
    p.add_argument("--format", choices=["json", "hcl"], default="json", help="default: %(default)s")
    p.add_argument(
        "--check",
        choices=["http", "ttl"],
        default="http",
        help="http: Consul probes the health endpoint itself (default); "
        "ttl: keep the TTL check, for when a process heartbeats it",
    )
    p.set_defaults(handler=_render)
