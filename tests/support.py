"""Helpers shared by the test modules: raw Consul HTTP (independent of the code under test), polling, and
builders of registrations and selection candidates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from consul_agents import AgentInfo, AgentRegistration, AgentStatus

__all__ = [
    "GOOD_META",
    "candidate",
    "consul_get",
    "consul_get_text",
    "consul_put",
    "eventually",
    "raw_agent",
    "registration",
]


def consul_get(addr: str, path: str, token: str | None = None) -> tuple[Any, int]:
    """A plain HTTP read of Consul: (JSON body, X-Consul-Index); the body is None when Consul answers 404."""
    text, index = consul_get_text(addr, path, token)
    return json.loads(text or "null"), index


def consul_get_text(addr: str, path: str, token: str | None = None) -> tuple[str, int]:
    """:func:`consul_get` without decoding: the answer exactly as Consul wrote it ("" for 404)."""
    request = urllib.request.Request(addr + path, headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode(), int(response.headers.get("X-Consul-Index", 0))
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 404:
                return "", int(exc.headers.get("X-Consul-Index", 0))
            raise


def consul_put(addr: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """A plain HTTP write to Consul; returns the decoded JSON answer (or None)."""
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"X-Consul-Token": token} if token else {}
    request = urllib.request.Request(addr + path, data=data, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "") -> None:
    """Poll ``check`` every 50 ms until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not true within {timeout}s: {what}")


def registration(agent_type: str, **fields: Any) -> AgentRegistration:
    """A registration of ``agent_type`` with capability "plan" at a loopback endpoint, unless ``fields`` say
    otherwise."""
    defaults: dict[str, Any] = {"capabilities": ["plan"], "endpoint": "http://127.0.0.1:9000"}
    return AgentRegistration(agent_type=agent_type, **{**defaults, **fields})


def candidate(agent_id: str, load: float = 0.0, weight: int = 1, health: float = 1.0) -> AgentInfo:
    """A discovered agent for selection: ``health`` 1.0 is passing, 0.5 warning, anything else critical."""
    status = {1.0: AgentStatus.PASSING, 0.5: AgentStatus.WARNING}.get(health, AgentStatus.CRITICAL)
    return AgentInfo(
        agent_id=agent_id,
        agent_type="t",
        capabilities=["c"],
        status=status,
        endpoint="http://h:1",
        health_score=health,
        current_load=load,
        last_heartbeat=None,
        weight=weight,
    )


#: The Meta this library writes for an agent at load 0 (the most attractive load).
GOOD_META = {
    "agent-endpoint": "http://127.0.0.1:9001",
    "agent-load": "0",
    "agent-heartbeat": "2026-01-01T00:00:00.000+00:00",
    "agent-ttl": "3600s",
}


def raw_agent(
    addr: str,
    agent_type: str,
    agent_id: str,
    *,
    tags: list[str] | None = None,
    meta: dict[str, str | None] | None = None,
    check: bool = True,
    token: str | None = None,
) -> None:
    """Register through Consul's agent API, as anyone holding ``service:write`` on ``agent-<type>`` can:
    by default an entry exactly like this library's (capability "plan", load 0), except for ``meta``
    overrides (None removes a key), ``tags`` and ``check`` (False: no check ``service:<id>``)."""
    merged = {k: v for k, v in {**GOOD_META, **(meta or {})}.items() if v is not None}
    body: dict[str, Any] = {
        "ID": agent_id,
        "Name": f"agent-{agent_type}",
        "Tags": tags if tags is not None else ["plan"],
        "Address": "127.0.0.1",
        "Port": 9001,
        "Meta": merged,
    }
    if check:
        body["Check"] = {"CheckID": f"service:{agent_id}", "TTL": "3600s", "Status": "passing"}
    consul_put(addr, "/v1/agent/service/register", body, token=token)


def stop_process(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP ``pid`` and return once every one of its threads is stopped: ``kill`` returns before a
    multi-threaded process (Consul) has stopped, and a request sent in that gap may still be answered."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                states.append(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop within {timeout}s: thread states {states}")
        time.sleep(0.005)
