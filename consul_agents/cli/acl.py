"""`consul-agents acl setup FILE`: provision the ACL policies and tokens the registry needs.

Run it with a management token (``-token-file``, ``CONSUL_HTTP_TOKEN``...). The tokens go to ``--output``
(a file created 0600) or to stdout as JSON; a one-line summary per token, which never holds a secret,
goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from consul_agents._errors import InvalidAgentError
from consul_agents.acl import load_config, provision, tokens_json, write_tokens
from consul_agents.cli._common import EXIT_OK, add_connection_flags, with_registry

__all__ = ["register"]


def _check_output(path: str) -> None:
    """Refuse an unwritable --output before provisioning, so that no token is created only to be lost."""
    folder = Path(path).absolute().parent  # where the file is created: a link at ``path`` is replaced
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InvalidAgentError(
            f"cannot write tokens to {path!r}: {folder} is not a writable folder", field="output"
        )


def _setup(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if args.output:
        _check_output(args.output)
    tokens = with_registry(args, lambda registry: provision(registry.gateway, config))
    if args.output:
        try:
            write_tokens(tokens, args.output)
        except OSError as exc:
            raise InvalidAgentError(
                f"cannot write tokens to {args.output!r} ({exc.strerror}); they exist in Consul: "
                "run acl setup again with a writable --output to get them",
                field="output",
            ) from exc
    else:
        print(tokens_json(tokens))
    for token in tokens:
        print(f"{token.change:9}  {token.kind:10}  {token.name}  (policy {token.policy})", file=sys.stderr)
    if args.output:
        print(f"tokens written to {args.output} (mode 0600)", file=sys.stderr)
    return EXIT_OK


def register(subparsers: Any) -> None:
    group: argparse.ArgumentParser = subparsers.add_parser(
        "acl", help="Consul ACL policies and tokens", description="Consul ACL policies and tokens."
    )
    commands = group.add_subparsers(dest="acl_command", metavar="ACL_COMMAND", required=True)
    text = "Create or update the policies and tokens of an ACL file (idempotent; needs a management token)."
    setup: argparse.ArgumentParser = commands.add_parser("setup", help=text, description=text)
    setup.add_argument("file", help="ACL file, e.g. config/acl.yaml")
    setup.add_argument(
        "--output", "-o", metavar="FILE", help="write the tokens here (0600) instead of stdout"
    )
    add_connection_flags(setup)
    setup.set_defaults(handler=_setup)
