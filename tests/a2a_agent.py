"""A real A2A agent for the tests, written with a2a-sdk's server and run by uvicorn in a child process.

Run ``python a2a_agent.py NAME SKILL [SKILL...]``; it binds a free loopback port, serves its Agent Card at
``/.well-known/agent-card.json`` (JSON-RPC interface at ``/``) and prints ``PORT <n>`` once it listens. It
answers every message with ``<NAME>: <text>``. ``POST /control?skill=<id>`` adds a skill to the card it
serves; ``POST /control?card=broken`` makes it serve a body that is not a card (``card=huge``: 300 KB of
JSON, ``card=big`` a valid 100 KB card, ``card=ok`` the card again); every ``/control`` answer
says how many times the card was asked for. With ``A2A_TEST_SIGNING_KEY`` (a PEM file of an EC P-256
private key) and ``A2A_TEST_KID`` in its environment it signs the card it serves (ES256, a2a-sdk's signer).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import Any

import uvicorn
from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from a2a.utils.signing import create_agent_card_signer
from processes import serve_until_signalled
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

STATE: dict[str, Any] = {"broken": False, "card_requests": 0}


class Echo(AgentExecutor):
    def __init__(self, name: str) -> None:
        self.name = name

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        await event_queue.enqueue_event(
            new_text_message(f"{self.name}: {context.get_user_input()}", context_id=context.context_id)
        )

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def make_card(name: str, skills: list[str], port: int) -> AgentCard:
    return AgentCard(
        name=name,
        description=f"test agent {name}",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=f"http://127.0.0.1:{port}/", protocol_binding="JSONRPC", protocol_version="1.0"
            )
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id=s, name=s, description=f"does {s}", tags=[s]) for s in skills],
    )


def build_app(name: str, skills: list[str], port: int) -> Starlette:
    card = make_card(name, skills, port)
    handler = DefaultRequestHandler(
        agent_executor=Echo(name), task_store=InMemoryTaskStore(), agent_card=card
    )

    key_file, kid = os.environ.get("A2A_TEST_SIGNING_KEY"), os.environ.get("A2A_TEST_KID", "")
    signer = None
    if key_file:
        with open(key_file, "rb") as handle:
            key = handle.read()
        signer = create_agent_card_signer(key, {"kid": kid, "alg": "ES256", "jku": None, "typ": "JOSE"})

    async def current(served: AgentCard) -> AgentCard:
        if signer is None:
            return card
        signed = AgentCard()
        signed.CopyFrom(card)
        return signer(signed)

    card_routes = create_agent_card_routes(card, card_modifier=current)

    async def card_or_broken(request: Request) -> Response:
        STATE["card_requests"] += 1
        if STATE["broken"] == "huge":
            return JSONResponse({"name": "x" * 300_000})
        if STATE["broken"] == "big":  # a valid card of 100 KB, more than one read of the socket
            response = await card_routes[0].endpoint(request)
            big = json.loads(bytes(response.body))
            return JSONResponse({**big, "description": "y" * 100_000})
        if STATE["broken"]:
            return Response("<html>not a card</html>", media_type="text/html")
        return await card_routes[0].endpoint(request)  # type: ignore[no-any-return]

    async def control(request: Request) -> Response:
        if "skill" in request.query_params:
            skill = request.query_params["skill"]
            card.skills.append(AgentSkill(id=skill, name=skill, description=f"does {skill}", tags=[skill]))
        if "card" in request.query_params:
            modes = {"broken": True, "huge": "huge", "big": "big"}
            STATE["broken"] = modes.get(request.query_params["card"], False)
        return JSONResponse({"skills": [s.id for s in card.skills], **STATE})

    routes = [
        Route(card_routes[0].path, card_or_broken, methods=["GET"]),
        Route("/control", control, methods=["POST"]),
        *create_jsonrpc_routes(handler, rpc_url="/"),
    ]
    return Starlette(routes=routes)


async def main(name: str, skills: list[str]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(name, skills, port), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.01)
    await serve_until_signalled(port)
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
