"""OpenTelemetry spans around every registry operation, through the OpenTelemetry API only.

The library never configures a tracer provider: without one (no SDK, no ``logfire.configure()``) every span
is a no-op costing well under a microsecond. With one, each registry call is a CLIENT span named
``consul_agents.<operation>`` whose attributes say what was asked and what came back:

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

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

__all__ = ["annotate", "clean", "tracer"]

tracer = trace.get_tracer("consul_agents")


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


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span (the innermost registry operation); None values are skipped.

    Code deep inside an operation (the cache, selection) says what it learned without holding the span.
    """
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(clean(attributes))
