"""The one hook that gives every registry operation its span, latency histogram and outcome count.

``@instrumented("discover")`` on an AgentRegistry method is all an operation needs: attributes are read
from the call's arguments (models and agent ids) and from its result, so operations never touch metrics or
spans themselves. Deeper code adds what only it knows with :func:`consul_agents._tracing.annotate`.
It also gives the operation its one deadline: the client's ``settings.timeout``, shared by every request
the operation makes (see :func:`consul_agents._gateway.call_deadline`).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode

from consul_agents._gateway import call_deadline
from consul_agents._metrics import outcome_of, record_operation
from consul_agents._models import AgentInfo, AgentRegistration, DiscoveryRequest, SelectionCriteria
from consul_agents._tracing import clean, tracer

__all__ = ["instrumented", "selection_reason"]

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
    settings = getattr(args[0], "settings", None) if args else None
    timeout = getattr(settings, "timeout", None)
    return float(timeout) if isinstance(timeout, int | float) else None


def instrumented(operation: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Wrap an async registry method in a span, a latency observation and an outcome count."""

    def decorate(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        name = f"consul_agents.{operation}"
        signature = inspect.signature(method)

        @functools.wraps(method)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            with tracer.start_as_current_span(
                name, kind=SpanKind.CLIENT, set_status_on_exception=False
            ) as span:
                # Binding the arguments costs microseconds on the cached path: only for a recorded span.
                call = (
                    _call_attributes(signature.bind_partial(*args, **kwargs).arguments)
                    if span.is_recording()
                    else {}
                )
                if call:
                    span.set_attributes(clean(call))
                try:
                    with call_deadline(_call_timeout(args)):
                        result = await method(*args, **kwargs)
                except BaseException as exc:
                    outcome = outcome_of(exc)
                    record_operation(operation, time.perf_counter() - started, outcome)
                    span.set_attribute("outcome", outcome)
                    if outcome not in ("not_found", "cancelled"):
                        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                record_operation(operation, time.perf_counter() - started, "ok")
                if span.is_recording():
                    candidates = getattr(span, "attributes", {}).get("selection.candidates")
                    span.set_attributes(
                        clean({**_result_attributes(result, call, candidates), "outcome": "ok"})
                    )
                return result

        return wrapper

    return decorate
