"""From selection to an A2A call: an a2a-sdk client to the agent the registry selects.

The core never imports this package; it needs ``a2a-sdk`` (``pip install 'consul-agents[a2a]'``)::

    criteria = SelectionCriteria(capabilities=["echo"])
    async with AgentRegistry() as registry, a2a_client(registry, criteria) as client:
        async for event in client.send_message(SendMessageRequest(message=...)):
            ...
"""

from consul_agents.a2a._client import RegistryA2AClient, a2a_client, is_unreachable
from consul_agents.a2a._signing import card_verifier, jwks_keys, jwks_verifier, sign_card

__all__ = [
    "RegistryA2AClient",
    "a2a_client",
    "card_verifier",
    "is_unreachable",
    "jwks_keys",
    "jwks_verifier",
    "sign_card",
]
