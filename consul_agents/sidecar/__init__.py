"""The sidecar: register agents described in a YAML file, probe their health, heartbeat for them.

For agents that never import this library. ``consul-agents sidecar FILE`` runs it; ``consul-agents render
FILE`` prints the same agents as Consul service definitions. The file format is documented in
:mod:`consul_agents.sidecar.config` and in the README.
"""

from consul_agents.sidecar.config import AgentSpec, HealthProbe, SidecarConfig, load_config
from consul_agents.sidecar.probe import ProbeResult, probe, verdict
from consul_agents.sidecar.render import render, service_configs
from consul_agents.sidecar.runner import Sidecar, run_sidecar

__all__ = [
    "AgentSpec",
    "HealthProbe",
    "ProbeResult",
    "Sidecar",
    "SidecarConfig",
    "load_config",
    "probe",
    "render",
    "run_sidecar",
    "service_configs",
    "verdict",
]
