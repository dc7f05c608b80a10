"""Which datacenters a discovery asks, in which order. Pure: no I/O.

A request naming a ``region`` asks that datacenter only. Otherwise the local datacenter comes first and,
when it has no matching agent, the others follow: in the order the client was configured with, or else in
Consul's own order for ``/v1/catalog/datacenters``, which is nearest first by its round-trip estimate
(network coordinates). At most ``max_failover`` datacenters besides the local one are tried, so a miss
costs a bounded number of WAN round trips (the discovery loop asks for the whole order and counts only the
datacenters that answer; see :mod:`consul_agents._discovery`).

"Nearest" is only as good as Consul's estimate: on one machine (loopback) every datacenter is a fraction of
a millisecond away and the order changes from run to run. Pin it with ``configured`` (the client's
``failover_datacenters``).
"""

from __future__ import annotations

from collections.abc import Sequence

from consul_agents._errors import InvalidAgentError

__all__ = ["check_region", "datacenter_order"]


def datacenter_order(
    local: str,
    known: Sequence[str],
    *,
    configured: Sequence[str] | None = None,
    max_failover: int = 2,
) -> list[str]:
    """The local datacenter, then up to ``max_failover`` others.

    ``known`` is Consul's list, nearest first. ``configured``, when given, replaces Consul's order; names
    Consul does not know are skipped (a datacenter may be gone for a while), as is the local one.
    """
    order = [local]
    candidates = configured if configured is not None else known
    known_set = set(known)
    for name in candidates:
        if len(order) > max(max_failover, 0):
            break
        if name != local and name in known_set and name not in order:
            order.append(name)
    return order


def check_region(region: str, known: Sequence[str]) -> str:
    """``region`` itself when Consul knows that datacenter; else InvalidAgentError naming the known ones."""
    if region not in known:
        raise InvalidAgentError(
            f"invalid region: {region!r} is not a known Consul datacenter "
            f"(known: {', '.join(known) or 'none'})",
            field="region",
        )
    return region
