"""The sidecar process: register the file's agents, probe each on its interval, heartbeat the verdict.

Life of one agent (one task each, so a hung agent never delays another's heartbeat):

1. probe once, then register with the status that probe gave (an agent that is down is registered
   critical, never passing, even for an instant);
2. every ``health.interval``: probe, then heartbeat the verdict (``output`` says what the probe saw) and the
   load read from the answer. :meth:`AgentRegistry.heartbeat` re-registers the agent from its registration
   when the local Consul agent lost it (a Consul restart), so the sidecar needs no restart of its own;
3. on stop (SIGTERM or SIGINT in :func:`run_sidecar`): deregister every agent, each on its own (one that
   fails is logged and the others are still removed), also when an agent's task failed.

An agent with a ``card`` (A2A) is registered from the card it serves, fetched every interval with
If-None-Match: a changed card is re-registered at once (a new skill is discoverable within one interval),
and an agent that stops serving a valid card is critical. SIGUSR1 toggles draining for every agent of
the file (:meth:`Sidecar.set_draining`).

Consul being unreachable is logged and retried on the next interval, also for the first registration;
an answer that will not change by retrying (permission denied, invalid registration) stops the sidecar.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

import aiohttp

from consul_agents._errors import ConsulAgentsError, InvalidAgentError, RegistryUnavailableError
from consul_agents._models import AgentRegistration, AgentStatus
from consul_agents._registry import AgentRegistry
from consul_agents.sidecar.cards import fetch_card, registration_from_card
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
        #: Card agents: the registration from the last valid card, the card's ETag, and the agents whose
        #: card changed since they were registered.
        self._from_card: dict[str, AgentRegistration] = {}
        self._etags: dict[str, str | None] = {}
        self._card_changed: set[str] = set()
        #: Whether the file's agents are draining (SIGUSR1 toggles it); an agent is also draining while its
        #: health answer says so (``health.draining_field``). ``_drained``: what Consul was last told.
        self.draining = False
        self._asked_draining: dict[str, bool] = {}
        self._drained: dict[str, bool] = {}

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
            result = await self._check(session, spec)
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

    async def _check(self, session: aiohttp.ClientSession, spec: AgentSpec) -> ProbeResult:
        """The probe's verdict; for a card agent, first the card's: no valid card is critical."""
        if spec.card is None:
            return await probe(session, spec)
        agent_id = spec.agent_id
        timeout = spec.health.timeout.total_seconds()
        fetched = await fetch_card(session, spec.card, self._etags.get(agent_id), timeout)
        if fetched.error:
            return ProbeResult(AgentStatus.CRITICAL, None, f"card: {fetched.error}"[:200])
        if fetched.card is not None:
            try:
                registration = registration_from_card(
                    spec.registration, fetched.card, spec.extra_capabilities
                )
            except InvalidAgentError as exc:
                self._etags.pop(agent_id, None)
                return ProbeResult(AgentStatus.CRITICAL, None, f"card: {exc}"[:200])
            previous = self._from_card.get(agent_id)
            if previous is None or previous.card != registration.card:
                self._from_card[agent_id] = registration
                self._card_changed.add(agent_id)
            self._etags[agent_id] = fetched.etag
        if agent_id not in self._from_card:
            return ProbeResult(AgentStatus.CRITICAL, None, "card: not fetched yet")
        if spec.probe_health:
            return await probe(session, spec)
        return ProbeResult(AgentStatus.PASSING, None, f"card: valid at {spec.card}"[:200])

    async def _report(self, spec: AgentSpec, result: ProbeResult) -> None:
        agent_id = spec.agent_id
        registration = self._from_card.get(agent_id, spec.registration)
        if spec.card is not None and agent_id not in self._from_card:
            return  # no valid card yet: nothing to register (the card gives the capabilities)
        if agent_id not in self.registered or agent_id in self._card_changed:
            if result.load is not None:
                registration = registration.model_copy(update={"load": result.load})
            self._attempted.add(agent_id)
            await self.registry.register_agent(registration, status=result.status)
            self._card_changed.discard(agent_id)
            self.registered.add(agent_id)
            log.info("registered agent %s (%s)", agent_id, registration.service_name)
        await self.registry.heartbeat(agent_id, result.load, status=result.status, output=result.output)
        if result.draining is not None:
            self._asked_draining[agent_id] = result.draining
        await self._sync_draining(agent_id)

    async def _sync_draining(self, agent_id: str) -> None:
        wanted = self.draining or self._asked_draining.get(agent_id, False)
        if self._drained.get(agent_id, False) != wanted:
            await self.registry.set_draining(agent_id, wanted)
            self._drained[agent_id] = wanted
            log.info("agent %s %s", agent_id, "draining" if wanted else "no longer draining")

    async def set_draining(self, draining: bool) -> None:
        """Mark every registered agent of the file draining (or not); agents registered later follow."""
        self.draining = draining
        for agent_id in sorted(self.registered):
            try:
                await self._sync_draining(agent_id)
            except ConsulAgentsError as exc:
                log.warning("agent %s: could not change draining: %s", agent_id, exc)

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
    """Run a sidecar until SIGTERM or SIGINT (SIGUSR1 toggles draining); returns whether every agent was
    deregistered."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    toggles: set[asyncio.Task[None]] = set()
    try:
        async with registry:
            log.info(
                "sidecar for %s: %d agent(s), Consul at %s",
                config.path,
                len(config.agents),
                registry.settings.address,
            )
            sidecar = Sidecar(config, registry)

            def toggle() -> None:
                task = asyncio.create_task(sidecar.set_draining(not sidecar.draining))
                toggles.add(task)
                task.add_done_callback(toggles.discard)

            loop.add_signal_handler(signal.SIGUSR1, toggle)
            return await sidecar.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
        for task in list(toggles):
            task.cancel()
