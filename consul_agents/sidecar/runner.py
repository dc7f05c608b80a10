"""The sidecar process: register the file's agents, probe each on its interval, heartbeat the verdict.

Life of one agent (one task each, so a hung agent never delays another's heartbeat):

1. probe once, then register with the status that probe gave (an agent that is down is registered
   critical, never passing, even for an instant);
2. every ``health.interval``: probe, then heartbeat the verdict (``output`` says what the probe saw) and the
   load read from the answer. :meth:`AgentRegistry.heartbeat` re-registers the agent from its registration
   when the local Consul agent lost it (a Consul restart), so the sidecar needs no restart of its own;
3. on stop (SIGTERM or SIGINT in :func:`run_sidecar`): deregister every agent, each on its own (one that
   fails is logged and the others are still removed), also when an agent's task failed.

Consul being unreachable is logged and retried on the next interval, also for the first registration;
an answer that will not change by retrying (permission denied, invalid registration) stops the sidecar.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

import aiohttp

from consul_agents._errors import ConsulAgentsError, RegistryUnavailableError
from consul_agents._registry import AgentRegistry
from consul_agents.sidecar.config import AgentSpec, SidecarConfig
from consul_agents.sidecar.probe import ProbeResult, probe

__all__ = ["Sidecar", "run_sidecar"]

log = logging.getLogger("consul_agents.sidecar")


class Sidecar:
    """Looks after the agents of one file until :meth:`run`'s ``stop`` event is set."""

    def __init__(self, config: SidecarConfig, registry: AgentRegistry) -> None:
        self.config = config
        self.registry = registry
        self.registered: set[str] = set()
        #: Agents whose registration was sent, answered or not: a stop during a registration must still
        #: remove it (deregistering an unknown service is harmless).
        self._attempted: set[str] = set()
        #: The last verdict per agent id (for logs and tests in-process).
        self.last_result: dict[str, ProbeResult] = {}

    async def run(self, stop: asyncio.Event) -> bool:
        """Run until ``stop`` is set, then deregister; returns False if some agent could not be removed."""
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [
                asyncio.create_task(self._look_after(session, spec, stop), name=f"sidecar:{spec.agent_id}")
                for spec in self.config.agents
            ]
            waiter = asyncio.create_task(stop.wait())
            failure: BaseException | None = None
            try:
                await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Whatever ended the wait (stop, an agent's task failing, run() being cancelled), every
                # task is stopped and every agent deregistered before anything is raised.
                ended = [task.done() for task in tasks]  # before the stop: those failed on their own
                for task in [waiter, *tasks]:
                    task.cancel()
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                for spec, outcome, on_its_own in zip(self.config.agents, outcomes, ended, strict=True):
                    if isinstance(outcome, Exception):
                        failure = failure or (outcome if on_its_own else None)
                        if not isinstance(outcome, ConsulAgentsError):
                            log.error("agent %s: looking after it failed", spec.agent_id, exc_info=outcome)
                clean = await self._deregister_all()
        if failure is not None:
            raise failure
        return clean

    async def _look_after(self, session: aiohttp.ClientSession, spec: AgentSpec, stop: asyncio.Event) -> None:
        interval = spec.health.interval.total_seconds()
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            result = await probe(session, spec)
            previous = self.last_result.get(spec.agent_id)
            self.last_result[spec.agent_id] = result
            if previous is None or previous.status != result.status:
                log.info("agent %s is %s: %s", spec.agent_id, result.status.value, result.output)
            try:
                await self._report(spec, result)
            except RegistryUnavailableError as exc:
                log.warning("agent %s: Consul unavailable, retrying next interval: %s", spec.agent_id, exc)
            except ConsulAgentsError as exc:
                if spec.agent_id not in self.registered:
                    raise
                log.warning("agent %s: heartbeat failed: %s", spec.agent_id, exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, started + interval - loop.time()))

    async def _report(self, spec: AgentSpec, result: ProbeResult) -> None:
        if spec.agent_id not in self.registered:
            registration = spec.registration
            if result.load is not None:
                registration = registration.model_copy(update={"load": result.load})
            self._attempted.add(spec.agent_id)
            await self.registry.register_agent(registration, status=result.status)
            self.registered.add(spec.agent_id)
            log.info("registered agent %s (%s)", spec.agent_id, spec.registration.service_name)
        await self.registry.heartbeat(spec.agent_id, result.load, status=result.status, output=result.output)

    async def _deregister_all(self) -> bool:
        """Deregister every agent this sidecar registered (or tried to), concurrently, each bounded by the
        registry's timeout; one failure is logged and never keeps the others registered."""
        agent_ids = sorted(self.registered | self._attempted)
        outcomes = await asyncio.gather(
            *(self.registry.deregister_agent(agent_id) for agent_id in agent_ids), return_exceptions=True
        )
        clean = True
        for agent_id, outcome in zip(agent_ids, outcomes, strict=True):
            confirmed = agent_id in self.registered
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                # A registration Consul never confirmed most likely never landed: not a failure to clean up.
                clean = clean and not confirmed
                log.log(
                    logging.ERROR if confirmed else logging.WARNING,
                    "could not deregister agent %s: %s",
                    agent_id,
                    outcome,
                )
            elif outcome or confirmed:
                log.info("deregistered agent %s", agent_id)
        self.registered.clear()
        self._attempted.clear()
        return clean


async def run_sidecar(config: SidecarConfig, registry: AgentRegistry) -> bool:
    """Run a sidecar until SIGTERM or SIGINT; returns whether every agent was deregistered."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with registry:
            log.info(
                "sidecar for %s: %d agent(s), Consul at %s",
                config.path,
                len(config.agents),
                registry.settings.address,
            )
            return await Sidecar(config, registry).run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
