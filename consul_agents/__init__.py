"""consul-agents: a registry and discovery layer for AI agents, built on HashiCorp Consul."""

from consul_agents._batch import BatchItemResult, BatchResult, InvalidBatchError
from consul_agents._card_ops import RegisteredCard
from consul_agents._errors import (
    AgentNotFoundError,
    ConsulAgentsError,
    ConsulRequestError,
    InvalidAgentError,
    NoAgentAvailableError,
    PermissionDeniedError,
    RegistryTimeoutError,
    RegistryUnavailableError,
)
from consul_agents._models import (
    AgentInfo,
    AgentRegistration,
    AgentStatus,
    DiscoveryRequest,
    DiscoveryResult,
    SelectionCriteria,
    Strategy,
)
from consul_agents._pools import PoolSettings, PoolStatus
from consul_agents._registry import AgentRegistry, AgentSession
from consul_agents._replace import Replacement, ReplacementError
from consul_agents._settings import ConsulSettings

__version__ = "0.1.0"

__all__ = [
    "AgentInfo",
    "AgentNotFoundError",
    "AgentRegistration",
    "AgentRegistry",
    "AgentSession",
    "AgentStatus",
    "BatchItemResult",
    "BatchResult",
    "ConsulAgentsError",
    "ConsulRequestError",
    "ConsulSettings",
    "DiscoveryRequest",
    "DiscoveryResult",
    "InvalidAgentError",
    "InvalidBatchError",
    "NoAgentAvailableError",
    "PermissionDeniedError",
    "PoolSettings",
    "PoolStatus",
    "RegisteredCard",
    "RegistryTimeoutError",
    "RegistryUnavailableError",
    "Replacement",
    "ReplacementError",
    "SelectionCriteria",
    "Strategy",
    "__version__",
]
