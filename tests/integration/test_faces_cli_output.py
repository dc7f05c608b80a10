"""What the CLI prints from Consul, against real Consul: strings anyone who can write one agent type can
set (endpoints, tag values, capabilities) reach the terminal with their control characters escaped."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from processes import CLI, cli_env
from support import consul_put, registration

from consul_agents import _wire as wire
from consul_agents._models import utcnow

#: Retitles the terminal window, clears the screen, and reverses what follows (bidi override).
TITLE, CLEAR, BIDI = "\x1b]0;pwned\x07", "\x1b[2J", "\u202e"
RAW = (TITLE, CLEAR, BIDI, "\x1b", "\x07", "\x9b")


def printable(text: str) -> str:
    """The escaped form the CLI must show (written out here, independently of the code under test)."""
    return text.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace(BIDI, "\\u202e")


def hostile_service(
    agent_type: str, agent_id: str, tag_value: str, capability: str = "plan"
) -> dict[str, Any]:
    """A service as this library encodes it, then edited the way a raw Consul client can: control
    sequences in the endpoint and a tag value (and, when given, in a capability)."""
    definition = wire.service_definition(
        registration(agent_type, agent_id=agent_id, tags={"tier": "x"}),
        agent_id,
        load=0.1,
        heartbeat=utcnow(),
    )
    definition["Meta"]["agent-endpoint"] = f"http://127.0.0.1:9000/{TITLE}{CLEAR}{BIDI}"
    definition["Meta"]["tier"] = tag_value
    definition["Tags"] = sorted({"plan", capability})
    return definition


@pytest.fixture
def hostile(consul_addr: str, unique: str) -> Iterator[str]:
    """An agent of type ``unique`` registered straight into Consul with control sequences in its strings."""
    agent_id = f"{unique}-1"
    consul_put(consul_addr, "/v1/agent/service/register", hostile_service(unique, agent_id, f"gold{TITLE}"))
    yield agent_id
    consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")


@pytest.fixture
def hostile_capability(consul_addr: str, unique: str) -> Iterator[str]:
    """An agent of type ``unique`` whose capability holds a screen-clearing sequence: discovery skips such
    an entry (it is not a DNS label), but ``types`` lists the catalog's tags as they are."""
    agent_id = f"{unique}-1"
    service = hostile_service(unique, agent_id, "gold", capability=f"x{CLEAR}")
    consul_put(consul_addr, "/v1/agent/service/register", service)
    yield agent_id
    consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, env=cli_env()
    )


def assert_escaped(output: str, *shown: str) -> None:
    """No raw control sequence in ``output``, and each of ``shown`` appears in its escaped form."""
    for raw in RAW:
        assert raw not in output, repr(output)
    for text in shown:
        assert printable(text) in output, repr(output)


@pytest.mark.parametrize(
    "command",
    [("discover", "--type"), ("select", "--type"), ("status",)],
    ids=["discover", "select", "status"],
)
def test_tables_escape_endpoints(
    consul_addr: str, unique: str, hostile: str, command: tuple[str, ...]
) -> None:
    """discover, select and status print the endpoint's escape sequences as visible escapes, never raw."""
    argument = hostile if command == ("status",) else unique
    done = run(*command, argument, "-http-addr", consul_addr)
    assert done.returncode == 0, done.stderr
    assert hostile in done.stdout
    assert_escaped(done.stdout, f"/{TITLE}{CLEAR}{BIDI}")


def test_types_escapes_capabilities(consul_addr: str, unique: str, hostile_capability: str) -> None:
    """`types` prints a capability holding a screen-clearing sequence escaped."""
    done = run("types", "-http-addr", consul_addr)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith(unique))
    assert_escaped(line, f"x{CLEAR}")


def test_json_output_escapes_too(consul_addr: str, unique: str, hostile: str) -> None:
    """--json output holds no raw control character either, and decodes to the exact strings."""
    done = run("discover", "--type", unique, "--json", "-http-addr", consul_addr)
    assert done.returncode == 0, done.stderr
    assert_escaped(done.stdout)
    (agent,) = json.loads(done.stdout)
    assert agent["endpoint"].endswith(f"/{TITLE}{CLEAR}{BIDI}")


def test_watch_escapes_added_and_changed_lines(consul_addr: str, unique: str) -> None:
    """`watch` prints an added agent's endpoint and a changed tag value escaped."""
    agent_id = f"{unique}-1"
    watch = subprocess.Popen(
        [*CLI, "watch", "--type", unique, "--count", "2", "--timeout", "45", "-http-addr", consul_addr],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().startswith("ID")  # the (empty) snapshot table, then a blank line
        assert watch.stdout.readline() == "\n"
        consul_put(consul_addr, "/v1/agent/service/register", hostile_service(unique, agent_id, "gold"))
        deadline = time.monotonic() + 20
        lines: list[str] = []
        while len(lines) < 1 and time.monotonic() < deadline:
            lines.append(watch.stdout.readline())
        consul_put(
            consul_addr, "/v1/agent/service/register", hostile_service(unique, agent_id, f"gold{TITLE}")
        )
        output, errors = watch.communicate(timeout=45)
        text = "".join(lines) + output
        assert watch.returncode == 0, errors
        assert f"+ {agent_id}" in text and f"~ {agent_id}" in text, text
        assert_escaped(text, f"/{TITLE}{CLEAR}{BIDI}", f"gold{TITLE}")
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
        consul_put(consul_addr, f"/v1/agent/service/deregister/{agent_id}")


def test_error_messages_are_escaped(consul_addr: str) -> None:
    """An error quoting input (here an unknown agent id holding ESC) is printed with the escape visible."""
    done = run("status", f"nobody{CLEAR}", "-http-addr", consul_addr)
    assert done.returncode in (2, 3), done.stderr
    assert_escaped(done.stderr)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("register", "--type", "t", "-c", "a", "--endpoint", "http://h:1", "--metadata", "{"), "--metadata"),
        (
            ("register", "--type", "t", "-c", "a", "--endpoint", "http://h:1", "--metadata", "[" * 5000),
            "levels deep",
        ),
        (("watch", "--interval", "-1"), "--interval"),
        (("watch", "--interval", "nan"), "--interval"),
        (("watch", "--count", "0"), "--count"),
        (("watch", "--timeout", "-5"), "--timeout"),
    ],
    ids=[
        "metadata-not-json",
        "metadata-5000-deep",
        "interval-negative",
        "interval-nan",
        "count-0",
        "timeout-neg",
    ],
)
def test_bad_arguments_are_exit_2_not_a_traceback_or_a_spin(
    consul_addr: str, args: tuple[str, ...], words: str
) -> None:
    """Metadata that is not JSON (or nested 5,000 deep) and non-positive watch bounds are exit 2 naming the
    flag; they used to be a traceback, or a watch spinning a core forever."""
    done = run(*args, "-http-addr", consul_addr, timeout=30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert words in done.stderr and "Traceback" not in done.stderr
