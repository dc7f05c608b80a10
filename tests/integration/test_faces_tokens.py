"""Tokens as users hand them over, against a real Consul with ACLs on: a trailing newline is stripped (as
Consul's CLI does), anything else a header cannot carry is a clear error with exit 2 (CLI, sidecar) or 400
(REST API), never a traceback or a 500, and the token's text never appears in the error."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from acl_support import acl_consul, master_token, provisioned
from aiohttp import test_utils
from processes import CLI, cli_env
from support import consul_put

from consul_agents.acl import ProvisionedToken, tokens_json
from consul_agents.api import create_app
from consul_agents.dev import ConsulDevServer

SECRET_PART = "3f0c-secret-part"


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


@pytest.fixture(scope="module")
def tokens(server: ConsulDevServer) -> dict[str, ProvisionedToken]:
    specs = [
        {"name": "seer", "kind": "discoverer"},
        {"name": "reg", "kind": "registrar", "agent_types": ["tf"]},
    ]
    return provisioned(server, *specs)


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=cli_env(**env)
    )


#: Token file contents that are not one token: (bytes, the words the error must use).
BAD_FILES = {
    "two-lines": (b"first-" + SECRET_PART.encode() + b"\nsecond\n", "more than one line"),
    "json": (None, "holds JSON, not a token"),
    "control-character": (b"abc\x1b[2J" + SECRET_PART.encode(), "control characters"),
    "not-utf8": (b"\xff\xfe" + SECRET_PART.encode(), "control characters or non-ASCII"),
    "huge": (b"x" * 100_000, "not a token file"),
}


def bad_file(tmp_path: Path, kind: str, tokens: dict[str, ProvisionedToken]) -> Path:
    content, _ = BAD_FILES[kind]
    path = tmp_path / f"{kind}.token"
    path.write_bytes(tokens_json(list(tokens.values())).encode() if content is None else content)
    return path


def assert_clear_error(done: subprocess.CompletedProcess[str], words: str, secrets: list[str]) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert words in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for secret in [SECRET_PART, *secrets]:
        assert secret not in done.stderr


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_token_file_is_exit_2_with_a_clear_error(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken], tmp_path: Path, kind: str
) -> None:
    """`-token-file` holding two lines, JSON (tokens.json by mistake), control bytes or megabytes is exit 2
    naming the file and the problem, without the token's text."""
    path = bad_file(tmp_path, kind, tokens)
    secrets = [t.secret_id for t in tokens.values()]
    done = run(["discover", "-token-file", str(path), "-http-addr", server.http_addr])
    assert_clear_error(done, BAD_FILES[kind][1], secrets)
    assert f"token file {str(path)!r}" in done.stderr


@pytest.mark.parametrize("kind", ["two-lines", "json"])
def test_bad_token_through_environment_and_sidecar_is_exit_2(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken], tmp_path: Path, kind: str
) -> None:
    """CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_TOKEN, -token and the sidecar's -token-file refuse the same way."""
    path = bad_file(tmp_path, kind, tokens)
    secrets = [t.secret_id for t in tokens.values()]
    words = BAD_FILES[kind][1]
    done = run(["discover", "-http-addr", server.http_addr], CONSUL_HTTP_TOKEN_FILE=str(path))
    assert_clear_error(done, words, secrets)
    assert "CONSUL_HTTP_TOKEN_FILE" in done.stderr
    done = run(["types", "-http-addr", server.http_addr], CONSUL_HTTP_TOKEN=path.read_text())
    assert_clear_error(done, words, secrets)
    assert "CONSUL_HTTP_TOKEN" in done.stderr
    done = run(["types", "-token", path.read_text(), "-http-addr", server.http_addr])
    assert_clear_error(done, words, secrets)
    assert "-token " in done.stderr
    agents = tmp_path / "agents.yaml"
    agents.write_text("agents:\n  - {agent_type: tf, capabilities: [a], endpoint: 'http://127.0.0.1:9'}\n")
    done = run(["sidecar", str(agents), "-token-file", str(path), "-http-addr", server.http_addr])
    assert_clear_error(done, words, secrets)


def test_trailing_newline_is_stripped_and_the_token_works(
    server: ConsulDevServer, tokens: dict[str, ProvisionedToken], tmp_path: Path, unique: str
) -> None:
    """A token file ending in a newline (echo > file) works: the registrar registers, the discoverer sees."""
    registrar, seer = tmp_path / "reg.token", tmp_path / "seer.token"
    registrar.write_text(tokens["reg"].secret_id + "\n")
    seer.write_text(f"  {tokens['seer'].secret_id}\r\n")
    done = run(
        ["register", "--type", "tf", "-c", "a", "--endpoint", "http://127.0.0.1:9", "--id", unique,
         "-token-file", str(registrar), "-http-addr", server.http_addr]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        done = run(
            ["discover", "--type", "tf", "--json", "-token-file", str(seer), "-http-addr", server.http_addr]
        )
        assert done.returncode == 0, done.stderr
        assert [a["agent_id"] for a in json.loads(done.stdout)] == [unique]
    finally:
        consul_put(server.http_addr, f"/v1/agent/service/deregister/{unique}", token=master_token(server))


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Consul-Token", b"\xff\xfe-" + SECRET_PART.encode()),
        ("X-Consul-Token", b"a\tb-" + SECRET_PART.encode()),
        ("X-Consul-Token", "tök-".encode() + SECRET_PART.encode()),
        ("Authorization", b"Bearer \xff-" + SECRET_PART.encode()),
        ("Authorization", b"Bearer a b-" + SECRET_PART.encode()),
    ],
    ids=["not-utf8", "tab", "non-ascii", "bearer-not-utf8", "bearer-two-words"],
)
async def test_rest_api_answers_400_for_a_malformed_token(
    server: ConsulDevServer, header: str, value: bytes
) -> None:
    """A token header the API cannot forward answers 400 naming the header (it used to be a 500), and the
    answer does not echo the token."""
    async with test_utils.TestServer(create_app(server.http_addr)) as api:
        reader, writer = await asyncio.open_connection(api.host, api.port)
        request = b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n" + header.encode() + b": " + value
        writer.write(request + b"\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    error: dict[str, Any] = json.loads(body)
    assert error["error"] == "bad_request" and error["field"] == header
    assert SECRET_PART not in error["message"]
