"""The web page marks draining agents (headless Chromium against the REST API and real Consul)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import test_utils
from test_web_page import CHROMIUM, agent_rows, chromium

from consul_agents import AgentRegistration, AgentRegistry
from consul_agents.api import create_app

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make tools`)")


@pytest.fixture
async def page_url(consul_addr: str) -> AsyncIterator[str]:
    server = test_utils.TestServer(create_app(consul_addr))
    async with test_utils.TestClient(server):
        yield str(server.make_url("/"))


async def test_page_shows_draining_agents(
    page_url: str, registry: AgentRegistry, unique: str, tmp_path: Path
) -> None:
    """A draining agent stays on the page, passing, with a draining badge, and the summary counts it; an
    agent with an A2A card shows the card's version."""
    ids = [
        await registry.register_agent(
            AgentRegistration(
                agent_type=unique,
                agent_id=f"{unique}-{n}",
                capabilities=["plan"],
                endpoint=f"http://127.0.0.1:{9100 + n}",
                ttl=60,
            )
        )
        for n in range(2)
    ]
    await registry.set_draining(ids[0])
    card = {
        "name": "Carded",
        "description": "d",
        "version": "3.1.4",
        "supportedInterfaces": [{"url": "http://127.0.0.1:9102/", "protocolBinding": "JSONRPC"}],
        "skills": [{"id": "plan", "name": "Plan"}],
    }
    ids.append(
        await registry.register_agent(
            AgentRegistration.from_agent_card(card, agent_type=unique, agent_id=f"{unique}-2", ttl=60)
        )
    )
    try:
        dom = await chromium(tmp_path, "--dump-dom", page_url)
    finally:
        for agent_id in ids:
            await registry.deregister_agent(agent_id)
    rows = agent_rows(dom)
    assert rows[ids[0]].split()[:3] == [ids[0], "passing", "draining"]
    assert "draining" not in rows[ids[1]]
    assert "A2A card 3.1.4" in rows[ids[2]] and "A2A" not in rows[ids[1]]
    summary = re.search(r'<[^>]+id="summary"[^>]*>([^<]*)<', dom)
    assert summary is not None and "draining" in summary.group(1), summary
