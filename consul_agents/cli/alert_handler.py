"""``consul-agents alert-handler``: a ``consul watch`` handler that turns unhealthy agents into alerts.

For operators without Prometheus::

    consul watch -type=checks -state=critical consul-agents alert-handler --post http://am:9093/api/v2/alerts
    consul watch -type=service -service=agent-planner consul-agents alert-handler

Consul runs the handler on every change with the watch's result on stdin (see
:mod:`consul_agents._wire_watch`); the handler prints one JSON line per alert (Alertmanager's API v2 shape)
and, with ``--post``, sends them in one POST. It needs no token: it reads only what Consul hands it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from consul_agents._wire_watch import alerts_from_watch
from consul_agents.cli._common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, positive_number, printable

__all__ = ["MAX_INPUT", "register"]

#: Most bytes read from stdin: a watch result of 10,000 entries is about 15 MB.
MAX_INPUT = 64 * 1024 * 1024


def _post(url: str, alerts: list[dict[str, Any]], timeout: float) -> str | None:
    """POST the alerts as JSON; None on a 2xx answer, else what went wrong."""
    request = urllib.request.Request(
        url, data=json.dumps(alerts).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(1024)
    except urllib.error.HTTPError as exc:
        with exc:
            return f"{url} answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url} could not be reached: {exc}"
    return None


def _handler(args: argparse.Namespace) -> int:
    raw = sys.stdin.buffer.read(MAX_INPUT + 1)
    if len(raw) > MAX_INPUT:
        print(f"consul-agents alert-handler: stdin holds more than {MAX_INPUT} bytes", file=sys.stderr)
        return EXIT_USAGE
    try:
        alerts = alerts_from_watch(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError included
        message = f"stdin is not a `consul watch -type=checks` or `-type=service` result: {exc}"
        print(f"consul-agents alert-handler: {printable(message)}", file=sys.stderr)
        return EXIT_USAGE
    now = datetime.now(UTC)
    bodies = [alert.to_alertmanager(now) for alert in alerts]
    for body in bodies:
        print(json.dumps(body), flush=True)
    if args.post and bodies:
        problem = _post(args.post, bodies, args.timeout)
        if problem:
            print(f"consul-agents alert-handler: {printable(problem)}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    return EXIT_OK


def register(subparsers: Any) -> None:
    description = (
        "A `consul watch` handler: read the watch's result (-type=checks or -type=service) on stdin and "
        "print one JSON alert per unhealthy agent (and per type with no passing agent), in Alertmanager's "
        "API v2 shape; with --post, also POST them. Draining agents and agents in maintenance are not alerts."
    )
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "alert-handler", help="Turn a `consul watch` result into alerts.", description=description
    )
    parser.add_argument(
        "--post",
        metavar="URL",
        help="POST the alerts here as a JSON array (e.g. http://alertmanager:9093/api/v2/alerts)",
    )
    parser.add_argument(
        "--timeout", type=positive_number, default=10.0, help="seconds to wait for --post (default 10)"
    )
    parser.set_defaults(handler=_handler)
