"""With no tracer provider an instrumented call opens no span at all; once one is installed, it does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_PROGRAM = textwrap.dedent(
    """
    import asyncio
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import REGISTRY
    import consul_agents._instrument as instrument

    real = instrument.tracer

    class Refusing:
        def start_as_current_span(self, *args, **kwargs):
            raise AssertionError("a span was opened with no tracer provider")

    @instrument.instrumented("quiet_probe")
    async def probe() -> int:
        return 1

    instrument.tracer = Refusing()
    assert asyncio.run(probe()) == 1
    labels = {"operation": "quiet_probe", "outcome": "ok"}
    assert REGISTRY.get_sample_value("consul_agents_operations_total", labels) == 1.0

    instrument.tracer = real
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert asyncio.run(probe()) == 1
    assert [s.name for s in exporter.get_finished_spans()] == ["consul_agents.quiet_probe"]
    print("ok")
    """
)


def test_no_span_without_a_tracer_provider() -> None:
    """Without a provider an instrumented call never touches the tracer yet counts; with one, it spans."""
    program = [sys.executable, "-c", _PROGRAM]
    done = subprocess.run(program, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
