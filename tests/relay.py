"""A TCP relay in front of a real Consul that can drop Consul's answers: a Consul that applies requests and
never answers them, switched on and off at once (no signal timing involved)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

__all__ = ["AnswerDroppingRelay"]


class AnswerDroppingRelay:
    """Relays TCP to Consul; while ``mute`` is True the requests go through and the answers are dropped."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 8500
        self.mute = False
        #: With ``mute``: drop only the answers to requests whose request line starts with one of these
        #: (e.g. ``"PUT /v1/agent/service/register"``); None drops every answer.
        self.mute_only: tuple[str, ...] | None = None
        self._pending: dict[asyncio.StreamWriter, bytes] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

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

    def reset(self) -> None:
        """Close every connection relayed now (those whose answers were dropped never get one)."""
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        self._writers.update((writer, upstream_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer, answers=False, client=writer)),
            asyncio.create_task(self._pump(upstream_reader, writer, answers=True, client=writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, upstream_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    def _dropped(self, client: asyncio.StreamWriter) -> bool:
        if not self.mute:
            return False
        if self.mute_only is None:
            return True
        line = self._pending.get(client, b"").decode("latin-1")
        return line.startswith(self.mute_only)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        answers: bool,
        client: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if not answers and data[:8].split(b" ")[0] in (b"GET", b"PUT", b"POST", b"DELETE"):
                    # One request at a time per connection (no pipelining): this line is what the next
                    # answer on the connection answers.
                    self._pending[client] = data.split(b"\r\n", 1)[0]
                if answers and self._dropped(client):
                    continue
                sink.write(data)
                await sink.drain()
