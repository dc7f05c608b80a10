"""OpenTelemetry spans around every registry operation, through the OpenTelemetry API only.

The library never configures a tracer provider: without one (no SDK, no ``logfire.configure()``) no span
is opened at all (:func:`tracing_enabled`) and :func:`annotate` returns at once. With one, each public
registry call is one CLIENT span named ``consul_agents.<operation>`` (the calls it makes inside are part of
it, never spans of their own) whose attributes say what was asked and what came back:

==========================  ==========================================================================
``agent.id``                the agent written or read
``agent.type``              the agent type asked for or written
``agent.capabilities``      capabilities asked for
``consul.datacenter``       the datacenter asked for, or the one the chosen agent lives in
``result.count``            how many agents a discovery returned
``cache.hit``               whether the answer came from the in-process cache (when a cache answered)
``selection.strategy``      the strategy of a select
``selection.candidates``    how many agents the strategy chose among
``selection.reason``        why this agent was chosen, in words
``outcome``                 ok, invalid, not_found, denied, unavailable, timeout, error
==========================  ==========================================================================

Tokens are never attributes: nothing in this module reads settings, and our exceptions (recorded as span
events) never carry a token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.util.types import AttributeValue

__all__ = ["annotate", "clean", "collect_annotations", "stop_collecting", "tracer", "tracing_enabled"]

tracer = trace.get_tracer("consul_agents")

_NO_PROVIDER = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
#: A provider named by environment variable is loaded by get_tracer_provider() on first use.
_PROVIDER_FROM_ENVIRONMENT = OTEL_PYTHON_TRACER_PROVIDER in os.environ
_MISSING = object()


def tracing_enabled() -> bool:
    """Whether a tracer provider is installed (checked per call: one may be installed at any time).

    ``get_tracer_provider()`` looks the environment up on every call while none is set (about 1 us, as
    much as the rest of a cached hit's instrumentation); the API's global says the same in 50 ns. Should
    a later opentelemetry-api drop that global, the public call answers instead.
    """
    provider = getattr(trace, "_TRACER_PROVIDER", _MISSING)
    if provider is None and not _PROVIDER_FROM_ENVIRONMENT:
        return False
    if provider is _MISSING or provider is None:
        provider = trace.get_tracer_provider()
    return not isinstance(provider, _NO_PROVIDER)


def clean(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Attributes in the types OpenTelemetry accepts, None values dropped."""
    cleaned: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            cleaned[key] = [str(item) for item in value]
        elif isinstance(value, str | bool | int | float):
            cleaned[key] = value
        else:
            cleaned[key] = str(value)
    return cleaned


#: The attributes the running operation gathers for its span (set once when it ends), if it does.
_gathered: ContextVar[dict[str, Any] | None] = ContextVar("consul_agents_span_attributes", default=None)


def collect_annotations(into: dict[str, Any]) -> Token[dict[str, Any] | None]:
    """Send :func:`annotate` calls in this context to ``into`` until :func:`stop_collecting`."""
    return _gathered.set(into)


def stop_collecting(token: Token[dict[str, Any] | None]) -> None:
    _gathered.reset(token)


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span (the innermost registry operation); None values are skipped.

    Code deep inside an operation (the cache, selection) says what it learned without holding the span.
    """
    if not tracing_enabled():
        return
    gathered = _gathered.get()
    if gathered is not None:
        gathered.update((key, value) for key, value in attributes.items() if value is not None)
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(clean(attributes))
