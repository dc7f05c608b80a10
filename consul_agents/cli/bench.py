"""``consul-agents bench``: run the benchmark suites of a source checkout (its ``benchmarks/`` folder).

Each suite is a module ``benchmarks.<name>`` with ``main(argv) -> int`` that writes its JSON report under
``reports/``; this command only finds and runs them, so ``make bench`` and the CLI produce the same reports.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import shlex
import sys
from types import ModuleType
from typing import Any

from consul_agents.cli._common import EXIT_ERROR, EXIT_OK, EXIT_USAGE

__all__ = ["register"]


def _benchmarks() -> ModuleType | None:
    """The ``benchmarks`` package of the checkout in the current directory, if there is one."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module("benchmarks")
    except ImportError:
        return None


def suites(package: ModuleType) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def _handler(args: argparse.Namespace) -> int:
    package = _benchmarks()
    if package is None:
        print(
            "consul-agents: no benchmarks/ here; run bench from a source checkout of consul-agents "
            "(the suites are not installed with the package)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    available = suites(package)
    if args.list:
        print("\n".join(available))
        return EXIT_OK
    chosen = args.suites or available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        print(
            f"consul-agents: unknown suite(s) {', '.join(unknown)}; have: {', '.join(available)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    status = EXIT_OK
    for name in chosen:
        print(f"== benchmark {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        status = max(status, int(module.main(shlex.split(args.args))))
    return status


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="Run the benchmark suites (reports/*.json).",
        description="Run benchmark suites from a source checkout; each writes a JSON report under reports/.",
    )
    parser.add_argument("suites", nargs="*", metavar="SUITE", help="suites to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument(
        "--args", default="", help="arguments for each suite, e.g. --args='--iterations 50 --consul-addr URL'"
    )
    parser.set_defaults(handler=_handler)
