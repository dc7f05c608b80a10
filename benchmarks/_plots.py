"""The report's PNG plots (matplotlib, from the ``bench`` extra; imported only when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot_fleet", "plot_leader_loss", "plot_steady"]


def plot_fleet(rows: list[dict[str, Any]], path: Path) -> None:
    """Discovery latency (median, with the p90 as the top of the bar) against fleet size."""
    sizes = [r["agents"] for r in rows]
    fig, ax = plt.subplots(figsize=(10.5, 4.5), dpi=110)
    series = [
        ("discover_whole_fleet_ms", "whole fleet, direct (cache=False): every agent", "o-"),
        ("discover_one_type_ms", "one type (100 agents), direct", "s-"),
        ("discover_type_and_capability_ms", "one type + capability (25 agents), direct", "^-"),
        ("discover_one_type_consul_http_ms", "one type, bare HTTP GET to Consul (no parsing)", "x--"),
        ("discover_whole_fleet_cached_ms", "whole fleet from the cache (default)", "o:"),
        ("discover_one_type_cached_ms", "one type from the cache (default)", "s:"),
    ]
    for key, label, style in series:
        p50 = [r[key]["p50"] for r in rows]
        p90 = [r[key]["p90"] for r in rows]
        ax.errorbar(
            sizes,
            p50,
            yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p90, strict=True)]],
            fmt=style,
            capsize=3,
            label=label,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("registered agents (100 per type)")
    ax.set_ylabel("latency, ms (median; bar to p90)")
    ax.set_title("Discovery latency against fleet size (one Consul 1.8.7 dev agent, 2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_leader_loss(result: dict[str, Any], path: Path) -> None:
    """Every operation as a point at (start time, duration); failures as red crosses; the election shaded."""
    events = result["events"]
    zero = events["kill"]
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=110)
    styles = {
        "discover": ("discover from the cache (default)", "tab:blue", "."),
        "discover-direct": ("discover directly, stale_reads=True", "tab:olive", "."),
        "discover-leader": ("discover directly without stale reads (one task, contrast)", "tab:cyan", "d"),
        "register": ("register (agent only)", "tab:green", "o"),
        "register-kv": ("register with KV metadata (needs a leader)", "tab:orange", "s"),
    }
    for kind, (label, color, marker) in styles.items():
        ok = [(op[1] - zero, op[2] * 1000) for op in result["ops"] if op[0] == kind and op[3] is None]
        if ok:
            ax.scatter(
                *zip(*ok, strict=True),
                s=8 if kind.startswith("discover") else 16,
                color=color,
                marker=marker,
                label=label,
                alpha=0.6,
            )
    failed_kinds = sorted({op[0] for op in result["ops"] if op[3] and op[0] != "catalog"})
    for kind in failed_kinds:
        failed = [(op[1] - zero, max(op[2] * 1000, 0.1)) for op in result["ops"] if op[0] == kind and op[3]]
        errors = ", ".join(sorted({op[3] for op in result["ops"] if op[0] == kind and op[3]}))
        color = "red" if kind.startswith("register") else "black"
        ax.scatter(
            *zip(*failed, strict=True), s=40, color=color, marker="x", label=f"{kind} failed ({errors})"
        )
    lags = [
        (ack - zero, (result["visible_at"][a] - ack) * 1000)
        for a, ack in result["acknowledged"].items()
        if a in result["visible_at"]
    ]
    if lags:
        ax.scatter(
            *zip(*lags, strict=True),
            s=14,
            color="purple",
            marker="+",
            label="registration acknowledged -> visible in catalog",
        )
    ax.axvspan(0, events["new_leader"] - zero, color="grey", alpha=0.2, label="no leader (election)")
    ax.axvline(0, color="black", lw=1)
    ax.text(0.05, 0.02, "leader SIGKILLed", transform=ax.get_xaxis_transform(), va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the leader was killed")
    ax.set_ylabel("operation latency, ms")
    ax.set_title(f"Leader loss under load: {result['old_leader']} killed, {result['new_leader']} elected")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_steady(runs: dict[str, list[list[float]]], title: str, path: Path) -> None:
    """The distribution of discovery latency in the steady-state runs, from their (percent, ms) quantiles."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, quantiles_ms in runs.items():
        ax.plot([ms for _, ms in quantiles_ms], [q for q, _ in quantiles_ms], label=label)
    ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("discovery latency, ms")
    ax.set_ylabel("% of discoveries at or below")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
