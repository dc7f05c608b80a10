"""RegistryA2AClient: select an agent, call it through a2a-sdk, move on when it cannot be reached.

Each call selects an agent with the registry's lease (so load-aware strategies see calls in flight, and
failures feed outlier ejection), builds an a2a-sdk client from the card registered for it (read from
Consul, kept by digest: the agent is never asked for its card), and sends. When the agent cannot be
reached (connection refused or timed out: the message surely never arrived), the call moves on to
another agent matching the criteria, up to ``max_attempts`` agents. Any other error is the agent's answer
and is raised as is (after counting as a failure of that agent).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from types import TracebackType
from typing import Self

import httpx
from a2a.client import Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.client.card_resolver import parse_agent_card
from a2a.types import SendMessageRequest, StreamResponse
from cachetools import LRUCache

from consul_agents._errors import InvalidAgentError, NoAgentAvailableError
from consul_agents._models import AgentInfo, SelectionCriteria
from consul_agents._registry import AgentRegistry

__all__ = ["RegistryA2AClient", "a2a_client", "is_unreachable"]

log = logging.getLogger("consul_agents.a2a")

_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means the agent was never reached, so another may be tried."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, _UNREACHABLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RegistryA2AClient:
    """An a2a-sdk client that reaches whichever live agent the registry selects for ``criteria``.

    ``send_message`` has a2a-sdk's ``Client.send_message`` signature. ``last_agent`` is the agent the last
    call reached; ``client_for(agent)`` is the a2a-sdk client to one agent (tasks live on the agent that
    created them: follow one up with that agent's client).
    """

    def __init__(
        self,
        registry: AgentRegistry,
        criteria: SelectionCriteria,
        *,
        config: ClientConfig | None = None,
        max_attempts: int = 3,
        max_clients: int = 256,
    ) -> None:
        if max_attempts < 1:
            raise InvalidAgentError(f"max_attempts {max_attempts!r} must be >= 1", field="max_attempts")
        self.registry = registry
        self.criteria = criteria
        self.max_attempts = max_attempts
        self._owns_http = config is None or config.httpx_client is None
        base = config or ClientConfig(streaming=False)
        self._http = base.httpx_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        self._factory = ClientFactory(replace(base, httpx_client=self._http))
        #: (agent id, card digest) -> client; all share one connection pool, so dropping one closes nothing.
        self._clients: LRUCache[tuple[str, str], Client] = LRUCache(maxsize=max_clients)
        self.last_agent: AgentInfo | None = None

    def __repr__(self) -> str:
        last = self.last_agent.agent_id if self.last_agent else None
        return f"RegistryA2AClient(criteria={self.criteria!r}, last_agent={last!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._clients.clear()
        if self._owns_http:
            await self._http.aclose()

    async def client_for(self, agent: AgentInfo) -> Client:
        """The a2a-sdk client to ``agent``, built from its registered card (InvalidAgentError without one)."""
        if agent.card_digest is None:
            raise InvalidAgentError(
                f"agent {agent.agent_id!r} was registered without an A2A Agent Card", field="card"
            )
        key = (agent.agent_id, agent.card_digest)
        client = self._clients.get(key)
        if client is None:
            registered = await self.registry.get_registered_card(agent.agent_id)
            try:
                card = parse_agent_card(copy.deepcopy(registered.card))  # it edits what it parses
                client = self._factory.create(card)
            except (ValueError, TypeError) as exc:
                raise InvalidAgentError(
                    f"the card of agent {agent.agent_id!r} gives no usable interface: {exc}", field="card"
                ) from exc
            self._clients[(agent.agent_id, registered.digest)] = client
        return client

    async def send_message(
        self, request: SendMessageRequest, *, context: ClientCallContext | None = None
    ) -> AsyncIterator[StreamResponse]:
        """Send through a2a-sdk to the selected agent; move on to another while agents cannot be reached.

        Raises NoAgentAvailableError when no agent matches (or none could be reached: the last error is
        its cause).
        """
        tried: list[str] = []
        last_error: BaseException | None = None
        for _ in range(self.max_attempts):
            criteria = self.criteria.model_copy(update={"exclude": [*self.criteria.exclude, *tried]})
            started = False
            chosen: AgentInfo | None = None
            try:
                async with self.registry.lease(criteria) as agent:
                    chosen = agent
                    client = await self.client_for(agent)
                    self.last_agent = agent
                    async for event in client.send_message(request, context=context):
                        started = True
                        yield event
                return
            except NoAgentAvailableError as exc:
                if last_error is None:
                    raise
                raise NoAgentAvailableError(
                    f"no reachable agent for the call: tried {', '.join(tried)}"
                ) from exc
            except Exception as exc:
                if started or chosen is None or not is_unreachable(exc):
                    raise
                log.info("agent %s unreachable, trying another: %s", chosen.agent_id, exc)
                tried.append(chosen.agent_id)
                last_error = exc
        raise NoAgentAvailableError(
            f"no reachable agent for the call: tried {', '.join(tried)}"
        ) from last_error


@asynccontextmanager
async def a2a_client(
    registry: AgentRegistry,
    criteria: SelectionCriteria | None = None,
    *,
    config: ClientConfig | None = None,
    max_attempts: int = 3,
) -> AsyncIterator[RegistryA2AClient]:
    """``async with a2a_client(registry, criteria) as client``: an a2a-sdk client to the agents the registry
    selects for ``criteria`` (skills are capabilities: ``SelectionCriteria(capabilities=["summarize"])``)."""
    client = RegistryA2AClient(
        registry, criteria or SelectionCriteria(), config=config, max_attempts=max_attempts
    )
    try:
        yield client
    finally:
        await client.close()
