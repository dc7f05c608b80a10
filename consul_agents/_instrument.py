"""The one hook that gives every registry operation its span, latency histogram and outcome count.

``@instrumented("discover")`` on an AgentRegistry method is all an operation needs: attributes are read
from the call's arguments (models and agent ids) and from its result, so operations never touch metrics or
spans themselves. Deeper code adds what only it knows with :func:`consul_agents._tracing.annotate`.
It also gives the operation its one deadline: the client's ``settings.timeout``, shared by every request
the operation makes (see :func:`consul_agents._gateway.call_deadline`).

One public call is one operation: a registry method called from inside another one (``select_agent``
asking ``discover``, ``deregister_agent`` asking ``get_agent``) runs bare, with no second span, no second
metric and no deadline of its own (its caller's is in force). With no tracer provider installed, no span
is opened at all (not even a no-op one): the call costs its latency observation and outcome count, through
metric children looked up once.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode

from consul_agents._gateway import CALL_DEADLINE, begin_call
from consul_agents._metrics import OPERATION_DURATION, OPERATIONS, outcome_of
from consul_agents._models import AgentInfo, AgentRegistration, DiscoveryRequest, SelectionCriteria
from consul_agents._tracing import clean, collect_annotations, stop_collecting, tracer, tracing_enabled

__all__ = ["instrumented", "selection_reason"]

#: The clock of latencies and deadlines alike (time.perf_counter reads the same clock on Linux).
monotonic = time.monotonic

P = ParamSpec("P")
R = TypeVar("R")

_REASONS = {
    "least_loaded": "lowest reported load ({load:.2f}) among {n} candidates",
    "power_of_two": "less loaded (load {load:.2f} plus in-flight) of two random picks among {n} candidates",
    "round_robin": "next in round-robin order among {n} candidates",
    "weighted_random": "random pick by weight {weight} x health score {health:.2f} among {n} candidates",
}


def selection_reason(strategy: str, chosen: AgentInfo, candidates: int | None) -> str:
    """Why ``chosen`` was picked, in words, for the ``selection.reason`` attribute."""
    template = _REASONS.get(strategy, strategy + " among {n} candidates")
    count = "?" if candidates is None else str(candidates)
    return template.format(
        load=chosen.current_load, weight=chosen.weight, health=chosen.health_score, n=count
    )


def _call_attributes(arguments: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, value in arguments.items():
        if name == "agent_id":
            attributes["agent.id"] = value
        elif name == "region":
            attributes["consul.datacenter"] = value
        elif isinstance(value, AgentRegistration):
            attributes["agent.type"] = value.agent_type
            attributes["agent.id"] = value.agent_id
        elif isinstance(value, DiscoveryRequest):
            attributes["agent.type"] = value.agent_type
            attributes["agent.capabilities"] = value.capabilities or None
            attributes["consul.datacenter"] = value.region
            if isinstance(value, SelectionCriteria):
                attributes["selection.strategy"] = value.strategy
    return attributes


def _result_attributes(result: Any, call: dict[str, Any], candidates: int | None) -> dict[str, Any]:
    if isinstance(result, list):
        return {"result.count": len(result)}
    if isinstance(result, AgentInfo):
        attributes: dict[str, Any] = {"agent.id": result.agent_id, "consul.datacenter": result.datacenter}
        strategy = call.get("selection.strategy")
        if strategy:
            attributes["selection.reason"] = selection_reason(strategy, result, candidates)
        return attributes
    if isinstance(result, str):
        return {"agent.id": result}
    if result is None and "selection.strategy" in call:
        return {"result.count": 0, "selection.reason": "no agent matched"}
    return {}


def _call_timeout(args: tuple[Any, ...]) -> float | None:
    """The time budget of a call on a client: its ``settings.timeout`` (None for anything else)."""
    try:
        timeout = args[0].settings.timeout
    except (IndexError, AttributeError):
        return None
    kind = type(timeout)
    return float(timeout) if kind is float or kind is int else None


class _Recorder:
    """One operation's latency histogram and outcome counters, their label children looked up once."""

    __slots__ = ("duration", "ok", "operation", "outcomes")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.duration = OPERATION_DURATION.labels(operation)
        self.ok = OPERATIONS.labels(operation, "ok")
        self.outcomes = {"ok": self.ok}

    def record(self, seconds: float, outcome: str) -> None:
        self.duration.observe(seconds)
        counter = self.outcomes.get(outcome)
        if counter is None:
            counter = self.outcomes[outcome] = OPERATIONS.labels(self.operation, outcome)
        counter.inc()


def _traced(
    method: Callable[P, Awaitable[R]], name: str, recorder: _Recorder, empty_outcome: str
) -> Callable[P, Awaitable[R]]:
    """``method`` as one span (while a tracer provider is installed), with its metrics."""
    # positional parameter names, to name the arguments without inspect's (slower) binding
    names = list(inspect.signature(method).parameters)

    async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
        started = monotonic()
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, set_status_on_exception=False) as span:
            recording = span.is_recording()
            # Attributes are gathered in one dict (what deeper code annotates too) and set once at the
            # end: each set_attributes call costs the SDK a lock and a validation pass.
            call = _call_attributes({**dict(zip(names, args, strict=False)), **kwargs}) if recording else {}
            pending: dict[str, Any] = {}
            gathering = collect_annotations(pending) if recording else None
            deadline = begin_call(_call_timeout(args), started)
            try:
                result = await method(*args, **kwargs)
            except BaseException as exc:
                outcome = outcome_of(exc)
                recorder.record(monotonic() - started, outcome)
                if recording:
                    span.set_attributes(clean({**call, **pending, "outcome": outcome}))
                if outcome not in ("not_found", "cancelled"):
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                CALL_DEADLINE.reset(deadline)
                if gathering is not None:
                    stop_collecting(gathering)
            outcome = empty_outcome if result is None or result is False else "ok"
            recorder.record(monotonic() - started, outcome)
            if recording:
                candidates = pending.get("selection.candidates")
                result_attributes = _result_attributes(result, call, candidates)
                span.set_attributes(clean({**call, **pending, **result_attributes, "outcome": outcome}))
            return result

    return traced


def instrumented(
    operation: str, *, empty_outcome: str = "ok"
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Wrap an async registry method in a span, a latency observation and an outcome count.

    ``empty_outcome``: the outcome of a call that returns None or False, having found nothing to act on
    (a select that found nobody counts ``unmet``, a deregistration of an unknown agent ``not_found``).
    """

    def decorate(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        recorder = _Recorder(operation)
        traced = _traced(method, f"consul_agents.{operation}", recorder, empty_outcome)
        duration, ok = recorder.duration, recorder.ok
        counts_empty = empty_outcome != "ok"

        @functools.wraps(method)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # Every public call passes here, cached hits included: with nobody listening (no tracer
            # provider, metrics unscraped) it costs one context variable (the call's deadline, which also
            # marks the calls made inside it), two clock reads and two additions (benchmarks/floor.py
            # measures it: a cached hit against a TTLCache hit).
            if CALL_DEADLINE.get() is not None:  # inside another registry call: part of it
                return await method(*args, **kwargs)
            if tracing_enabled():
                return await traced(*args, **kwargs)
            started = monotonic()
            deadline = begin_call(_call_timeout(args), started)
            try:
                result = await method(*args, **kwargs)
            except BaseException as exc:
                recorder.record(monotonic() - started, outcome_of(exc))
                raise
            finally:
                CALL_DEADLINE.reset(deadline)
            if counts_empty and (result is None or result is False):
                recorder.record(monotonic() - started, empty_outcome)
                return result
            duration.observe(monotonic() - started)
            ok.inc()
            return result

        return wrapper

    return decorate
