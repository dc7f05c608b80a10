"""One reader of :mod:`benchmarks.propagation`, in a process of its own (so that two versions of the
library can be measured in one run): it answers line-delimited JSON commands on stdin.

``{"open": {...}}`` starts reading (a cached ``AgentRegistry`` of whichever ``consul_agents`` this process
imports, or, with ``"bare": true``, a plain blocking query with Consul's ``filter``); ``{"expect": ...}``
arms a condition on one agent and answers ``armed``, then ``{"seen": t}`` (``time.perf_counter()``, the
same monotonic clock in every process on Linux) once the reader's answer shows it; ``{"close": true}``
stops reading. Every answer is one line of JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

import consul_agents
from consul_agents import AgentRegistry, DiscoveryRequest
from consul_agents import _wire as wire

#: How long one condition may take before the reader reports it unseen.
SEEN_WITHIN = 10.0
#: After opening, the reader asks its question this long (every 50 ms) before it is measured: the steady
#: state of a long-lived client, in which the cache's policies (a selective watch started, the type's own
#: watch stopped after _selective.SHADOWED_IDLE) have settled. Every reader does it, the floor too.
WARM_UP = 1.5


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _request(spec: dict[str, Any]) -> DiscoveryRequest:
    return DiscoveryRequest(agent_type=spec["agent_type"], capabilities=spec.get("capabilities", []))


class Cached:
    """The library's cached reader: ``discover_agents`` answered from the watch of the type."""

    def __init__(self, addr: str, spec: dict[str, Any]) -> None:
        self._registry = AgentRegistry(addr)
        self._request = _request(spec)

    async def open(self) -> None:
        await self._registry.__aenter__()
        await self._registry.discover_agents(self._request)

    async def state(self) -> dict[str, float]:
        return {a.agent_id: a.current_load for a in await self._registry.discover_agents(self._request)}

    async def wait(self, condition: Callable[[dict[str, float]], bool]) -> None:
        cache = self._registry.discovery.cache
        deadline = time.perf_counter() + SEEN_WITHIN
        while True:
            changed = cache._changed  # taken before the check: a change after it wakes the wait
            if condition(await self.state()):
                return
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError("not seen")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(left, 0.5))

    async def close(self) -> None:
        await self._registry.__aexit__(None, None, None)


class Bare:
    """The floor: one blocking query with the question's filter, run by Consul, read with aiohttp, the
    matching entries decoded with ``json.loads``; what a program that watches only this question pays."""

    def __init__(self, addr: str, spec: dict[str, Any]) -> None:
        request = _request(spec)
        self._url = f"{addr}/v1/health/service/agent-{request.agent_type}"
        # A question Consul cannot narrow (every live agent of the type) is read whole, without a filter
        # (a status filter over every entry only adds Consul's work), the status checked here.
        self._filter = wire.filter_expression(request) if request.capabilities else None
        self._known: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _read(self, index: str | None) -> str:
        assert self._session is not None
        params = {"stale": ""} if self._filter is None else {"filter": self._filter, "stale": ""}
        if index is not None:
            params |= {"index": index, "wait": "10s"}
        headers = {"Accept-Encoding": "identity"}  # as the library asks over loopback
        async with self._session.get(self._url, params=params, headers=headers) as response:
            entries = json.loads(await response.read())
            new_index = response.headers["X-Consul-Index"]
        if index is None or new_index != index:
            self._known = {
                e["Service"]["ID"]: float(e["Service"]["Meta"]["agent-load"])
                for e in entries
                if all(check["Status"] != "critical" for check in e["Checks"])
            }
            self._changed.set()
            self._changed = asyncio.Event()
        return new_index

    async def _loop(self, index: str) -> None:
        while True:
            index = await self._read(index)

    async def open(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._loop(await self._read(None)))

    async def state(self) -> dict[str, float]:
        return self._known

    async def wait(self, condition: Callable[[dict[str, float]], bool]) -> None:
        deadline = time.perf_counter() + SEEN_WITHIN
        while True:
            changed = self._changed
            if condition(self._known):
                return
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError("not seen")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def _condition(expect: dict[str, Any]) -> Callable[[dict[str, float]], bool]:
    agent_id, load = expect["agent_id"], expect.get("load")
    if expect["state"] == "absent":
        return lambda known: agent_id not in known
    if load is None:
        return lambda known: agent_id in known
    return lambda known: known.get(agent_id) == load


async def main() -> None:
    addr = sys.argv[1]
    loop = asyncio.get_running_loop()
    reader: Cached | Bare | None = None
    pending: asyncio.Task[None] | None = None
    _send({"ready": consul_agents.__file__})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if "open" in command:
            spec = command["open"]
            reader = Bare(addr, spec) if spec.get("bare") else Cached(addr, spec)
            await reader.open()
            settled = time.perf_counter() + WARM_UP
            while time.perf_counter() < settled:
                await reader.state()
                await asyncio.sleep(0.05)
            _send({"opened": True})
        elif "expect" in command:
            assert reader is not None
            condition = _condition(command["expect"])
            active = reader

            async def watch(wait: Callable[[], Awaitable[None]] = lambda: active.wait(condition)) -> None:
                try:
                    await wait()
                    _send({"seen": time.perf_counter()})
                except TimeoutError:
                    _send({"seen": None})

            pending = asyncio.create_task(watch())
            _send({"armed": True})
        elif "close" in command:
            if pending is not None:
                await pending
            if reader is not None:
                await reader.close()
            reader = None
            _send({"closed": True})


if __name__ == "__main__":
    asyncio.run(main())
