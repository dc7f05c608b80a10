"""The web page while Consul is unreachable (fail-static), and its header on a 1,400-pixel window."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiohttp import test_utils, web
from conftest import MakeConsul
from support import eventually
from test_web_page import CHROMIUM, chromium

from consul_agents import AgentRegistration, AgentRegistry
from consul_agents.api import create_app

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make tools`)")

#: A page on the API's own origin that loads "/" in a 1,400-pixel frame and reports, once the page has
#: refreshed, its header's height and the text of its outage banner.
PROBE = """<!doctype html><html><body style="margin:0">
<iframe id="f" src="/" style="width:1400px;height:900px;border:0"></iframe>
<pre id="out"></pre>
<script>
setTimeout(() => {
  const doc = document.getElementById("f").contentDocument;
  const header = doc.querySelector("header").getBoundingClientRect().height;
  const h1 = doc.querySelector("header h1").getBoundingClientRect().height;
  const outage = doc.getElementById("outage");
  const rows = doc.querySelectorAll("tr[data-agent-id]").length;
  document.getElementById("out").textContent = JSON.stringify({
    header, h1, rows, outage: outage && !outage.hidden ? outage.textContent : null,
    state: doc.getElementById("state").textContent,
  });
}, 5000);
</script></body></html>"""


async def probe_page(request: web.Request) -> web.Response:
    return web.Response(text=PROBE, content_type="text/html")


async def probe(page: str, tmp_path: Path) -> dict[str, object]:
    dom = await chromium(tmp_path, "--dump-dom", "--window-size=1500,1000", page)
    found = re.search(r'<pre id="out">([^<]*)</pre>', dom)
    assert found is not None and found.group(1), dom[-2000:]
    return dict(json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")))


async def test_page_says_consul_is_unreachable_and_keeps_the_last_state(
    make_consul: MakeConsul, unique: str, tmp_path: Path
) -> None:
    """During fail-static the page says Consul is unreachable and since when, still lists the last known
    agents, and its header stays one line at 1,400 pixels."""
    consul = make_consul()
    app = create_app(consul.http_addr)
    app.router.add_get("/probe.html", probe_page)
    async with (
        test_utils.TestClient(test_utils.TestServer(app)) as client,
        AgentRegistry(consul.http_addr) as registry,
    ):
        for n in range(2):
            await registry.register_agent(
                AgentRegistration(
                    agent_type=unique,
                    agent_id=f"{unique}-{n}",
                    capabilities=["plan"],
                    endpoint="http://h:1",
                    ttl=60,
                )
            )

        async def cached() -> bool:
            answer = await client.get(f"/v1/agents?type={unique}")
            return len(await answer.json()) == 2

        await eventually(cached, 10, "the API's view has the agents")
        page = str(client.make_url("/probe.html"))
        healthy = await probe(page, tmp_path)
        assert healthy["outage"] is None and healthy["rows"] >= 2, healthy
        consul.close()
        down = await probe(page, tmp_path)
    assert down["outage"] is not None and "Consul is unreachable since" in str(down["outage"]), down
    assert down["rows"] >= 2, down
    assert float(str(down["header"])) <= float(str(healthy["header"])), (healthy, down)
    assert float(str(down["header"])) < 2 * float(str(down["h1"])) + 24, down
