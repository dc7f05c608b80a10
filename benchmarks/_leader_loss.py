"""Leader loss under steady load, as a reusable scenario (the fault test and the scale report both run it).

A 3-server :class:`~consul_agents.cluster.ConsulCluster` with a client agent; agents heartbeat through
:meth:`AgentRegistry.session`, discoverers call ``discover_agents`` in a loop (half through the library's
watch-fed cache, the default; half directly with ``stale_reads=True``; one directly without stale reads, for
contrast), and a writer
registers a new agent every ``write_every`` seconds (every other one with metadata too large for Meta, so it
goes to Consul's KV store, which needs a leader). Then the leader is SIGKILLed. Every operation is recorded
with its start time, duration and outcome, so a test can assert on the timeline and a report can plot it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from consul_agents import AgentRegistration, AgentRegistry, AgentSession, ConsulAgentsError, DiscoveryRequest
from consul_agents.cluster import ConsulCluster

T = TypeVar("T")

__all__ = ["LeaderLossResult", "Op", "fleet_sessions", "run_leader_loss"]


@dataclass(frozen=True)
class Op:
    kind: str  # discover (cached), discover-direct (stale), discover-leader, register, register-kv, catalog
    start: float  # seconds since the scenario's zero
    duration: float
    error: str | None = None  # the exception's class name, or None on success
    detail: str = ""


@dataclass
class LeaderLossResult:
    ops: list[Op] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # "kill", "new_leader", "caught_up"
    acknowledged: dict[str, float] = field(default_factory=dict)  # agent id -> when its registration returned
    missing_after_recovery: list[str] = field(default_factory=list)
    visible_at: dict[str, float] = field(default_factory=dict)  # acknowledged id -> first seen in catalog
    old_leader: str = ""
    new_leader: str = ""
    heartbeat_errors: int = 0

    def failures(self, kind: str) -> list[Op]:
        return [op for op in self.ops if op.kind == kind and op.error is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "old_leader": self.old_leader,
            "new_leader": self.new_leader,
            "acknowledged": {a: round(t, 4) for a, t in self.acknowledged.items()},
            "visible_at": {a: round(t, 4) for a, t in self.visible_at.items()},
            "missing_after_recovery": self.missing_after_recovery,
            "heartbeat_errors": self.heartbeat_errors,
            "ops": [[op.kind, round(op.start, 4), round(op.duration, 4), op.error] for op in self.ops],
        }


def _registration(agent_type: str, i: int, *, big: bool = False, ttl: float = 6) -> AgentRegistration:
    return AgentRegistration(
        agent_type=agent_type,
        capabilities=["plan"],
        endpoint=f"http://127.0.0.1:{20000 + i}",
        metadata={"notes": "x" * 2000} if big else {"n": i},
        ttl=timedelta(seconds=ttl),
        agent_id=f"{agent_type}-{i}",
    )


@contextlib.asynccontextmanager
async def fleet_sessions(
    registry: AgentRegistry, registrations: list[AgentRegistration]
) -> AsyncIterator[list[AgentSession]]:
    """One heartbeating :meth:`AgentRegistry.session` per registration, all ended together."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(registry.session(r)) for r in registrations]


class _Run:
    """The load generators of one scenario run, recording into ``result``."""

    def __init__(self, result: LeaderLossResult, agent_type: str, agents: int, write_every: float) -> None:
        self.result = result
        self.agent_type = agent_type
        self.written_type = f"{agent_type}w"
        self.agents = agents
        self.write_every = write_every
        self.zero = time.monotonic()
        self.stop = asyncio.Event()
        self.writes_done = asyncio.Event()

    def now(self) -> float:
        return time.monotonic() - self.zero

    async def timed(self, kind: str, call: Awaitable[T]) -> T | None:
        started = self.now()
        try:
            value = await call
        except ConsulAgentsError as exc:
            self.result.ops.append(
                Op(kind, started, self.now() - started, type(exc).__name__, str(exc)[:200])
            )
            return None
        self.result.ops.append(Op(kind, started, self.now() - started))
        return value

    async def discover(self, reads: AgentRegistry, kind: str = "discover") -> None:
        request = DiscoveryRequest(agent_type=self.agent_type)
        while not self.stop.is_set():
            found = await self.timed(kind, reads.discover_agents(request))
            if found is not None and len(found) != self.agents:
                self.result.ops.append(Op(kind, self.now(), 0.0, "WrongAnswer", f"{len(found)} agents"))
            await asyncio.sleep(0.01)

    async def write(self, writes: AgentRegistry) -> None:
        i = 0
        while not self.stop.is_set():
            big = i % 2 == 1
            kind = "register-kv" if big else "register"
            registration = _registration(self.written_type, i, big=big)
            agent_id = await self.timed(kind, writes.register_agent(registration))
            if agent_id is not None:
                self.result.acknowledged[agent_id] = self.now()
            i += 1
            await asyncio.sleep(self.write_every)

    async def watch_catalog(self, reads: AgentRegistry) -> None:
        """Note when each acknowledged registration first shows in the catalog (stale: no leader needed)."""
        request = DiscoveryRequest(agent_type=self.written_type)
        while True:
            found = await self.timed("catalog", reads.discover_agents(request))
            for info in found or []:
                self.result.visible_at.setdefault(info.agent_id, self.now())
            if self.writes_done.is_set() and all(
                a in self.result.visible_at for a in self.result.acknowledged
            ):
                return
            await asyncio.sleep(0.05)

    async def wait_for_fleet(self, reads: AgentRegistry) -> None:
        """Stale reads lag the leader by milliseconds: start counting once every server has the fleet."""
        deadline = time.monotonic() + 30
        while len(await reads.discover_agents(DiscoveryRequest(agent_type=self.agent_type))) != self.agents:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.agents} agents did not all show in discovery within 30 s")
            await asyncio.sleep(0.05)


async def run_leader_loss(
    cluster: ConsulCluster,
    agent_type: str,
    *,
    agents: int = 5,
    discoverers: int = 4,
    write_every: float = 0.1,
    before: float = 3.0,
    after: float = 10.0,
    recovery_timeout: float = 60.0,
) -> LeaderLossResult:
    """Run load for ``before`` seconds, kill the leader, run until ``after`` seconds past the new leader,
    then wait (up to ``recovery_timeout``) until every acknowledged registration is in the catalog."""
    result = LeaderLossResult()
    run = _Run(result, agent_type, agents, write_every)
    async with (
        AgentRegistry(cluster.http_addr) as writes,
        AgentRegistry(cluster.http_addr) as cached,
        AgentRegistry(cluster.http_addr, cache=False, stale_reads=True) as reads,
        AgentRegistry(cluster.http_addr, cache=False) as consistent_reads,
    ):
        fleet = [_registration(agent_type, i) for i in range(agents)]
        async with fleet_sessions(writes, fleet) as sessions:
            await run.wait_for_fleet(reads)
            run.zero = time.monotonic()
            tasks = [asyncio.create_task(run.discover(cached)) for _ in range(discoverers - discoverers // 2)]
            tasks += [
                asyncio.create_task(run.discover(reads, "discover-direct")) for _ in range(discoverers // 2)
            ]
            # One discoverer without stale reads, for contrast: its reads need the leader.
            tasks.append(asyncio.create_task(run.discover(consistent_reads, "discover-leader")))
            tasks.append(asyncio.create_task(run.write(writes)))
            watcher = asyncio.create_task(run.watch_catalog(reads))
            try:
                await asyncio.sleep(before)
                result.events["kill"] = run.now()
                old = await asyncio.to_thread(cluster.kill_leader)
                result.old_leader = old.node_name
                new = await asyncio.to_thread(cluster.wait_for_leader, 30, exclude=[old])
                result.events["new_leader"] = run.now()
                result.new_leader = new.node_name
                await asyncio.sleep(after)
            finally:
                run.stop.set()
                await asyncio.gather(*tasks)
                run.writes_done.set()
            result.events["load_stopped"] = run.now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher, recovery_timeout)
            result.events["caught_up"] = run.now()
            result.heartbeat_errors = sum(1 for s in sessions if s.last_error is not None)
            result.missing_after_recovery = [a for a in result.acknowledged if a not in result.visible_at]
    return result
