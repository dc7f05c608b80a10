"""OpenTelemetry spans of registry operations, read back with the SDK's in-memory exporter."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import registration

from consul_agents import (
    AgentNotFoundError,
    AgentRegistry,
    DiscoveryRequest,
    SelectionCriteria,
)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_every_operation_has_a_span_with_what_was_asked_and_found(
    consul_addr: str, unique: str, spans: InMemorySpanExporter
) -> None:
    """register, heartbeat, discover, select, get and deregister each leave a span with their attributes."""
    async with AgentRegistry(consul_addr) as registry:
        await registry.register_agent(registration(unique, agent_id=f"{unique}-a", load=0.6))
        await registry.register_agent(registration(unique, agent_id=f"{unique}-b", load=0.2))
        await registry.heartbeat(f"{unique}-a", 0.7)
        found = await registry.discover_agents(DiscoveryRequest(agent_type=unique, capabilities=["plan"]))
        chosen = await registry.select_agent(SelectionCriteria(agent_type=unique, strategy="least_loaded"))
        with pytest.raises(AgentNotFoundError):
            await registry.get_agent(f"{unique}-nobody")
        for agent_id in (f"{unique}-a", f"{unique}-b"):
            await registry.deregister_agent(agent_id)

    register = named(spans, "consul_agents.register")
    assert [dict(s.attributes or {})["agent.id"] for s in register] == [f"{unique}-a", f"{unique}-b"]
    assert all(dict(s.attributes or {})["agent.type"] == unique for s in register)
    assert register[0].kind is trace.SpanKind.CLIENT

    (beat,) = named(spans, "consul_agents.heartbeat")
    assert dict(beat.attributes or {})["agent.id"] == f"{unique}-a"

    discover = named(spans, "consul_agents.discover")
    assert len(found) == 2
    first = dict(discover[0].attributes or {})
    assert (first["agent.type"], first["result.count"], first["outcome"]) == (unique, 2, "ok")
    assert first["agent.capabilities"] == ("plan",)

    (select,) = named(spans, "consul_agents.select")
    attributes = dict(select.attributes or {})
    assert chosen is not None and attributes["agent.id"] == chosen.agent_id == f"{unique}-b"
    assert attributes["selection.strategy"] == "least_loaded"
    assert attributes["selection.candidates"] == 2
    assert attributes["consul.datacenter"] == "dc1"
    assert "lowest reported load (0.20)" in str(attributes["selection.reason"])
    # The discovery a select makes is part of the select's span, not a second one.
    assert len(discover) == 1

    (missing,) = named(spans, "consul_agents.get_agent")
    assert dict(missing.attributes or {})["outcome"] == "not_found"
    assert missing.status.status_code is not trace.StatusCode.ERROR  # not finding is an answer, not a fault
    assert len(named(spans, "consul_agents.deregister")) == 2


async def test_failed_operation_span_is_an_error_and_never_holds_the_token(
    unused_tcp_port: int, unique: str, spans: InMemorySpanExporter
) -> None:
    """A call that cannot reach Consul ends its span in error, outcome 'unavailable'; the token is nowhere."""
    secret = f"secret-{unique}-token"
    async with AgentRegistry(f"http://127.0.0.1:{unused_tcp_port}", secret, timeout=1) as registry:
        with pytest.raises(Exception, match="unreachable"):
            await registry.register_agent(registration(unique, agent_id=f"{unique}-x", load=0.1))
    (span,) = named(spans, "consul_agents.register")
    assert span.status.status_code is trace.StatusCode.ERROR
    assert dict(span.attributes or {})["outcome"] == "unavailable"
    everything = repr(
        [
            (s.name, s.attributes, [(e.name, e.attributes) for e in s.events])
            for s in spans.get_finished_spans()
        ]
    )
    assert "RegistryUnavailableError" in everything
    assert secret not in everything


async def test_cache_answers_are_marked_on_the_span(spans: InMemorySpanExporter) -> None:
    """Recording a cache hit or miss inside an operation sets that operation's cache.hit attribute."""
    from consul_agents._instrument import instrumented
    from consul_agents._metrics import record_cache

    @instrumented("probe")
    async def probe(hit: bool) -> list[str]:
        record_cache(hit)
        return []

    await probe(True)
    await probe(False)
    assert [dict(s.attributes or {})["cache.hit"] for s in named(spans, "consul_agents.probe")] == [
        True,
        False,
    ]
