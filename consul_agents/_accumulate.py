"""Counters and histograms that cost a few plain additions per update, folded into Prometheus when scraped.

prometheus-client's own ``Counter.inc`` and ``Histogram.observe`` walk several layers of Python (label
checks, a lock per value, the buckets searched one by one): about 2 us for the latency observation and
outcome count of every registry call, as much as the rest of a cached hit. These keep the same numbers as
plain accumulators and hand them to Prometheus as a custom collector (:meth:`collect`, called by
``generate_latest`` and the ``/metrics`` route): the exposition is the one prometheus-client writes for its
own types, ``_created`` series included unless prometheus-client is told to leave them out.

Threads: an update takes no lock (an uncontended ``threading.Lock`` alone cost 0.2 to 0.6 us here). Each
update is a few bytecodes between which CPython, with its GIL, never switches threads (the interpreter
checks for a switch on calls and backward jumps, and an update of a float attribute or a list item makes
none), so no count is lost; a free-threaded build (3.13t) could lose one under contention.

The API is the subset the library uses: ``labels(*values)`` returning a child with ``inc()`` or
``observe()``, children looked up once by their caller.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client import REGISTRY, CollectorRegistry, metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["FastCounter", "FastHistogram"]


#: The ``le`` label of a bucket as prometheus-client writes it (Go's float formatting).
_bucket_name = cast(Callable[[float], str], floatToGoString)


def _use_created() -> bool:
    """Whether prometheus-client writes ``_created`` series (PROMETHEUS_DISABLE_CREATED_SERIES, or its
    ``disable_created_metrics()``), read at scrape time as its own types do."""
    return bool(getattr(metrics, "_use_created", True))


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class _HistogramChild:
    __slots__ = ("_bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        #: Observations per bucket (not cumulative); the last bucket is +Inf.
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # the first bucket whose upper bound is >= amount, as prometheus-client's own Histogram counts
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1
        self.total += amount

    def snapshot(self) -> tuple[list[int], float]:
        """The counts and the sum (a scrape racing an update may see the one without the other, as
        prometheus-client's separately locked values may)."""
        return list(self.counts), self.total


class _Family(Collector):
    """Children by label values, registered in prometheus-client's default registry."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        #: Guards only the adding of children (rare), never an update.
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def _key(self, values: tuple[str, ...]) -> tuple[str, ...]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {len(values)} values")
        return tuple(str(value) for value in values)

    def describe(self) -> list[Metric]:
        """The metric's name and type only, so the registry checks names without collecting."""
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError


class FastCounter(_Family):
    """A labelled counter, exposed as ``<name>_total`` (and ``<name>_created``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self._children: dict[tuple[str, ...], _CounterChild] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str) -> _CounterChild:
        key = self._key(values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, _CounterChild())
        return child

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = _use_created()
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            family.add_metric(list(values), child.value, created=child.created if created else None)
        yield family


class FastHistogram(_Family):
    """A labelled histogram with fixed buckets, exposed as prometheus-client's Histogram is."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = tuple(bounds)
        self._children: dict[tuple[str, ...], _HistogramChild] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str) -> _HistogramChild:
        key = self._key(values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, _HistogramChild(self._bounds))
        return child

    def observe(self, amount: float) -> None:
        """Observe on the histogram without labels."""
        self.labels().observe(amount)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = _use_created()
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            counts, total = child.snapshot()
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(self._bounds, counts, strict=True):
                cumulative += count
                buckets.append((_bucket_name(bound), float(cumulative)))
            family.add_metric(list(values), buckets, total)
            if created:
                labels = dict(zip(self.labelnames, values, strict=True))
                family.samples.append(Sample(self.name + "_created", labels, child.created, None, None))
        yield family
