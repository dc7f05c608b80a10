"""``consul-agents render``: a sidecar file as service definitions for Consul's own config directory.

For teams that let Consul register their agents from files instead of running the sidecar. The service is
encoded exactly as a live registration (:func:`consul_agents._wire.service_definition`); only the check
differs by default: a file cannot heartbeat, so Consul itself probes the health endpoint (``--check
http``: 2xx passing, 429 warning, anything else critical; no load is read). ``--check ttl`` keeps the TTL
check, for setups where a process (for example ``consul-agents sidecar``) heartbeats it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from consul_agents import _wire as wire
from consul_agents import _wire_config as wire_config
from consul_agents._models import utcnow
from consul_agents.sidecar.config import AgentSpec, SidecarConfig

__all__ = ["render", "service_configs", "to_hcl"]

Format = Literal["json", "hcl"]
CheckKind = Literal["http", "ttl"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _service(spec: AgentSpec, check: CheckKind) -> dict[str, Any]:
    registration = spec.registration
    definition = wire.service_definition(
        registration, spec.agent_id, load=registration.load, heartbeat=utcnow()
    )
    replacement = None
    if check == "http":
        replacement = wire_config.http_check(
            spec.agent_id,
            spec.probe_url,
            interval=spec.health.interval,
            timeout=spec.health.timeout,
            deregister_after=registration.deregister_after,
        )
    return wire_config.config_file_service(definition, replacement)


def service_configs(config: SidecarConfig, check: CheckKind = "http") -> dict[str, Any]:
    """The whole config document: ``{"services": [...]}``."""
    return {"services": [_service(spec, check) for spec in config.agents]}


def _hcl_value(value: Any, indent: int) -> str:
    pad = "  " * indent
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        # HCL's numbers are JSON's, and so are its string escapes for everything json.dumps emits.
        return json.dumps(value)
    if isinstance(value, list):
        if all(not isinstance(item, dict) for item in value):
            return "[" + ", ".join(_hcl_value(item, indent) for item in value) + "]"
        items = [f"{pad}  {_hcl_value(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    if isinstance(value, dict):
        lines = [f"{pad}  {_hcl_key(key)} = {_hcl_value(item, indent + 1)}" for key, item in value.items()]
        return "{\n" + "\n".join(lines) + f"\n{pad}}}"
    raise TypeError(f"cannot write {type(value).__name__} as HCL")


def _hcl_key(key: str) -> str:
    return key if _IDENTIFIER.match(key) else json.dumps(key)


def to_hcl(document: dict[str, Any]) -> str:
    """A small HCL writer, enough for service definitions (strings, numbers, booleans, lists, maps)."""
    return "\n".join(f"{_hcl_key(key)} = {_hcl_value(value, 0)}" for key, value in document.items()) + "\n"


def render(config: SidecarConfig, fmt: Format = "json", check: CheckKind = "http") -> str:
    """The file's agents as a Consul config file in ``fmt``."""
    document = service_configs(config, check)
    if fmt == "hcl":
        return to_hcl(document)
    return json.dumps(document, indent=2) + "\n"
