"""Liveness benchmark: what heartbeating agents cost Consul and the client, per design, side by side.

Run with ``python -m benchmarks.liveness [--fleet 100 300 1000 5000] [--window 65] [--exits 1000]``. It
starts a single-server Consul with its state on disk (as deployed: a ``-dev`` agent hides the cost, since
it writes no check state file) for each design and fleet size, one after the other in the same run, each on
a Consul of its own:

* ``per_agent_ttl``: today's design before issue 15, one TTL check per agent, each heartbeat one
  ``PUT /v1/agent/check/update`` (``register_agent(liveness="agent")`` + ``heartbeat`` every TTL/3);
* ``process_anchor``: ``registry.session(..., liveness="process")`` agents: one anchor TTL check per
  process and type, an alias check per agent, heartbeats that write only on change;
* ``process_http``: ``registry.session(..., liveness="http")`` agents: Consul runs an HTTP check per agent
  (every TTL - 1 s) against this process's one health server; heartbeats write only on change. This
  process's CPU includes the health server answering Consul's checks;
* ``tcp_check_floor``: no library at all, the floor of any design where Consul runs a check per agent: bare
  services, each with a Consul TCP check (connect and close, the cheapest check Consul 1.8.7 runs) every
  TTL - 1 s against one bare asyncio listener of this process.

The anchor design's cost is quadratic on Consul 1.8.7 (every alias check copies all of its Consul agent's
checks once a minute, and again whenever its anchor's status changes), so the window must hold a whole
minute: the default is 65 s. The same quadratic cost delays detection: ``anchor_detection_s`` is the time
from its anchor turning critical (its heartbeats stopped, the check failed by hand) until every agent of
it is critical, the part of the TTL + 1 s bound left after the anchor's TTL. The anchor design is not run
at fleet sizes above ``--anchor-max`` (default 1,000): on a 2-core machine its quadratic cost would starve
every other row.

The catalog verification of every ``verify_every`` heartbeats (one read-only transaction per agent and
minute, the same in both designs, measured by ``benchmarks.writes``) is off in both: it is not liveness, and
a fleet set up in a burst verifies in a burst that lands in or out of the window by chance.
Each design's agents (default TTL 15 s, a heartbeat every 5 s) heartbeat for ``--window`` seconds; the
figures are Consul's CPU (``/proc/<pid>/stat``) and this process's CPU over the window, per second and per
agent-interval, beside the idle Consul CPU measured just before (the floor), with the load average. Then
``--exits`` default sessions (one TTL per agent) exit at once: every deregistration must succeed; the wall
time is the bound reported.
Writes reports/bench-liveness.json and docs/img/liveness-cost.png.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from unittest import mock

from benchmarks._proc import cpu_seconds
from benchmarks._stats import benchmark_parser, write_report
from consul_agents import AgentRegistration, AgentRegistry, ConsulAgentsError
from consul_agents import _integrity as integrity
from consul_agents import _wire as wire
from consul_agents.dev import ConsulDevServer

REPORT = Path("reports/bench-liveness.json")
PLOT = Path("docs/img/liveness-cost.png")
TTL = 15.0


def _registration(prefix: str, i: int) -> AgentRegistration:
    return AgentRegistration(
        agent_type=f"{prefix}{i // 500}",
        agent_id=f"{prefix}-{i}",
        capabilities=["plan"],
        endpoint=f"http://127.0.0.1:{10000 + i}",
        ttl=TTL,
    )


async def _bounded(calls: list[Callable[[], Awaitable[Any]]], width: int = 16) -> None:
    gate = asyncio.Semaphore(width)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


def _no_id_scan() -> Any:
    """Setting up: registrations skip the catalog-wide check of who holds the id (a scan of every check,
    so quadratic over a 5,000-agent fleet); what is measured afterwards is unchanged (see benchmarks.writes
    for that check's own cost)."""
    return mock.patch.object(integrity, "id_holder", return_value=None)


async def _window(pid: int, seconds: float) -> tuple[float, float]:
    """Consul's and this process's CPU seconds over ``seconds`` of wall time."""
    consul0, own0 = cpu_seconds(pid), cpu_seconds()
    await asyncio.sleep(seconds)
    return cpu_seconds(pid) - consul0, cpu_seconds() - own0


async def _per_agent(addr: str, pid: int, n: int, window: float) -> dict[str, Any]:
    async with AgentRegistry(addr, cache=False, timeout=120) as registry:
        registry.verify_every = 0
        regs = [_registration("ttl", i) for i in range(n)]
        with _no_id_scan():
            await _bounded([lambda r=r: registry.register_agent(r) for r in regs])  # type: ignore[misc]
        stop = asyncio.Event()

        async def beat(agent_id: str, offset: float) -> None:
            await asyncio.sleep(offset)
            while not stop.is_set():
                await registry.heartbeat(agent_id)
                await asyncio.sleep(TTL / 3)

        tasks = [asyncio.create_task(beat(r.agent_id or "", i * TTL / 3 / n)) for i, r in enumerate(regs)]
        await asyncio.sleep(TTL / 3)  # every heartbeat loop running
        result = await _measure(registry, pid, n, window)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _bounded([lambda r=r: registry.deregister_agent(r.agent_id or "") for r in regs])  # type: ignore[misc]
    return result


async def _process_anchor(
    addr: str, pid: int, n: int, window: float, liveness: Literal["process", "http"] = "process"
) -> dict[str, Any]:
    async with AgentRegistry(addr, cache=False, timeout=120) as registry, AsyncExitStack() as stack:
        registry.verify_every = 0
        regs = [_registration("anc" if liveness == "process" else "htp", i) for i in range(n)]
        with _no_id_scan():
            for start in range(0, n, 16):
                batch = regs[start : start + 16]
                await asyncio.gather(
                    *(stack.enter_async_context(registry.session(r, liveness=liveness)) for r in batch)
                )
        await asyncio.sleep(TTL / 3)
        result = await _measure(registry, pid, n, window)
        if liveness == "process":
            result["anchor_detection_s"] = await _anchor_detection(registry, n)
        started = time.monotonic()
        try:
            await stack.aclose()
        except ConsulAgentsError as exc:  # reported: the figures above stand
            result["teardown_error"] = str(exc)[:200]
        result["teardown_s"] = round(time.monotonic() - started, 2)
        return result


async def _anchor_detection(registry: AgentRegistry, n: int) -> float:
    """Stop heartbeating every anchor and fail it: the seconds until all ``n`` agents read critical."""
    anchors = list(registry._liveness._anchors.values())
    for anchor in anchors:
        if anchor.task is not None:
            anchor.task.cancel()
    await asyncio.gather(*(a.task for a in anchors if a.task is not None), return_exceptions=True)
    started = time.monotonic()
    for anchor in anchors:
        await registry.gateway.put("fail", f"/v1/agent/check/fail/{wire.anchor_check_id(anchor.anchor_id)}")
    while time.monotonic() - started < 120:
        checks = await registry.gateway.get(
            "read",
            "/v1/agent/checks",
            params={"filter": 'Status == "critical" and CheckID matches "^alive:"'},
        )
        if len(checks.body or {}) >= n:
            break
        await asyncio.sleep(0.05)
    return round(time.monotonic() - started, 2)


class _Closer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def _tcp_floor(addr: str, pid: int, n: int, window: float) -> dict[str, Any]:
    """Bare services with a Consul TCP check each against one listener of this process (no library)."""
    listener = await asyncio.get_running_loop().create_server(_Closer, "127.0.0.1", 0, backlog=1024)
    port = listener.sockets[0].getsockname()[1]
    interval = wire.format_duration(timedelta(seconds=TTL - 1))
    try:
        async with AgentRegistry(addr, cache=False, timeout=120) as registry:
            gateway = registry.gateway

            def body(i: int) -> dict[str, Any]:
                check = {
                    "CheckID": f"tcp-{i}",
                    "Name": "tcp",
                    "TCP": f"127.0.0.1:{port}",
                    "Interval": interval,
                }
                return {
                    "ID": f"tcp-{i}",
                    "Name": "tcp-floor",
                    "Port": 10000 + i,
                    "Check": check | {"Timeout": "1s"},
                }

            register = "/v1/agent/service/register"
            await _bounded([functools.partial(gateway.put, "register", register, body(i)) for i in range(n)])
            await _every_check_passing(registry, deadline=2 * TTL)  # each has run once: none starts passing
            result = await _measure(registry, pid, n, window)
            deregister = "/v1/agent/service/deregister/tcp-"
            await _bounded(
                [functools.partial(gateway.put, "deregister", f"{deregister}{i}") for i in range(n)]
            )
    finally:
        listener.close()
    return result


async def _not_passing(registry: AgentRegistry) -> int:
    """How many checks of the local Consul agent are anything but passing."""
    failing = await registry.gateway.get("read", "/v1/agent/checks", params={"filter": 'Status != "passing"'})
    return len(failing.body or {})


async def _every_check_passing(registry: AgentRegistry, deadline: float) -> None:
    """Wait (bounded) until every check of the local Consul agent is passing."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not await _not_passing(registry):
            return
        await asyncio.sleep(0.2)


async def _settle(registry: AgentRegistry, quiet: float = 2.0, deadline: float = 120.0) -> None:
    """Wait (bounded) until Consul's catalog index has not moved for ``quiet`` seconds: the window then
    measures heartbeats, not the tail of the registrations' catalog syncs."""
    end = time.monotonic() + deadline
    last, since = -1, time.monotonic()
    while time.monotonic() < end:
        index = (await registry.gateway.get("settle", "/v1/catalog/services")).meta.index
        if index != last:
            last, since = index, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.2)


async def _measure(registry: AgentRegistry, pid: int, n: int, window: float) -> dict[str, Any]:
    await _settle(registry)
    consul_s, client_s = await _window(pid, window)
    intervals = n * window / (TTL / 3)
    not_passing = await _not_passing(registry)
    return {
        "not_passing_at_end": not_passing,
        "agents": n,
        "window_s": window,
        "consul_cpu_pct": round(100 * consul_s / window, 2),
        "client_cpu_pct": round(100 * client_s / window, 2),
        "client_cpu_us_per_agent_interval": round(1e6 * client_s / intervals, 1),
        "consul_cpu_us_per_agent_interval": round(1e6 * consul_s / intervals, 1),
        "load_average": os.getloadavg()[0],
    }


async def _mass_exit(addr: str, n: int) -> dict[str, Any]:
    """``n`` sessions exit at once: how many deregistrations failed, and how long all took."""
    failures: list[str] = []
    async with AgentRegistry(addr, cache=False) as registry:
        regs = [_registration("exit", i) for i in range(n)]
        entered = asyncio.Event()
        release = asyncio.Event()
        gate = asyncio.Semaphore(64)  # entering is not what is measured: 64 registrations at a time
        count = 0

        async def one(r: AgentRegistration) -> None:
            nonlocal count
            session = registry.session(r)
            async with gate:
                await session.__aenter__()
            count += 1
            if count == n:
                entered.set()
            await release.wait()
            try:
                await session.__aexit__(None, None, None)
            except Exception as exc:
                failures.append(type(exc).__name__)

        tasks = [asyncio.create_task(one(r)) for r in regs]
        await asyncio.wait_for(entered.wait(), 600)
        started = time.monotonic()
        release.set()
        await asyncio.gather(*tasks)
        wall = time.monotonic() - started
        left = (await registry.gateway.get("left", "/v1/agent/services")).body or {}
    return {
        "sessions": n,
        "failures": len(failures),
        "failure_kinds": sorted(set(failures)),
        "wall_s": round(wall, 2),
        "services_left": len(left),
        "load_average": os.getloadavg()[0],
    }


async def _on_fresh_consul(design: Callable[[str, int], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """``design(addr, pid)`` on a Consul server started for it alone: no row inherits another's leftovers
    (a grown heap, tombstones, syncs in flight). Its idle CPU, measured just before, goes with it."""
    with ConsulDevServer(dev_mode=False) as server:
        server.wait_settled()
        pid = server.pid
        assert pid is not None
        idle, _ = await _window(pid, 5.0)
        result = await design(server.http_addr, pid)
        result["idle_consul_cpu_pct"] = round(100 * idle / 5.0, 2)
        return result


async def run(fleet: list[int], window: float, exits: int, anchor_max: int) -> dict[str, Any]:
    results: dict[str, Any] = {"fleet": []}
    for n in fleet:
        row: dict[str, Any] = {"agents": n}
        designs: dict[str, Callable[[str, int], Awaitable[dict[str, Any]]]] = {
            "per_agent_ttl": functools.partial(_per_agent, n=n, window=window),
            "process_anchor": functools.partial(_process_anchor, n=n, window=window),
            "process_http": functools.partial(_process_anchor, n=n, window=window, liveness="http"),
            "tcp_check_floor": functools.partial(_tcp_floor, n=n, window=window),
        }
        for name, design in designs.items():
            if name == "process_anchor" and n > anchor_max:
                row["process_anchor_skipped"] = f"{n} agents > --anchor-max {anchor_max}: quadratic on Consul"
                continue
            row[name] = await _on_fresh_consul(design)
        print(row, flush=True)
        results["fleet"].append(row)
    if exits:
        with ConsulDevServer(dev_mode=False) as server:
            server.wait_settled()
            results["mass_exit"] = await _mass_exit(server.http_addr, exits)
        print(results["mass_exit"], flush=True)
    return results


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    for ax, metric, title in (
        (axes[0], "consul_cpu_pct", "Consul CPU (% of a core)"),
        (axes[1], "client_cpu_pct", "client CPU (% of a core)"),
    ):
        for design, label in (
            ("per_agent_ttl", "one TTL per agent (default)"),
            ("process_anchor", 'anchor + alias (liveness="process")'),
            ("process_http", 'Consul-run HTTP checks (liveness="http")'),
            ("tcp_check_floor", "floor: a bare Consul TCP check per agent"),
        ):
            points = [(row["agents"], row[design]) for row in rows if design in row]
            line = ax.plot([x for x, _ in points], [r[metric] for _, r in points], marker="o", label=label)
            for x, r in points:
                if r.get("not_passing_at_end"):  # the design did not keep up: say so on the point
                    ax.annotate(
                        f"{r['not_passing_at_end']} checks critical",
                        (x, r[metric]),
                        textcoords="offset points",
                        xytext=(-10, -14),
                        ha="right",
                        fontsize=8,
                        color=line[0].get_color(),
                    )
        ax.set_xscale("log")
        ax.set_xlabel("agents heartbeating (TTL 15 s, one process)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Heartbeat cost on a server-mode Consul 1.8.7 with a data dir")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = benchmark_parser(__doc__ or "", REPORT, consul_addr=False, iterations=None)
    parser.add_argument("--fleet", type=int, nargs="+", default=[100, 300, 1000, 5000])
    parser.add_argument(
        "--window", type=float, default=65.0, help="seconds measured per design and size (a minute or more)"
    )
    parser.add_argument("--anchor-max", type=int, default=1000, help="largest fleet the anchor design runs")
    parser.add_argument("--exits", type=int, default=1000, help="sessions exiting at once (0: skip)")
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the report")
    args = parser.parse_args()
    if args.plot_only:
        _plot(json.loads(args.output.read_text())["results"]["fleet"], args.plot)
        return
    results = asyncio.run(run(args.fleet, args.window, args.exits, args.anchor_max))
    write_report(args.output, results, consul="1.8.7 server mode, data dir", ttl_s=TTL)
    _plot(results["fleet"], args.plot)


if __name__ == "__main__":
    main()
