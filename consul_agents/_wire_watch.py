"""What ``consul watch`` hands its handler, read as alerts (pure).

``consul watch -type=checks -state=critical <handler>`` and ``consul watch -type=service -service=agent-<type>
<handler>`` run the handler on every change with the watch's current result as JSON on stdin: a list of
health checks, or a list of ``/v1/health/service`` entries. Both are read as untrusted input: only agent
services count (``agent-<type>`` with an id this library registers), strings are cut to a bounded length,
and anything else is skipped. Deliberate states alert nobody: a draining agent's check and a service in
maintenance are not failures.

Alerts use Alertmanager's API v2 shape (``labels``, ``annotations``, ``startsAt``), so the same objects are
printed as JSON lines and can be posted to ``/api/v2/alerts``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consul_agents import _wire as wire
from consul_agents import _wire_read as wire_read
from consul_agents._models import AGENT_ID_PATTERN, AgentInfo, AgentStatus

__all__ = ["WatchAlert", "alerts_from_watch"]

#: Longest string taken from Consul into an alert (check output can be 4 KB of an agent's answer).
MAX_FIELD = 512

_ALERTS = {
    AgentStatus.CRITICAL: ("ConsulAgentsAgentCritical", "warning"),
    AgentStatus.WARNING: ("ConsulAgentsAgentWarning", "info"),
}


def _cut(value: object) -> str:
    return wire_read.clipped(value if isinstance(value, str) else "", MAX_FIELD)


@dataclass(frozen=True, slots=True)
class WatchAlert:
    alertname: str
    severity: str
    agent_type: str
    agent_id: str = ""
    datacenter: str = ""
    node: str = ""
    summary: str = ""
    output: str = ""

    def to_alertmanager(self, now: datetime) -> dict[str, Any]:
        """The alert in Alertmanager's ``POST /api/v2/alerts`` shape, firing since ``now``."""
        labels = {
            "alertname": self.alertname,
            "severity": self.severity,
            "agent_type": self.agent_type,
            "agent_id": self.agent_id,
            "datacenter": self.datacenter,
            "node": self.node,
            "source": "consul-watch",
        }
        annotations = {"summary": self.summary, "output": self.output}
        return {
            "labels": {k: v for k, v in labels.items() if v},
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": now.isoformat(),
        }


def _from_checks(checks: list[Any]) -> list[WatchAlert]:
    alerts = []
    for check in checks:
        if not isinstance(check, dict):
            continue
        service, agent_id, check_id = (check.get(k) for k in ("ServiceName", "ServiceID", "CheckID"))
        if not (isinstance(service, str) and wire.is_agent_service(service)):
            continue
        if not (
            isinstance(agent_id, str) and AGENT_ID_PATTERN.fullmatch(agent_id) and isinstance(check_id, str)
        ):
            continue
        if check_id.startswith("_service_maintenance:") or check_id == wire.draining_check_id(agent_id):
            continue
        try:
            status = AgentStatus(str(check.get("Status")))
        except ValueError:
            continue
        if status not in _ALERTS:
            continue
        alertname, severity = _ALERTS[status]
        agent_type = wire.agent_type_of(service)
        alerts.append(
            WatchAlert(
                alertname,
                severity,
                agent_type,
                agent_id,
                node=_cut(check.get("Node")),
                summary=f"agent {agent_id} of type {agent_type} is {status.value} (check {_cut(check_id)})",
                output=_cut(check.get("Output")),
            )
        )
    return alerts


def _from_entries(agents: Iterable[AgentInfo]) -> list[WatchAlert]:
    alerts = []
    passing: dict[tuple[str, str], bool] = {}
    for agent in agents:
        key = (agent.datacenter, agent.agent_type)
        passing[key] = passing.get(key, False) or agent.status is AgentStatus.PASSING
        if agent.draining or agent.status not in _ALERTS:
            continue
        alertname, severity = _ALERTS[agent.status]
        alerts.append(
            WatchAlert(
                alertname,
                severity,
                agent.agent_type,
                agent.agent_id,
                agent.datacenter,
                agent.node,
                summary=f"agent {agent.agent_id} of type {agent.agent_type} is {agent.status.value}",
            )
        )
    for (datacenter, agent_type), any_passing in sorted(passing.items()):
        if not any_passing:
            summary = f"no passing agent of type {agent_type} in {datacenter or 'the datacenter'}"
            alerts.append(
                WatchAlert(
                    "ConsulAgentsNoPassingAgent",
                    "critical",
                    agent_type,
                    datacenter=datacenter,
                    summary=summary,
                )
            )
    return alerts


def alerts_from_watch(text: str) -> list[WatchAlert]:
    """The alerts in what ``consul watch -type=checks`` or ``-type=service`` wrote to its handler's stdin.

    Raises ValueError naming the problem when ``text`` is not such a result (not JSON, not a list).
    """
    if not text.strip():
        return []  # consul watch's first run of a watch with nothing to report can write nothing
    try:
        data = json.loads(text)
    except RecursionError:
        # a service entry nesting deeper than the parser goes (a Connect proxy's Config): decoded entry by
        # entry, the one too deep read as malformed
        data = wire.health_entries(text)
        if not isinstance(data, list):
            raise ValueError("not JSON: nested too deep") from None
    except ValueError as exc:
        raise ValueError(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, list):
        raise ValueError(
            f"a JSON {type(data).__name__}, not the array that `consul watch -type=checks` or "
            "`-type=service` writes"
        )
    if any(isinstance(item, dict) and "Service" in item for item in data):
        return _from_entries(wire_read.infos_only(wire_read.read_entries(data)))
    return _from_checks(data)
