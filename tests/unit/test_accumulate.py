"""The plain-accumulator counter and histogram expose exactly what prometheus-client's own types would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consul_agents._accumulate import FastCounter, FastHistogram

BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 0.01, 0.1, 1, 10)
#: Observations on and around every bucket bound, an exact bound included (prometheus counts it in).
OBSERVATIONS = (0.0, 1e-4, 1.5e-4, 2.5e-4, 9e-4, 1e-3, 0.05, 0.1, 0.99, 1.0, 7.0, 10.0, 11.0, 1e6)


def _without_created(text: bytes) -> str:
    """The exposition less the _created samples' values (creation times differ by construction)."""
    return re.sub(r"(_created\{[^}]*\}|_created) \S+", r"\1 T", text.decode())


def test_histogram_exposition_matches_prometheus_client() -> None:
    """Observations land in the same buckets with the same sum and count as prometheus-client's Histogram."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("t_seconds", "help", ["op"], buckets=BUCKETS, registry=ours)
    slow = Histogram("t_seconds", "help", ["op"], buckets=BUCKETS, registry=theirs)
    for n, value in enumerate(OBSERVATIONS):
        op = "a" if n % 3 else "b"
        fast.labels(op).observe(value)
        slow.labels(op).observe(value)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))


def test_counter_exposition_matches_prometheus_client() -> None:
    """Increments per label pair add up to the same ``_total`` samples as prometheus-client's Counter."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastCounter("t_ops", "help", ["op", "outcome"], registry=ours)
    slow = Counter("t_ops", "help", ["op", "outcome"], registry=theirs)
    for n in range(25):
        labels = ("discover", "ok" if n % 4 else "timeout")
        fast.labels(*labels).inc()
        slow.labels(*labels).inc()
    fast.labels("select", "ok").inc(2.5)
    slow.labels("select", "ok").inc(2.5)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(ours).decode())}
    values = {
        (s.name, s.labels["outcome"]): s.value for s in families["t_ops"].samples if s.name.endswith("total")
    }
    assert values[("t_ops_total", "timeout")] == 7


def test_counter_refuses_to_go_down_and_wrong_label_counts() -> None:
    """A negative increment and a wrong number of label values are refused, as prometheus-client does."""
    counter = FastCounter("t_refuse", "help", ["op"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        counter.labels("x", "y")


def test_name_clash_is_refused_by_the_registry() -> None:
    """Registering a name already taken fails at once, as it does for prometheus-client's types."""
    registry = CollectorRegistry()
    FastHistogram("t_clash_seconds", "help", buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Histogram("t_clash_seconds", "help", buckets=BUCKETS, registry=registry)
