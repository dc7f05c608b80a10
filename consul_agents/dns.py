"""Consul DNS names for agents, and the prepared query template that makes them fail over across datacenters.

Names (``consul`` is Consul's default domain; add ``.<dc>`` before it to ask another datacenter)::

    agent-<type>.service.consul                   every passing or warning agent of a type, local datacenter
    <capability>.agent-<type>.service.consul      ... with that capability
    _agent-<type>._<capability>.service.consul    the same, RFC 2782 style
    agent-<type>.query.consul                     healthy agents of a type, nearest datacenter having any
    agent-<type>.<capability>.query.consul        ... with that capability

The ``.service`` names work as soon as an agent is registered. The ``.query`` names need the prepared
query template, created by :func:`setup_prepared_query` (``consul-agents dns setup``). Prepared queries are
stored per datacenter, so set it up in every datacenter whose DNS clients should use it.

SRV records carry the agent's port and a target that resolves (in the answer's additional section) to its
address. Critical agents are never in an answer. Agents in ``warning`` are, unless Consul's
``dns_config { only_passing = true }`` is set (``.service`` names) or the template was set up with
``only_passing`` (``.query`` names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from consul_agents import _wire_config as wire_config
from consul_agents._errors import InvalidAgentError
from consul_agents._gateway import ConsulGateway
from consul_agents._models import SERVICE_PREFIX

__all__ = ["SetupOutcome", "query_dns_name", "rfc2782_name", "service_dns_name", "setup_prepared_query"]

SetupOutcome = Literal["created", "updated", "unchanged"]


def service_dns_name(agent_type: str, capability: str | None = None, *, domain: str = "consul") -> str:
    """``[<capability>.]agent-<type>.service.<domain>``: the local datacenter's agents."""
    prefix = f"{capability}." if capability else ""
    return f"{prefix}{SERVICE_PREFIX}{agent_type}.service.{domain}"


def rfc2782_name(agent_type: str, capability: str, *, domain: str = "consul") -> str:
    """``_agent-<type>._<capability>.service.<domain>`` (Consul reads the second label as the tag)."""
    return f"_{SERVICE_PREFIX}{agent_type}._{capability}.service.{domain}"


def query_dns_name(agent_type: str, capability: str | None = None, *, domain: str = "consul") -> str:
    """``agent-<type>[.<capability>].query.<domain>``: through the template, with datacenter failover."""
    return f"{wire_config.query_name(agent_type, capability)}.query.{domain}"


async def setup_prepared_query(
    gateway: ConsulGateway,
    *,
    datacenter: str | None = None,
    nearest_n: int = 3,
    failover_datacenters: Sequence[str] = (),
    only_passing: bool = False,
) -> SetupOutcome:
    """Create the agent lookup template in ``datacenter``, or bring it up to date. Idempotent.

    Writes nothing when the template already says what is wanted. A negative ``nearest_n`` or a failover
    datacenter Consul does not know raises InvalidAgentError before anything is written (Consul itself
    would answer 500 to the first and accept the second silently).
    """
    if nearest_n < 0:
        raise InvalidAgentError(
            f"nearest_n must be 0 or more (0: no nearest-datacenter failover), got {nearest_n}",
            field="nearest_n",
        )
    if failover_datacenters:
        answer = await gateway.get("list datacenters", "/v1/catalog/datacenters")
        known = [dc for dc in answer.body or [] if isinstance(dc, str)]
        unknown = [dc for dc in failover_datacenters if dc not in known]
        if unknown:
            raise InvalidAgentError(
                f"failover datacenter(s) {', '.join(map(repr, unknown))} unknown to Consul; "
                f"known: {', '.join(known) or '(none)'}",
                field="failover_datacenters",
            )
    wanted = wire_config.prepared_query_template(
        nearest_n=nearest_n, datacenters=failover_datacenters, only_passing=only_passing
    )
    operation = "set up the agent prepared query template"
    listing = await gateway.get(operation, "/v1/query", datacenter=datacenter)
    queries = listing.body or []
    query_id = wire_config.find_template(queries)
    if query_id is None:
        await gateway.post(operation, "/v1/query", wanted, datacenter=datacenter)
        return "created"
    existing = next(q for q in queries if q.get("ID") == query_id)
    if not wire_config.template_differs(existing, wanted):
        return "unchanged"
    await gateway.put(operation, f"/v1/query/{query_id}", wanted, datacenter=datacenter)
    return "updated"
