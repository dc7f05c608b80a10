"""docker/: the compose file and Dockerfile name only files, configs and commands that exist and parse.

No Docker engine runs on the build machines, so this checks everything a `docker compose up` would need
from the repository: mounted files exist and parse (Consul configs with `consul validate` when a binary is
at hand), every consul-agents command parses with the real CLI parser, the files it names are copied into
the image, and the topology is the documented one.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from consul_agents.acl import load_config as load_acl_config
from consul_agents.cli import build_parser
from consul_agents.dev import ConsulBinaryError, find_consul_binary
from consul_agents.sidecar.config import load_config as load_sidecar_config

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IMAGE = "consul-agents:latest"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def copied_into_image() -> dict[str, Path]:
    """Image path -> repository path for every COPY from the build context into the final stage."""
    copied: dict[str, Path] = {}
    workdir = "/"
    for op, argument in final_stage():
        if op == "WORKDIR":
            workdir = argument
        if op != "COPY" or argument.startswith("--from"):
            continue
        *sources, destination = shlex.split(argument)
        target = posixpath.normpath(posixpath.join(workdir, destination))
        for source in sources:
            into_folder = destination.endswith("/") and len(sources) > 1
            copied[posixpath.join(target, Path(source).name) if into_folder else target] = REPO / source
    return copied


def repo_file_for(image_path: str) -> Path:
    """The repository file an absolute path inside the consul-agents image comes from."""
    for image_prefix, source in sorted(copied_into_image().items(), key=lambda item: -len(item[0])):
        if image_path == image_prefix or image_path.startswith(image_prefix + "/"):
            return source / image_path[len(image_prefix) :].lstrip("/")
    pytest.fail(f"{image_path} is used by docker/compose.yaml but not copied into the image")


def agent_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == IMAGE}


def default_cmd() -> list[str]:
    (cmd,) = [json.loads(arg) for op, arg in final_stage() if op == "CMD"]
    return list(cmd)


def consul_agents_argv(service: dict[str, Any]) -> list[str] | None:
    """The consul-agents arguments a service runs, or None when it overrides the entrypoint."""
    if "entrypoint" in service:
        return None
    return list(service.get("command", default_cmd()))


def test_dockerfile_is_slim_multi_stage_and_runs_as_non_root() -> None:
    """The image builds on a slim base in two stages and its final USER is not root."""
    froms = [arg for op, arg in dockerfile_instructions() if op == "FROM"]
    assert len(froms) == 2 and all("slim" in f for f in froms)
    users = [arg for op, arg in final_stage() if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    entrypoint = [json.loads(arg) for op, arg in final_stage() if op == "ENTRYPOINT"]
    assert entrypoint == [["consul-agents"]]


def test_every_file_the_dockerfile_copies_exists() -> None:
    """Each COPY source of both stages is in the repository (the build context)."""
    for op, argument in dockerfile_instructions():
        if op == "COPY" and not argument.startswith("--from"):
            for source in shlex.split(argument)[:-1]:
                assert (REPO / source).exists(), source


def test_every_mounted_file_exists_and_consul_configs_parse() -> None:
    """Bind-mounted files exist; Consul's JSON configs parse, and `consul validate` accepts each server's."""
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                path = (DOCKER / source).resolve()
                assert path.is_file(), f"{name}: {source}"
                if path.suffix == ".json":
                    json.loads(path.read_text())
    try:
        consul = find_consul_binary(install=False)
    except ConsulBinaryError:
        pytest.skip("no consul binary for `consul validate` (make consul)")
    for name, service in SERVICES.items():
        if not service.get("image", "").startswith("hashicorp/consul"):
            continue
        files = [(DOCKER / v.split(":")[0]).resolve() for v in service["volumes"]]
        done = subprocess.run(
            [str(consul), "validate", *map(str, files)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"


def test_every_consul_agents_command_parses_with_the_real_cli() -> None:
    """Each service of the consul-agents image runs a subcommand the CLI has, with arguments it accepts."""
    parser = build_parser()
    commands = {}
    for name, service in agent_services().items():
        argv = consul_agents_argv(service)
        if argv is None:
            continue
        args = parser.parse_args(argv)
        assert callable(args.handler), name
        commands[name] = argv[0]
    assert set(commands.values()) >= {"serve", "sidecar"}


def test_every_file_a_command_names_is_in_the_image_and_parses() -> None:
    """Paths under /app in commands and entrypoints are copied into the image and load with our loaders."""
    acl_names = {token["name"] for token in yaml.safe_load((DOCKER / "acl.yaml").read_text())["tokens"]}
    load_acl_config(DOCKER / "acl.yaml")
    for name, service in agent_services().items():
        words = [*service.get("entrypoint", []), *service.get("command", [])]
        for word in words:
            value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
            if value.startswith("/tokens/"):
                assert value.removeprefix("/tokens/").removesuffix(".token") in acl_names, (name, value)
            if not value.startswith("/app/"):
                continue
            path = repo_file_for(value)
            assert path.is_file(), (name, value)
            if path.suffix == ".py":
                compile(path.read_text(), str(path), "exec")
            elif path.suffix == ".sh":
                subprocess.run(["sh", "-n", str(path)], check=True)
            elif path.suffix == ".yaml":
                assert load_sidecar_config(path).agents, (name, value)


def test_sidecars_sit_next_to_their_agents_and_reach_a_consul_server() -> None:
    """Each sidecar shares its agent's network namespace and talks to a Consul server of the compose file."""
    sidecars = {name: s for name, s in agent_services().items() if s.get("command", [""])[0] == "sidecar"}
    assert len(sidecars) >= 3
    for name, service in sidecars.items():
        agent = service["network_mode"].removeprefix("service:")
        assert agent in SERVICES and "sample_agent.py" in " ".join(SERVICES[agent]["entrypoint"])
        (address,) = [w.split("=", 1)[1] for w in service["command"] if w.startswith("-http-addr=")]
        host = re.match(r"https?://([^:/]+)", address)
        assert host is not None and host.group(1) in SERVICES, (name, address)
        endpoint_hosts = {
            re.match(r"https?://([^:/]+)", a["endpoint"]).group(1)  # type: ignore[union-attr]
            for a in yaml.safe_load(repo_file_for(service["command"][1]).read_text())["agents"]
        }
        assert endpoint_hosts == {agent}, name


def test_topology_three_servers_in_dc1_one_in_dc2_over_wan_with_acls() -> None:
    """dc1 has three servers expecting each other, dc2 joins it over the WAN, and ACLs default to deny."""
    datacenters: dict[str, list[str]] = {}
    for name, service in SERVICES.items():
        if not service.get("image", "").startswith("hashicorp/consul"):
            continue
        config: dict[str, Any] = {}
        for volume in service["volumes"]:
            config.update(json.loads((DOCKER / volume.split(":")[0]).read_text()))
        assert config["acl"]["enabled"] is True and config["acl"]["default_policy"] == "deny"
        assert config["server"] is True
        datacenters.setdefault(config["datacenter"], []).append(name)
        if config["datacenter"] == "dc1":
            assert config["bootstrap_expect"] == 3
            assert set(config["retry_join"]) == {"consul-dc1-1", "consul-dc1-2", "consul-dc1-3"}
        else:
            assert set(config["retry_join_wan"]) <= set(SERVICES)
    assert {dc: len(names) for dc, names in datacenters.items()} == {"dc1": 3, "dc2": 1}


def test_dependencies_networks_secrets_and_volumes_are_declared() -> None:
    """depends_on, network_mode, secrets and named volumes all refer to things the file declares."""
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, (name, dependency)
        for secret in service.get("secrets", []):
            assert secret in COMPOSE["secrets"], (name, secret)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in COMPOSE["volumes"], (name, source)
    assert re.search(r"^CONSUL_BOOTSTRAP_TOKEN=$", (DOCKER / ".env.example").read_text(), re.M)


async def test_sample_agent_answers_health_with_a_load() -> None:
    """The stand-in agent serves GET /health with a load between 0 and 1, as its sidecar expects."""
    import importlib.util
    import random

    from aiohttp import test_utils

    spec = importlib.util.spec_from_file_location("sample_agent", DOCKER / "sample_agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    async with test_utils.TestClient(test_utils.TestServer(module.make_app(random.Random(1)))) as client:
        for _ in range(20):
            body = await (await client.get("/health")).json()
            assert 0.0 <= body["load"] <= 1.0
