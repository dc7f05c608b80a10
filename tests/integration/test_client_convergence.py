"""A write that timed out may still have been applied: the same client converges on its next call.

Consul is real; between it and the client sits a TCP relay that, while ``mute`` is set, still delivers
every request to Consul but drops Consul's answers, so a write is applied and its caller times out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from support import consul_get, registration

from consul_agents import AgentRegistry, RegistryTimeoutError
from consul_agents import _wire as wire

BIG = {"blob": "x" * 600}  # too large for Meta: written to KV before the service


class AnswerDroppingRelay:
    """Relays TCP to Consul; while ``mute`` is True the requests go through and the answers are dropped."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 8500
        self.mute = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> AnswerDroppingRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer, answers=False)),
            asyncio.create_task(self._pump(upstream_reader, writer, answers=True)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, upstream_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, answers: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if answers and self.mute:
                    continue
                sink.write(data)
                await sink.drain()


@pytest.fixture
async def relay(consul_addr: str) -> AsyncIterator[AnswerDroppingRelay]:
    """A relay to the tests' Consul that can drop Consul's answers."""
    async with AnswerDroppingRelay(consul_addr) as running:
        yield running


def in_consul(addr: str, agent_id: str) -> bool:
    body, _ = consul_get(addr, f"/v1/agent/service/{agent_id}")
    return body is not None


def kv_exists(addr: str, key: str) -> bool:
    body, _ = consul_get(addr, f"/v1/kv/{key}")
    return body is not None


async def test_a_registration_that_timed_out_is_removed_by_the_next_call(
    consul_addr: str, relay: AnswerDroppingRelay, unique: str
) -> None:
    """A registration applied by Consul whose answer never came is removed (with nobody heartbeating it)
    by the same client's next write."""
    async with AgentRegistry(relay.address, timeout=1) as registry:
        relay.mute = True
        with pytest.raises(RegistryTimeoutError) as raised:
            await registry.register_agent(registration(unique, agent_id=f"{unique}-lost"))
        relay.mute = False
        assert in_consul(consul_addr, f"{unique}-lost")  # applied, though its caller saw a timeout
        other = await registry.register_agent(registration(unique))
        assert not in_consul(consul_addr, f"{unique}-lost")
        assert in_consul(consul_addr, other)
        await registry.deregister_agent(other)
    assert any(f"{unique}-lost" in note for note in getattr(raised.value, "__notes__", []))


async def test_half_written_metadata_of_a_timed_out_registration_is_removed_on_close(
    consul_addr: str, relay: AnswerDroppingRelay, unique: str
) -> None:
    """A registration whose KV metadata write timed out (applied, the service never sent) leaves no KV
    key once the client closes."""
    key = wire.metadata_key(unique, f"{unique}-kv")
    async with AgentRegistry(relay.address, timeout=1) as registry:
        relay.mute = True
        with pytest.raises(RegistryTimeoutError):
            await registry.register_agent(registration(unique, agent_id=f"{unique}-kv", metadata=BIG))
        relay.mute = False
        assert kv_exists(consul_addr, key)
    assert not kv_exists(consul_addr, key)
    assert not in_consul(consul_addr, f"{unique}-kv")


async def test_a_heartbeat_adopts_a_registration_that_timed_out(
    consul_addr: str, relay: AnswerDroppingRelay, unique: str
) -> None:
    """A caller that heartbeats the agent whose registration timed out keeps it: the client tracks it
    from then on, so deregistering it removes it and its KV metadata."""
    agent_id = f"{unique}-kept"
    async with AgentRegistry(relay.address, timeout=1) as registry:
        relay.mute = True
        with pytest.raises(RegistryTimeoutError):
            await registry.register_agent(registration(unique, agent_id=agent_id, metadata=BIG))
        relay.mute = False
        await registry.heartbeat(agent_id, load=0.5)  # the service never reached Consul: registered now
        assert in_consul(consul_addr, agent_id)
        assert (await registry.get_agent(agent_id)).metadata == BIG
        assert await registry.deregister_agent(agent_id)
    assert not in_consul(consul_addr, agent_id)
    assert not kv_exists(consul_addr, wire.metadata_key(unique, agent_id))
