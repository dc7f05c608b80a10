"""Select an agent with the skill "echo" and talk to it through a2a-sdk: python examples/a2a/caller.py"""

import asyncio

from a2a.helpers import get_message_text, new_text_message
from a2a.types import Role, SendMessageRequest

from consul_agents import AgentRegistry, DiscoveryRequest, SelectionCriteria
from consul_agents.a2a import a2a_client


async def main() -> None:
    async with AgentRegistry() as registry:  # CONSUL_HTTP_ADDR, else http://127.0.0.1:8500
        for entry in await registry.agent_cards(DiscoveryRequest(capabilities=["echo"])):
            print(entry.agent.agent_id, entry.card["name"], entry.card["version"], entry.agent.endpoint)
        async with a2a_client(registry, SelectionCriteria(capabilities=["echo"])) as client:
            request = SendMessageRequest(message=new_text_message("hello", role=Role.ROLE_USER))
            async for event in client.send_message(request):
                print(get_message_text(event.message))


asyncio.run(main())
