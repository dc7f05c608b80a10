"""The web page at / in headless Chromium: it shows the agents by datacenter and type, with their details."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import test_utils

from consul_agents import AgentRegistration, AgentRegistry, AgentStatus
from consul_agents.api import create_app

CHROMIUM = next(
    (path for path in ("/usr/bin/chromium", shutil.which("chromium") or "") if path and Path(path).exists()),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (`make tools` installs it)",
)


@pytest.fixture
async def page_url(consul_addr: str) -> AsyncIterator[str]:
    server = test_utils.TestServer(create_app(consul_addr))
    async with test_utils.TestClient(server):
        yield str(server.make_url("/"))


async def chromium(tmp_path: Path, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium without blocking the event loop (the API under test runs on it)."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=8000",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return stdout.decode()


@pytest.fixture
async def fleet(consul_addr: str, unique: str) -> AsyncIterator[None]:
    """Three agents of two types, one of them critical; deregistered after the test."""
    async with AgentRegistry(consul_addr) as registry:
        for agent_type, count in ((f"{unique}-planner", 2), (f"{unique}-coder", 1)):
            for n in range(count):
                await registry.register_agent(
                    AgentRegistration(
                        agent_type=agent_type,
                        agent_id=f"{agent_type}-{n}",
                        capabilities=["plan", "code"] if n == 0 else ["plan"],
                        endpoint=f"http://127.0.0.1:{9000 + n}",
                        load=0.25 * (n + 1),
                        ttl=60,
                    )
                )
        await registry.heartbeat(f"{unique}-planner-1", status=AgentStatus.CRITICAL)
        yield
        for agent_id in (f"{unique}-planner-0", f"{unique}-planner-1", f"{unique}-coder-0"):
            await registry.deregister_agent(agent_id)


def agent_rows(dom: str) -> dict[str, str]:
    """agent id -> the text of its table row, from Chromium's DOM dump."""
    rows = re.findall(r'<tr data-agent-id="([^"]+)">(.*?)</tr>', dom, flags=re.S)
    return {agent_id: re.sub(r"<[^>]+>", " ", html) for agent_id, html in rows}


async def test_page_shows_agents_by_datacenter_and_type(
    page_url: str, fleet: None, unique: str, tmp_path: Path
) -> None:
    """After its scripts ran, the page lists each agent under its datacenter and type with status and load."""
    dom = await chromium(tmp_path, "--dump-dom", page_url)

    assert re.search(r'<section class="dc" data-datacenter="dc1">', dom), dom[:2000]
    assert f'data-agent-type="{unique}-planner"' in dom
    assert f'data-agent-type="{unique}-coder"' in dom
    rows = agent_rows(dom)
    planner0 = rows[f"{unique}-planner-0"].split()
    assert planner0[:3] == [f"{unique}-planner-0", "passing", "0.25"]
    assert "1.0" in planner0 and "plan" in planner0 and "code" in planner0
    assert rows[f"{unique}-planner-1"].split()[:3] == [f"{unique}-planner-1", "critical", "0.50"]
    state = re.search(r'<span id="state"[^>]*>([^<]*)<', dom)
    assert state is not None and state.group(1).startswith("updated"), state


async def test_page_screenshot_renders(page_url: str, fleet: None, tmp_path: Path) -> None:
    """Chromium renders the page to a PNG of the requested size (kept in the test's tmp folder to look at)."""
    shot = tmp_path / "page.png"
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,800", "--hide-scrollbars", page_url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 800)
    assert len(data) > 20_000  # a blank page compresses to a few kilobytes
