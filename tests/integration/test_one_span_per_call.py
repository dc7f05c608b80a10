"""One public registry call is one operation: one span and one metric observation, never a nested second."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from support import registration

from consul_agents import AgentRegistry, SelectionCriteria
from consul_agents._selection import STRATEGIES


def _count(operation: str) -> float:
    """How many ``operation`` calls the metrics counted, whatever their outcome."""
    return sum(
        REGISTRY.get_sample_value("consul_agents_operations_total", {"operation": operation, "outcome": o})
        or 0.0
        for o in ("ok", "not_found", "invalid", "denied", "unavailable", "timeout", "error", "cancelled")
    )


def _names(spans: InMemorySpanExporter) -> list[str]:
    return [span.name for span in spans.get_finished_spans()]


async def test_select_is_one_span_and_one_operation(
    consul_addr: str, unique: str, spans: InMemorySpanExporter
) -> None:
    """select_agent, cached or direct, records one select span and operation and no discover of its own."""
    async with AgentRegistry(consul_addr) as registry:
        for n in range(3):
            await registry.register_agent(registration(unique, agent_id=f"{unique}-{n}", load=n / 10))
        spans.clear()
        discovers, selects = _count("discover"), _count("select")
        calls = 0
        for strategy in STRATEGIES:
            for cached in (True, False):
                criteria = SelectionCriteria(agent_type=unique, strategy=strategy)
                assert await registry.select_agent(criteria, cached=cached) is not None
                calls += 1
        assert _names(spans) == ["consul_agents.select"] * calls
        assert (_count("discover"), _count("select")) == (discovers, selects + calls)
        attributes = dict(spans.get_finished_spans()[0].attributes or {})
        assert attributes["selection.candidates"] == 3 and "cache.hit" in attributes


async def test_lease_and_status_are_one_span_each(
    consul_addr: str, unique: str, spans: InMemorySpanExporter
) -> None:
    """A lease records one select span; get_agent_status one get_agent span."""
    async with AgentRegistry(consul_addr) as registry:
        agent_id = await registry.register_agent(registration(unique, load=0.1))
        spans.clear()
        async with registry.lease(SelectionCriteria(agent_type=unique)) as agent:
            assert agent.agent_id == agent_id
        await registry.get_agent_status(agent_id)
        assert _names(spans) == ["consul_agents.select", "consul_agents.get_agent"]


async def test_deregistering_an_unknown_agent_is_one_span(
    consul_addr: str, unique: str, spans: InMemorySpanExporter
) -> None:
    """deregister_agent of an id nobody registered looks it up inside its own span, not in a get_agent one."""
    async with AgentRegistry(consul_addr) as registry:
        lookups = _count("get_agent")
        assert await registry.deregister_agent(f"{unique}-nobody") is False
        assert _names(spans) == ["consul_agents.deregister"]
        assert _count("get_agent") == lookups
