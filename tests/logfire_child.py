"""Child of tests/integration/test_logfire.py: every registry operation under Logfire, spans printed as JSON.

Logfire installs its own global OpenTelemetry tracer provider, and OpenTelemetry lets a process set that
only once; the test suite's other tracing tests set theirs, hence a process of its own. Logfire is set up
the way its ``capfire`` fixture does it: ``send_to_logfire=False`` and an in-memory exporter, so nothing
leaves the process. Reads CONSUL_ADDR, GOOD_TOKEN (may register and read type ``AGENT_TYPE``) and
BAD_TOKEN (unknown to Consul) from the environment; the library's log lines go to Logfire too. Prints
``{"spans": [...], "logs": [...]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys

import logfire
from logfire.testing import TestExporter, TestLogExporter, TimeGenerator
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from consul_agents import (
    AgentNotFoundError,
    AgentRegistration,
    AgentRegistry,
    DiscoveryRequest,
    PermissionDeniedError,
    SelectionCriteria,
)


async def operations(addr: str, good: str, bad: str, agent_type: str) -> None:
    registration = AgentRegistration(
        agent_type=agent_type,
        agent_id=f"{agent_type}-1",
        capabilities=["plan"],
        endpoint="http://127.0.0.1:9000",
        ttl=60,
    )
    async with AgentRegistry(addr, good) as registry:
        agent_id = await registry.register_agent(registration)
        await registry.heartbeat(agent_id, 0.4)
        await registry.set_maintenance(agent_id, True, "upgrade")
        await registry.set_maintenance(agent_id, False)
        await registry.get_agent(agent_id)
        await registry.agent_types()
        await registry.discover_agents(DiscoveryRequest(agent_type=agent_type, capabilities=["plan"]))
        await registry.select_agent(SelectionCriteria(agent_type=agent_type, strategy="round_robin"))
        await registry.deregister_agent(agent_id)
        with contextlib.suppress(AgentNotFoundError):
            await registry.get_agent(agent_id)
    async with AgentRegistry(addr, bad) as denied:
        with contextlib.suppress(PermissionDeniedError):
            await denied.register_agent(registration)


def main() -> int:
    spans = TestExporter()
    logs = TestLogExporter(TimeGenerator())
    logfire.configure(
        send_to_logfire=False,
        console=False,
        service_name="consul-agents-test",
        additional_span_processors=[SimpleSpanProcessor(spans)],
        advanced=logfire.AdvancedOptions(log_record_processors=[SimpleLogRecordProcessor(logs)]),
    )
    # The library's log lines, at every level, go to Logfire too: they must not hold a token either.
    logging.basicConfig(handlers=[logfire.LogfireLoggingHandler()], level=logging.DEBUG, force=True)
    env = os.environ
    asyncio.run(operations(env["CONSUL_ADDR"], env["GOOD_TOKEN"], env["BAD_TOKEN"], env["AGENT_TYPE"]))
    logfire.force_flush()
    captured = {
        "spans": spans.exported_spans_as_dict(include_resources=True, include_instrumentation_scope=True),
        "logs": [json.loads(record.to_json()) for record in logs.get_finished_logs()],
    }
    json.dump(captured, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
