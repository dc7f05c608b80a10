"""Entries skipped as untrusted input are counted and logged once per entry and reason: entries too malformed
to name their service are told apart by the service queried, so one test's (or one service's) malformed
entry never hides another's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from consul_agents._metrics import record_skipped
from consul_agents._wire_read import Skipped, read_entries, read_entry


def skipped_count(reason: str) -> float:
    return REGISTRY.get_sample_value("consul_agents_entries_skipped_total", {"reason": reason}) or 0.0


NAMELESS: list[Any] = [None, {"Service": None}, {"Service": {"ID": 7}}, {"Node": {}, "Checks": []}]


@pytest.mark.parametrize("entry", NAMELESS, ids=["null", "null-service", "bad-id-type", "no-service"])
def test_a_nameless_entry_is_reported_under_the_service_queried(entry: Any) -> None:
    """read_entry of an entry with no service name and ID gives a malformed Skipped naming the service
    queried (read_entries passes it on)."""
    result = read_entry(entry, queried="agent-alpha")
    assert isinstance(result, Skipped)
    assert (result.reason, result.service) == ("malformed", "agent-alpha")
    [listed] = read_entries([entry], queried="agent-beta")
    assert isinstance(listed, Skipped) and listed.service == "agent-beta"


def test_a_nameless_entry_keeps_its_id_when_it_has_one() -> None:
    """An entry whose Service has an ID but no name is reported with that ID, so two of them in one answer
    are two entries."""
    result = read_entry({"Service": {"ID": "x-1", "Service": None}}, queried="agent-alpha")
    assert isinstance(result, Skipped) and result.agent_id == "x-1"


def test_nameless_entries_of_two_services_are_each_counted_once() -> None:
    """A null entry in the answers of two services counts twice, and reading either again counts nothing."""
    first, second = (f"agent-t{uuid.uuid4().hex[:8]}" for _ in range(2))
    before = skipped_count("malformed")
    for service in (first, second, first, second):
        [result] = read_entries([None], queried=service)
        assert isinstance(result, Skipped)
        record_skipped(result, "dc1")
    assert skipped_count("malformed") == before + 2
