"""The Consul installer downloads from the Debian mirror the system's apt uses, and says what failed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from consul_agents.dev import ConsulBinaryError, install_consul

SCRIPT = Path(__file__).parents[2] / "scripts" / "install-consul.sh"
pytestmark = pytest.mark.skipif(
    shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None, reason="needs apt-get and dpkg-deb"
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_installer_uses_the_systems_mirror_and_names_it_when_it_fails(tmp_path: Path) -> None:
    """With apt pointed at a local mirror (deb822 and one-line), the installer asks each of them, in
    order, and its error names every mirror, the file that named it, the failing step and apt's reason."""
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    first, second = (
        f"http://127.0.0.1:{closed_port()}/debian",
        f"http://127.0.0.1:{closed_port()}/mirror/debian",
    )
    (etc / "sources.list").write_text(f"deb {first} bookworm main\n")
    (etc / "sources.list.d" / "local.sources").write_text(
        f"Types: deb\nURIs: {second}\nSuites: bookworm\nComponents: main\n"
    )
    with pytest.raises(ConsulBinaryError) as caught:
        install_consul(tmp_path / "bin", apt_etc=etc)
    message = str(caught.value)
    assert message.index(first) < message.index(second)
    assert str(etc / "sources.list") in message and str(etc / "sources.list.d" / "local.sources") in message
    assert message.count("apt-get update (bullseye lists from") == 2
    assert "127.0.0.1" in message and "CONSUL_BIN" in message
    assert not (tmp_path / "bin" / "consul").exists()


def test_install_script_reads_the_same_mirrors_and_says_what_failed(tmp_path: Path) -> None:
    """scripts/install-consul.sh asks the mirrors apt's sources name (one-line and deb822, disabled and
    deb-src paragraphs skipped), and exits 1 naming each one and apt's reason."""
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    first, second = f"http://127.0.0.1:{closed_port()}/debian", f"http://127.0.0.1:{closed_port()}/x/debian"
    skipped = f"http://127.0.0.1:{closed_port()}/off/debian"
    (etc / "sources.list").write_text(f"deb [arch=amd64] {first}/ bookworm main\n")
    (etc / "sources.list.d" / "local.sources").write_text(
        f"Types: deb\nURIs: {second}\nSuites: bookworm\n\nTypes: deb\nEnabled: no\nURIs: {skipped}\n"
    )
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "bin")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "APT_ETC": str(etc), "CONSUL_AGENTS_CACHE": str(tmp_path)},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"- {first}: apt-get update fetched nothing" in done.stderr
    assert f"- {second}: apt-get update fetched nothing" in done.stderr
    assert skipped not in done.stderr and "Connection refused" in done.stderr
    assert not (tmp_path / "bin" / "consul").exists()
