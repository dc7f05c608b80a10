"""docker/: each sidecar container gets only its own token, readable only by its own uid.

Checked by parsing docker/compose.yaml (no Docker engine runs here) and by running docker/acl-init.sh
itself with a stand-in `consul-agents` on PATH, on real folders, as the compose file would.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ACL_NAMES = [token["name"] for token in yaml.safe_load((DOCKER / "acl.yaml").read_text())["tokens"]]


def sidecars() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("command", [""])[0] == "sidecar"}


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> mount options ("path" or "path:ro") of a service."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if not source.startswith((".", "/")):
            mounts[source] = rest
    return mounts


def token_file(service: dict[str, Any]) -> str:
    (path,) = [w.split("=", 1)[1] for w in service["command"] if w.startswith("-token-file=")]
    return str(path)


def owners() -> dict[str, int]:
    """Token name -> the uid acl-setup hands it to (its TOKEN_OWNERS setting)."""
    pairs = SERVICES["acl-setup"]["environment"]["TOKEN_OWNERS"].split()
    return {name: int(uid) for name, _, uid in (pair.partition("=") for pair in pairs)}


def test_each_sidecar_mounts_one_token_volume_that_no_other_sidecar_mounts() -> None:
    """Every sidecar mounts exactly one volume, read-only, holding its -token-file; no other container
    but acl-setup mounts that volume."""
    assert len(sidecars()) >= 3
    for name, service in sidecars().items():
        mounts = named_volumes(service)
        assert len(mounts) == 1, (name, mounts)
        ((volume, options),) = mounts.items()
        path, _, mode = options.partition(":")
        assert mode == "ro", name
        assert token_file(service).startswith(path.rstrip("/") + "/"), name
        users = [other for other, s in SERVICES.items() if volume in named_volumes(s)]
        assert sorted(users) == sorted([name, "acl-setup"]), (volume, users)


def test_each_sidecar_runs_as_its_own_uid_which_owns_only_its_token() -> None:
    """Sidecars run as distinct non-root uids; acl-setup hands each token to exactly its sidecar's uid and
    writes it where that sidecar's volume is mounted."""
    setup_mounts = {volume: path for volume, path in named_volumes(SERVICES["acl-setup"]).items()}
    uids = {}
    for name, service in sidecars().items():
        uid = int(service["user"])
        assert uid not in (0, 10001), name  # 10001: the image's user, which the API and agents run as
        uids[name] = uid
        token = Path(token_file(service)).name.removesuffix(".token")
        assert token in ACL_NAMES and owners()[token] == uid, (name, token)
        (volume,) = named_volumes(service)
        assert setup_mounts[volume] == f"/tokens/{token}", (name, volume)
    assert len(set(uids.values())) == len(uids)
    assert set(owners()) == {Path(token_file(s)).name.removesuffix(".token") for s in sidecars().values()}


def test_every_secret_stays_in_a_volume_only_acl_setup_mounts() -> None:
    """The file with every token lives in a volume no long-running container mounts."""
    (output,) = [v for v, path in named_volumes(SERVICES["acl-setup"]).items() if path == "/acl"]
    assert [name for name, s in SERVICES.items() if output in named_volumes(s)] == ["acl-setup"]
    for name, service in SERVICES.items():
        if name != "acl-setup":
            assert "tokens" not in named_volumes(service), name


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to other uids needs root, as in the container")
def test_acl_init_hands_each_token_to_its_owner_only(tmp_path: Path) -> None:
    """Run docker/acl-init.sh with a stand-in `consul-agents`: each owned token is alone in its folder,
    mode 0400, owned by its uid; unowned tokens appear only in the private tokens.json."""
    tokens = {name: {"kind": "k", "secret_id": f"secret-of-{name}"} for name in ACL_NAMES}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "consul-agents"
    fake.write_text(
        "#!/bin/sh\n"  # writes the tokens where --output says, as `acl setup` does
        'while [ "$1" != "--output" ]; do shift; done\n'
        f"cat > \"$2\" <<'JSON'\n{json.dumps(tokens)}\nJSON\n"
    )
    fake.chmod(0o755)
    roots = tmp_path / "tokens"
    roots.mkdir()
    (tmp_path / "acl").mkdir()
    environment = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CONSUL_HTTP_TOKEN_FILE": "/dev/null",
        "TOKEN_OWNERS": SERVICES["acl-setup"]["environment"]["TOKEN_OWNERS"],
        "ACL_OUTPUT": str(tmp_path / "acl" / "tokens.json"),
        "TOKENS_ROOT": str(roots),
    }
    done = subprocess.run(
        ["sh", str(DOCKER / "acl-init.sh")], env=environment, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "acl" / "tokens.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in roots.iterdir()) == sorted(owners())
    for name, uid in owners().items():
        (only,) = (roots / name).iterdir()
        assert only.name == f"{name}.token" and only.read_text() == f"secret-of-{name}"
        info = only.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o400), name
    environment["TOKEN_OWNERS"] = "no-such-token=5"
    done = subprocess.run(
        ["sh", str(DOCKER / "acl-init.sh")], env=environment, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "no-such-token" in done.stderr
