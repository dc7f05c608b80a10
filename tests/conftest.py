"""Shared fixtures: a real Consul for the tests that need one, clients of it, and unique names so tests
stay apart.

A Consul agent starts only when a test asks for ``consul_server``/``consul_addr`` (so unit tests never
start one), once per session. Set ``CONSUL_AGENTS_TEST_ADDR=http://host:port`` to run against an existing
Consul instead; tests that need to control the process itself (``consul_server``, ``make_consul``) are then
skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import test_utils
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consul_agents import AgentRegistry
from consul_agents.api import create_app
from consul_agents.cluster import ConsulCluster
from consul_agents.dev import ConsulDevServer

EXTERNAL_ADDR_VAR = "CONSUL_AGENTS_TEST_ADDR"


def _external_addr() -> str | None:
    return os.environ.get(EXTERNAL_ADDR_VAR) or None


def skip_if_external() -> None:
    """Skip the calling test or fixture, which starts or controls Consul processes, when the tests use an
    existing Consul."""
    if _external_addr():
        pytest.skip(f"{EXTERNAL_ADDR_VAR} is set: tests that start or control Consul processes are skipped")


@contextmanager
def throwaway_cluster() -> Iterator[ConsulCluster]:
    """A 3-server cluster with a client agent for one test module, killed at the end rather than left
    gracefully (which took about 6 s for the four agents); skipped against an existing Consul."""
    skip_if_external()
    with ConsulCluster() as started:
        yield started
        for agent in [*([started.client] if started.client else []), *started.servers]:
            agent.kill()


@pytest.fixture(scope="session")
def consul_server() -> Iterator[ConsulDevServer]:
    """A started dev-mode Consul agent on free loopback ports, shared by the whole session."""
    skip_if_external()
    with ConsulDevServer(datacenter="dc1") as server:
        yield server


@pytest.fixture(scope="session")
def consul_addr(request: pytest.FixtureRequest) -> str:
    """The HTTP address of the Consul the tests use: ``CONSUL_AGENTS_TEST_ADDR`` or the session's agent."""
    external = _external_addr()
    if external:
        return external.rstrip("/")
    server: ConsulDevServer = request.getfixturevalue("consul_server")
    return server.http_addr


@pytest.fixture
async def registry(consul_addr: str) -> AsyncIterator[AgentRegistry]:
    """An ``AgentRegistry`` with default settings on the tests' Consul."""
    async with AgentRegistry(consul_addr) as reg:
        yield reg


@pytest.fixture
async def api(consul_addr: str) -> AsyncIterator[test_utils.TestClient[Any, Any]]:
    """A client of the REST API (``create_app``) served on a free port, in front of the tests' Consul."""
    async with test_utils.TestClient(test_utils.TestServer(create_app(consul_addr))) as client:
        yield client


@pytest.fixture(scope="module")
def _span_exporter() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the process's SDK tracer provider (OpenTelemetry allows setting the global
    provider once); shut down after the module so later modules' spans are not kept."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture
def spans(_span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The OpenTelemetry spans the library records during this test."""
    _span_exporter.clear()
    yield _span_exporter
    _span_exporter.clear()


@pytest.fixture
def unique() -> str:
    """A short, unique, lowercase, DNS-safe name for this test (``t`` + 8 hex digits)."""
    return "t" + uuid.uuid4().hex[:8]


MakeConsul = Callable[..., ConsulDevServer]


@pytest.fixture
def make_consul() -> Iterator[MakeConsul]:
    """A factory of fresh started agents (keyword arguments go to ``ConsulDevServer``), all closed after
    the test: for tests that stop, restart, kill or join agents."""
    skip_if_external()
    servers: list[ConsulDevServer] = []

    def make(**kwargs: Any) -> ConsulDevServer:
        server = ConsulDevServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        # Thrown away: no graceful leave (a client agent whose server is gone spent ~5 s trying to leave).
        server.kill()
        server.close()
