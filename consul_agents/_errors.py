"""The exceptions consul-agents raises.

Every error derives from :class:`ConsulAgentsError`. The tree separates "Consul never answered" from
"Consul answered with an error", because callers react differently: the first is worth a retry or a
failover to another datacenter, the second is not::

    ConsulAgentsError
    ├── RegistryUnavailableError (ConnectionError)   Consul could not be reached or did not answer in time
    │   └── RegistryTimeoutError (TimeoutError)      ... specifically: the request timed out
    ├── InvalidAgentError (ValueError)               bad input, rejected before anything reached Consul
    ├── AgentNotFoundError (LookupError)             no agent with that id is registered
    ├── NoAgentAvailableError (LookupError)          no agent matches a lease's criteria (or all excluded)
    ├── PermissionDeniedError (PermissionError)      Consul's ACL system refused the operation
    └── ConsulRequestError                           Consul answered with another error (bad request, 5xx)

No message or attribute of these exceptions ever carries an ACL token.
"""

from __future__ import annotations

__all__ = [
    "AgentNotFoundError",
    "ConsulAgentsError",
    "ConsulRequestError",
    "InvalidAgentError",
    "NoAgentAvailableError",
    "PermissionDeniedError",
    "RegistryTimeoutError",
    "RegistryUnavailableError",
]


class ConsulAgentsError(Exception):
    """Base class of every error raised by consul-agents."""


class RegistryUnavailableError(ConsulAgentsError, ConnectionError):
    """Consul could not be reached at ``address``, or gave no usable answer in time; ``datacenter`` names
    the remote datacenter that failed when one was asked through it ("" otherwise)."""

    def __init__(self, message: str, *, address: str = "", datacenter: str = "") -> None:
        super().__init__(message)
        self.address = address
        self.datacenter = datacenter


class RegistryTimeoutError(RegistryUnavailableError, TimeoutError):
    """A request to Consul did not complete within its timeout."""


class InvalidAgentError(ConsulAgentsError, ValueError):
    """Input was rejected before anything was written to Consul; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class AgentNotFoundError(ConsulAgentsError, LookupError):
    """No agent with ``agent_id`` is registered."""

    def __init__(self, agent_id: str, detail: str = "") -> None:
        message = f"agent {agent_id!r} is not registered"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.agent_id = agent_id


class NoAgentAvailableError(ConsulAgentsError, LookupError):
    """No agent matched the criteria of a lease (none registered, all unhealthy, excluded or ejected)."""


class PermissionDeniedError(ConsulAgentsError, PermissionError):
    """Consul's ACL system denied ``operation``. The token is never named."""

    def __init__(self, operation: str, detail: str = "") -> None:
        message = f"permission denied: {operation}"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.operation = operation


class ConsulRequestError(ConsulAgentsError):
    """Consul answered ``operation`` with an error status other than denied or not found."""

    def __init__(self, operation: str, status: int, detail: str = "") -> None:
        super().__init__(f"{operation} failed: Consul answered {status}" + (f": {detail}" if detail else ""))
        self.operation = operation
        self.status = status
