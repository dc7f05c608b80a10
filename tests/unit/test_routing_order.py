"""Datacenter order for failover and region checks (pure)."""

from __future__ import annotations

import pytest

from consul_agents import InvalidAgentError
from consul_agents._routing import check_region, datacenter_order

KNOWN = ["dc1", "dc3", "dc2", "dc4"]  # Consul's order: nearest first


@pytest.mark.parametrize(
    ("configured", "max_failover", "expected"),
    [
        (None, 2, ["dc1", "dc3", "dc2"]),
        (None, 0, ["dc1"]),
        (None, 10, ["dc1", "dc3", "dc2", "dc4"]),
        (["dc4", "dc2"], 2, ["dc1", "dc4", "dc2"]),
        (["dc4", "gone", "dc1", "dc4", "dc2"], 5, ["dc1", "dc4", "dc2"]),
        (["dc4", "dc2"], 1, ["dc1", "dc4"]),
        ([], 3, ["dc1"]),
    ],
)
def test_datacenter_order(configured: list[str] | None, max_failover: int, expected: list[str]) -> None:
    """Local first, then Consul's nearest-first order or the configured one (unknown, duplicate and local
    names skipped), capped at max_failover others."""
    assert datacenter_order("dc1", KNOWN, configured=configured, max_failover=max_failover) == expected


def test_local_not_first_in_consul_list() -> None:
    """The local datacenter leads even when Consul's estimate lists another first."""
    assert datacenter_order("dc2", KNOWN, max_failover=1) == ["dc2", "dc1"]


def test_unknown_region_is_invalid_input() -> None:
    """A region Consul does not know raises InvalidAgentError naming the field and the known datacenters."""
    assert check_region("dc2", KNOWN) == "dc2"
    with pytest.raises(InvalidAgentError, match=r"dc9.*dc1, dc3") as caught:
        check_region("dc9", KNOWN)
    assert caught.value.field == "region"
