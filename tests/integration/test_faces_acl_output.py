"""`acl setup -o FILE` writes secrets so that another local user who can write the folder cannot read
them: no predictable temporary name, no following links, 0600 from the first byte, atomic replacement."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from acl_support import acl_consul, master_token
from processes import CLI, cli_env

from consul_agents.acl import ProvisionedToken, write_tokens
from consul_agents.dev import ConsulDevServer

SECRET = "5b1e0c4e-secret-never-elsewhere"
ACL_FILE = Path(__file__).parents[2] / "config" / "acl.yaml"


def token() -> ProvisionedToken:
    return ProvisionedToken("d", "discoverer", "acc-1", SECRET, "consul-agents-d", "created")


def only_the_target_remains(folder: Path, *others: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(p.name for p in others), "tokens.json"])


def test_a_link_planted_at_the_old_temporary_name_is_not_followed(tmp_path: Path) -> None:
    """A symlink an attacker planted where the temporary file used to be created (.NAME.<pid>.partial)
    is neither followed nor left behind: the attacker's file never receives the secrets."""
    folder = tmp_path / "shared"
    folder.mkdir()
    attacker = tmp_path / "attacker-owned"
    attacker.write_text("")
    planted = folder / f".tokens.json.{os.getpid()}.partial"
    planted.symlink_to(attacker)
    write_tokens([token()], folder / "tokens.json")
    assert attacker.read_text() == ""
    assert (folder / "tokens.json").is_file() and not (folder / "tokens.json").is_symlink()
    assert json.loads((folder / "tokens.json").read_text())["d"]["secret_id"] == SECRET


def test_a_file_pre_opened_at_the_old_temporary_name_never_sees_the_secrets(tmp_path: Path) -> None:
    """An attacker who pre-created the predictable temporary file and kept it open reads nothing from it."""
    planted = tmp_path / f".tokens.json.{os.getpid()}.partial"
    planted.write_text("")
    planted.chmod(0o666)
    with planted.open() as attacker_view:
        write_tokens([token()], tmp_path / "tokens.json")
        assert SECRET not in attacker_view.read()
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    """A symlink at the output path itself is replaced by the new file; its target is untouched."""
    attacker = tmp_path / "attacker-owned"
    attacker.write_text("")
    (tmp_path / "tokens.json").symlink_to(attacker)
    write_tokens([token()], tmp_path / "tokens.json")
    assert attacker.read_text() == ""
    assert not (tmp_path / "tokens.json").is_symlink()
    only_the_target_remains(tmp_path, attacker)


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """When the rename fails (the output is a folder), the temporary file holding the secrets is removed."""
    (tmp_path / "tokens.json").mkdir()
    with pytest.raises(OSError):
        write_tokens([token()], tmp_path / "tokens.json")
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.json"]
    assert list((tmp_path / "tokens.json").iterdir()) == []


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulDevServer]:
    with acl_consul() as started:
        yield started


def test_cli_output_through_a_planted_link_is_a_private_file(server: ConsulDevServer, tmp_path: Path) -> None:
    """`acl setup -o FILE` against real Consul, with a link planted at FILE in a world-writable folder,
    writes a 0600 regular file and leaves the link's target and the folder free of secrets."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    attacker = tmp_path / "attacker-owned"
    attacker.write_text("")
    (shared / "tokens.json").symlink_to(attacker)
    management = tmp_path / "management.token"
    management.write_text(master_token(server) + "\n")
    done = subprocess.run(
        [*CLI, "acl", "setup", str(ACL_FILE), "-http-addr", server.http_addr, "-token-file", str(management),
         "-o", str(shared / "tokens.json")],
        capture_output=True, text=True, timeout=60, check=False, env=cli_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = shared / "tokens.json"
    assert output.is_file() and not output.is_symlink()
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    secrets = [value["secret_id"] for value in json.loads(output.read_text()).values()]
    assert secrets and attacker.read_text() == ""
    only_the_target_remains(shared)
    for secret in secrets:
        assert secret not in done.stdout + done.stderr
