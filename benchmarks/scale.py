"""Scale and fault report: steady state with 1,000 agents, a fleet sweep to 10,000, leader loss on a
3-server cluster, re-registration after a dev agent restart, and SIGKILLed sidecars, each against real
Consul processes that this command starts.

    make bench-scale                     # all of them, about 12 minutes on 2 cores
    python -m benchmarks.scale --only steady,leader --seconds 20

Writes reports/scale.json and, with matplotlib (``pip install -e '.[bench]'``), the plots under docs/img/.
The figures are described in docs/scale-and-faults.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._fleet import run_fleet_sweep
from benchmarks._leader_loss import run_leader_loss
from benchmarks._restart import run_dev_restart
from benchmarks._sidecar_kill import run_sidecar_kill
from benchmarks._stats import write_report
from benchmarks._steady import run_steady
from consul_agents.cluster import ConsulCluster
from consul_agents.dev import ConsulDevServer

REPORT = Path("reports/scale.json")
IMAGES = Path("docs/img")
SECTIONS = ("steady", "steady-cached", "fleet", "leader", "restart", "sidecar")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _steady(args: argparse.Namespace, cache: bool = False) -> dict[str, Any]:
    # as deployed (state on disk): every heartbeat costs the server a write there, which -dev does not pay
    with ConsulDevServer(dev_mode=False) as server:
        server.wait_settled()
        assert server.pid is not None
        result = asyncio.run(
            run_steady(
                server.http_addr,
                server.pid,
                agents=args.agents,
                discoverers=args.discoverers,
                seconds=args.seconds,
                think=args.think,
                cache=cache,
            )
        )
    return result.summary()


def _fleet(args: argparse.Namespace) -> list[dict[str, Any]]:
    sizes = tuple(int(s) for s in args.sizes.split(","))
    with ConsulDevServer() as server:
        server.wait_settled()
        assert server.pid is not None
        return asyncio.run(
            run_fleet_sweep(
                server.http_addr,
                server.pid,
                sizes=sizes,
                progress=lambda row: _log(f"fleet {row['agents']}: {json.dumps(row)}"),
            )
        )


def _leader(args: argparse.Namespace) -> dict[str, Any]:
    with ConsulCluster() as cluster:
        result = asyncio.run(
            run_leader_loss(cluster, "ll", agents=args.leader_agents, discoverers=10, before=5, after=10)
        )
    report = result.as_dict()
    kill, new_leader = result.events["kill"], result.events["new_leader"]
    writes = [op for op in result.ops if op.kind in ("register", "register-kv")]
    lag = [
        result.visible_at[a] - max(t, new_leader)
        for a, t in result.acknowledged.items()
        if a in result.visible_at
    ]

    def direct(kind: str) -> dict[str, Any]:
        durations = [op.duration for op in result.ops if op.kind == kind]
        return {
            "discoveries": len(durations),
            "failures": len(result.failures(kind)),
            "max_ms": round(1000 * max(durations, default=0), 1),
        }

    report["summary"] = {
        "election_s": round(new_leader - kill, 2),
        "discoveries": sum(1 for op in result.ops if op.kind == "discover"),
        "discovery_failures": len(result.failures("discover")),
        "max_discovery_ms": round(1000 * max(op.duration for op in result.ops if op.kind == "discover"), 1),
        "direct_stale": direct("discover-direct"),
        "without_stale_reads": direct("discover-leader"),
        "writes": len(writes),
        "write_failures": {kind: len(result.failures(kind)) for kind in ("register", "register-kv")},
        "write_failure_errors": sorted({op.error or "" for op in writes if op.error}),
        "max_write_s": round(max(op.duration for op in writes), 2),
        "first_kv_write_ok_after_new_leader_s": round(
            min(
                (
                    op.start + op.duration - new_leader
                    for op in writes
                    if op.kind == "register-kv" and op.error is None and op.start + op.duration > new_leader
                ),
                default=float("nan"),
            ),
            2,
        ),
        "acknowledged": len(result.acknowledged),
        "missing_after_recovery": len(result.missing_after_recovery),
        "max_catalog_lag_after_new_leader_s": round(max(lag, default=0.0), 2),
        "heartbeat_errors": result.heartbeat_errors,
    }
    return report


def _restart(args: argparse.Namespace) -> dict[str, Any]:
    # -dev on purpose: a -dev agent forgets every registration when it restarts (what this row measures)
    with ConsulDevServer() as server:
        server.wait_settled()
        return asyncio.run(run_dev_restart(server, agents=args.restart_agents))


def _sidecar(args: argparse.Namespace) -> dict[str, Any]:
    with ConsulDevServer(dev_mode=False) as server:  # the sidecars heartbeat: as deployed
        server.wait_settled()
        return asyncio.run(run_sidecar_kill(server.http_addr, "killed", sidecars=3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--agents", type=int, default=1000, help="steady state: heartbeating agents")
    parser.add_argument("--discoverers", type=int, default=100, help="steady state: concurrent discoverers")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady state: measured seconds")
    parser.add_argument(
        "--think", type=float, default=0.25, help="steady state: mean pause between discoveries"
    )
    parser.add_argument("--sizes", default="100,1000,3000,10000", help="fleet sweep: fleet sizes")
    parser.add_argument("--leader-agents", type=int, default=50, help="leader loss: heartbeating agents")
    parser.add_argument("--restart-agents", type=int, default=100, help="dev agent restart: sessions")
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--plots-only", action="store_true", help="redraw the plots from the report")
    parser.add_argument("--images", type=Path, default=IMAGES)
    args = parser.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; have {SECTIONS}")

    previous: dict[str, Any] = {}
    if args.report.exists():  # a partial run keeps the other sections' last results
        previous = json.loads(args.report.read_text()).get("results", {})
    results: dict[str, Any] = dict(previous)
    if args.plots_only:
        chosen = []
    runners: dict[str, Callable[[argparse.Namespace], Any]] = {
        "steady": _steady,
        "steady-cached": lambda a: _steady(a, cache=True),
        "fleet": _fleet,
        "leader": _leader,
        "restart": _restart,
        "sidecar": _sidecar,
    }
    for section in chosen:
        _log(f"{section}: starting (load average {os.getloadavg()[0]:.1f})")
        before = os.getloadavg()[0]
        started = time.monotonic()
        value = runners[section](args)
        results[section] = value
        load = {
            "load_average_1m_before": round(before, 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
            "seconds": round(time.monotonic() - started, 1),
        }
        if isinstance(value, dict):
            value["machine_load"] = load
        else:
            results[f"{section}_machine_load"] = load
        _log(f"{section}: done in {load['seconds']} s")
        write_report(args.report, results, suite="scale")
    _plot(results, args.images, [s for s in SECTIONS if s in results])
    for section in chosen:
        _log(f"{section}: {json.dumps(_brief(results[section]))}")
    return 0


def _brief(value: Any) -> Any:
    """A section's result without its raw samples, for the console."""
    if isinstance(value, dict):
        if "summary" in value:
            return value["summary"]
        return {k: v for k, v in value.items() if k != "latency_quantiles_ms"}
    return value


def _plot(results: dict[str, Any], images: Path, chosen: list[str]) -> None:
    try:
        from benchmarks import _plots
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return
    images.mkdir(parents=True, exist_ok=True)
    if "fleet" in chosen:
        _plots.plot_fleet(results["fleet"], images / "fleet-latency.png")
    if "leader" in chosen:
        _plots.plot_leader_loss(results["leader"], images / "leader-loss.png")
    runs = {
        f"{'from the cache' if r['cache'] else 'direct (cache=False)'}: {r['discoveries']} discoveries": r
        for r in (results.get("steady"), results.get("steady-cached"))
        if r and "cache" in r
    }
    if runs:
        s = next(iter(runs.values()))
        _plots.plot_steady(
            {label: r["latency_quantiles_ms"] for label, r in runs.items()},
            f"Steady state: {s['agents']} agents heartbeating, {s['discoverers']} discoverers, "
            f"{s['seconds']:g} s each",
            images / "steady-latency.png",
        )


if __name__ == "__main__":
    raise SystemExit(main())
