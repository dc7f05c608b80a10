"""The `consul watch` handler route: real `consul watch` processes over real Consul run
`consul-agents alert-handler`, which posts structured alerts when an agent goes critical."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from processes import reap
from support import eventually, registration

from consul_agents import AgentRegistry, AgentStatus
from consul_agents.cli import main
from consul_agents.dev import find_consul_binary


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[Any]]]:
    """An HTTP server on loopback that keeps every JSON body POSTed to /alerts."""
    received: list[Any] = []

    async def alerts(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/alerts", alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/alerts", received
    await runner.cleanup()


def _watch(consul_addr: str, log: Path, *watch_args: str, post: str) -> subprocess.Popen[Any]:
    handler = f"{sys.executable} -m consul_agents.cli alert-handler --post {post}"
    with log.open("w") as out:
        return subprocess.Popen(
            [
                str(find_consul_binary(install=False)),
                "watch",
                f"-http-addr={consul_addr}",
                *watch_args,
                handler,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_consul_watch_runs_the_handler_which_posts_an_alert_per_critical_agent(
    consul_addr: str, unique: str, receiver: tuple[str, list[Any]], tmp_path: Path
) -> None:
    """`consul watch -type=checks -state=critical` posts ConsulAgentsAgentCritical for an agent whose check
    turns critical, with its type, id, node and check output; `-type=service` on the agent's service also
    posts ConsulAgentsNoPassingAgent for the type, once its only agent is critical."""
    url, received = receiver
    async with AgentRegistry(consul_addr) as registry:
        agent_id = await registry.register_agent(registration(unique, ttl=60))
        checks = _watch(consul_addr, tmp_path / "checks.log", "-type=checks", "-state=critical", post=url)
        service = _watch(
            consul_addr, tmp_path / "service.log", "-type=service", f"-service=agent-{unique}", post=url
        )
        try:

            def posted(alertname: str) -> list[dict[str, Any]]:
                return [
                    alert
                    for body in received
                    for alert in body
                    if alert["labels"]["alertname"] == alertname and alert["labels"]["agent_type"] == unique
                ]

            await registry.heartbeat(agent_id, status=AgentStatus.CRITICAL, output="probe: HTTP 503")

            async def both() -> bool:
                assert checks.poll() is None and service.poll() is None, "consul watch exited"
                # the checks watch's alert carries the check's output; the service watch's does not
                from_checks = [a for a in posted("ConsulAgentsAgentCritical") if "output" in a["annotations"]]
                return bool(from_checks) and bool(posted("ConsulAgentsNoPassingAgent"))

            await eventually(both, timeout=30, what="the handler posts both alerts")
            from_checks = next(a for a in posted("ConsulAgentsAgentCritical") if "output" in a["annotations"])
            assert from_checks["labels"]["agent_id"] == agent_id
            assert from_checks["labels"]["severity"] == "warning"
            assert from_checks["labels"]["source"] == "consul-watch"
            assert from_checks["labels"]["node"]
            assert "HTTP 503" in from_checks["annotations"]["output"]
            (no_passing, *_) = posted("ConsulAgentsNoPassingAgent")
            assert no_passing["labels"] == {
                "alertname": "ConsulAgentsNoPassingAgent",
                "severity": "critical",
                "agent_type": unique,
                "datacenter": "dc1",
                "source": "consul-watch",
            }
        finally:
            reap(checks)
            reap(service)
            await registry.deregister_agent(agent_id)
    # the handler printed what it posted, one JSON object per line, into consul watch's output
    printed = (tmp_path / "service.log").read_text()
    assert any(
        line.startswith("{") and json.loads(line)["labels"]["alertname"] == "ConsulAgentsNoPassingAgent"
        for line in printed.splitlines()
    ), printed


def _handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: bytes, *args: str
) -> Any:
    """The command run in process (as consul watch runs it, minus the interpreter's start): exit code,
    stdout, stderr."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["alert-handler", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_handler_refuses_input_that_is_no_watch_result(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input that is not JSON, not UTF-8 or not an array is exit 2 with one line saying why."""
    for stdin, problem in ((b"{nope", "not JSON"), (b"\xff\xfe", "utf-8"), (b'{"a": 1}', "not the array")):
        code, out, err = _handler(monkeypatch, capsys, stdin)
        assert (code, out) == (2, ""), err
        assert problem in err and len(err.splitlines()) == 1


def test_the_handler_says_when_the_alerts_cannot_be_posted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    """A --post address that does not answer is exit 5 naming it; the alerts were printed all the same."""
    body = json.dumps(
        [{"CheckID": "service:a1", "Status": "critical", "ServiceID": "a1", "ServiceName": "agent-planner"}]
    )
    url = f"http://127.0.0.1:{unused_tcp_port}/alerts"
    code, out, err = _handler(monkeypatch, capsys, body.encode(), "--post", url, "--timeout", "2")
    assert code == 5, err
    assert f"{url} could not be reached" in err
    assert json.loads(out)["labels"]["agent_id"] == "a1"
