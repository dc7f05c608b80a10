"""The Consul side of pools (see :mod:`consul_agents._pools`): reading and writing pool settings in KV,
putting a pool together from discovery, and telling why a selection found nobody.

Every read goes through the client's own gateway and discovery, so it is made with the client's token and
within the calling operation's deadline: a token that may not read a type's agents or its pool key sees
neither (Consul's ACLs filter KV listings as they filter the catalog).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from consul_agents import _pools as pools
from consul_agents import _wire as wire
from consul_agents._errors import ConsulAgentsError, InvalidAgentError, PermissionDeniedError
from consul_agents._models import AgentInfo, AgentStatus, DiscoveryRequest, DiscoveryResult, SelectionCriteria
from consul_agents._pools import PoolSettings, PoolSettingsError, PoolStatus, UnmetReason
from consul_agents._routing import check_region

if TYPE_CHECKING:
    from consul_agents._registry import AgentRegistry

__all__ = [
    "MAX_POOLS",
    "census_and_pools",
    "metrics_census",
    "pool",
    "pool_list",
    "read_settings",
    "settings_by_type",
    "unmet_reason",
    "write_settings",
]

log = logging.getLogger("consul_agents.pools")

#: Pools read from one datacenter's KV at most (sorted by type; the rest are logged and left out).
MAX_POOLS = 1024

Found = PoolSettings | PoolSettingsError


async def _read_kv(registry: AgentRegistry, datacenter: str, key: str, **options: Any) -> Any:
    """The body of a read of pool settings at ``key``: None when absent or the token may not read it."""
    try:
        response = await registry.gateway.get(
            "read pool settings", f"/v1/kv/{key}", allow_404=True, datacenter=datacenter or None, **options
        )
    except PermissionDeniedError:
        return None
    return response.body


async def settings_by_type(registry: AgentRegistry, datacenter: str) -> dict[str, Found]:
    """Every pool's settings in a datacenter's KV that the client's token may read, by agent type."""
    body = await _read_kv(registry, datacenter, pools.POOL_PREFIX, params={"recurse": ""})
    found: dict[str, Found] = {}
    values = wire.kv_values_under(body, pools.POOL_PREFIX)
    for name in sorted(values):
        agent_type = pools.pool_type_of(name)
        if agent_type is None:
            pools.log_bad_settings(datacenter, name, "the key names no valid agent type")
            continue
        if len(found) >= MAX_POOLS:
            pools.log_bad_settings(datacenter, name, f"more than {MAX_POOLS} pools; the rest are left out")
            break
        found[agent_type] = _parsed(datacenter, agent_type, values[name])
    return found


def _parsed(datacenter: str, agent_type: str, raw: bytes) -> Found:
    try:
        return pools.parse_settings(raw)
    except PoolSettingsError as exc:
        pools.log_bad_settings(datacenter, agent_type, str(exc))
        return exc


async def read_settings(registry: AgentRegistry, agent_type: str, datacenter: str) -> Found | None:
    """One pool's settings (None when it has none, or the token may not read them)."""
    body = await _read_kv(
        registry, datacenter, pools.pool_key(agent_type), params={"raw": ""}, raw=True, decode=bytes
    )
    if not isinstance(body, bytes):
        return None
    return _parsed(datacenter, agent_type, body)


def _checked(agent_type: str, region: str | None) -> str:
    """The agent type in its one spelling; InvalidAgentError naming the field otherwise (and for a bad
    datacenter name)."""
    checked = DiscoveryRequest(agent_type=agent_type, region=region).agent_type
    assert checked is not None
    return checked


async def write_settings(
    registry: AgentRegistry, agent_type: str, settings: PoolSettings | None, datacenter: str | None
) -> None:
    """Store a pool's settings (None removes them). Needs KV write on the pool's key (a pool-admin token)."""
    key = pools.pool_key(_checked(agent_type, datacenter))
    if settings is not None and not isinstance(settings, PoolSettings):
        raise InvalidAgentError("settings must be a PoolSettings (or None to remove them)", field="settings")
    if datacenter is not None:
        # Consul would answer 500 "No path to datacenter" (which also means a WAN outage): a 422 instead.
        check_region(datacenter, await registry.discovery.datacenters())
    if settings is None:
        await registry.gateway.delete("remove pool settings", f"/v1/kv/{key}", datacenter=datacenter)
    else:
        await registry.gateway.put(
            "write pool settings", f"/v1/kv/{key}", settings.to_json(), datacenter=datacenter
        )


async def census_and_pools(registry: AgentRegistry) -> tuple[list[AgentInfo], list[PoolStatus]]:
    """A census and every pool the client's token sees in every datacenter, the census and the settings
    reads (one per datacenter's KV) made together. A datacenter whose KV cannot be read leaves its pools
    without a signal (their ``settings_error`` says why), never out of the answer; the census's own error
    is raised."""
    discovery = registry.discovery
    datacenters = list(dict.fromkeys([await discovery.local_datacenter(), *await discovery.datacenters()]))
    reads = asyncio.gather(*(settings_by_type(registry, dc) for dc in datacenters), return_exceptions=True)
    try:
        census = await registry.census()
    except BaseException:
        reads.cancel()
        raise
    answers: list[dict[str, Found] | BaseException] = await reads
    settings: dict[tuple[str, str], Found] = {}
    for datacenter, answer in zip(datacenters, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, ConsulAgentsError):
                raise answer
            log.info("pool settings of datacenter %s not read: %s", datacenter, answer)
            unread = PoolSettingsError(f"the pool settings could not be read: {answer}")
            for agent in census:
                if agent.datacenter == datacenter:
                    settings[(agent.agent_type, datacenter)] = unread
            continue
        settings.update({(agent_type, datacenter): found for agent_type, found in answer.items()})
    return census, pools.build_pools(census, settings)


async def pool_list(registry: AgentRegistry) -> list[PoolStatus]:
    """Every pool the client's token sees in every datacenter (see :func:`census_and_pools`)."""
    return (await census_and_pools(registry))[1]


async def metrics_census(registry: AgentRegistry) -> tuple[list[AgentInfo], bytes]:
    """What a ``/metrics`` scrape needs: the census (for the agents gauge) and the per-pool gauges. The
    census's error is raised; the pools' own problems only leave their gauges without a signal (logged)."""
    census, found = await census_and_pools(registry)
    return census, pools.pool_exposition(found)


async def pool(registry: AgentRegistry, agent_type: str, region: str | None) -> PoolStatus:
    """One pool: the type's agents of every status in ``region`` (default: the local datacenter) and its
    settings there."""
    agent_type = _checked(agent_type, region)
    request = DiscoveryRequest(agent_type=agent_type, include_draining=True)
    datacenter = region or await registry.discovery.local_datacenter()
    answers = await asyncio.gather(
        *(
            registry.discovery.discover(
                request.model_copy(update={"status": status, "region": datacenter or None})
            )
            for status in AgentStatus
        )
    )
    agents = [agent for answer in answers for agent in answer.agents]
    found = await read_settings(registry, agent_type, datacenter)
    settings = {} if found is None else {(agent_type, datacenter): found}
    return pools.build_pools(agents, settings, include=[(agent_type, datacenter)])[0]


async def unmet_reason(
    registry: AgentRegistry, criteria: SelectionCriteria, result: DiscoveryResult, cached: bool | None
) -> UnmetReason:
    """Why a selection found nobody in ``result`` (its datacenter): a follow-up discovery, made only on this
    path, within the selection's deadline."""
    if result.agents:
        return "all_excluded"
    base = DiscoveryRequest(
        agent_type=criteria.agent_type,
        capabilities=list(criteria.capabilities),
        tags=dict(criteria.tags),
        region=result.datacenter or None,
        include_draining=True,
    )
    # status None is what discovery calls live (passing and warning): one question, not one per status
    live: list[AgentStatus | None] = [criteria.status]
    covered = [criteria.status] if criteria.status else [AgentStatus.PASSING, AgentStatus.WARNING]
    others: list[AgentStatus | None] = [status for status in AgentStatus if status not in covered]
    try:
        found = await _statuses(registry, base, live, cached)
        if found:
            return "over_max_load" if any(not agent.draining for agent in found) else "all_excluded"
        return "none_passing" if await _statuses(registry, base, others, cached) else "none_registered"
    except ConsulAgentsError as exc:
        log.debug("reason of an unmet selection not found: %s", exc)
        return "unknown"


async def _statuses(
    registry: AgentRegistry, base: DiscoveryRequest, statuses: list[AgentStatus | None], cached: bool | None
) -> list[AgentInfo]:
    answers = await asyncio.gather(
        *(registry.discovery.discover(base.model_copy(update={"status": s}), cached=cached) for s in statuses)
    )
    return [agent for answer in answers for agent in answer.agents]


async def record_unmet(
    registry: AgentRegistry, criteria: SelectionCriteria, result: DiscoveryResult, cached: bool | None
) -> UnmetReason:
    """Count a selection that found nobody, with its reason."""
    reason = await unmet_reason(registry, criteria, result, cached)
    pools.record_unmet(criteria.agent_type or "", result.datacenter, reason)
    return reason
