"""Reading the Debian mirror from the system's apt sources (one-line and deb822), for the Consul installer."""

from __future__ import annotations

from pathlib import Path

import pytest

from consul_agents._apt_sources import Mirror, debian_mirrors, parse_deb822, parse_one_line


def test_one_line_entries() -> None:
    """deb lines give their URI, with or without [options]; deb-src, comments and blanks are skipped."""
    text = """
# deb http://commented.example/debian bookworm main
deb [signed-by=/usr/share/keyrings/k.gpg arch=amd64] http://mirror.corp/debian bookworm main
deb-src http://src.example/debian bookworm main
deb http://proxy:3142/deb.debian.org/debian/ bookworm main  # trailing comment
"""
    assert parse_one_line(text) == ["http://mirror.corp/debian", "http://proxy:3142/deb.debian.org/debian/"]


def test_deb822_paragraphs() -> None:
    """Enabled deb paragraphs give all their URIs; disabled or deb-src-only ones give none."""
    text = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://local.mirror/debian
 http://second.mirror/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb-src
URIs: http://src.example/debian

Types: deb
Enabled: no
URIs: http://disabled.example/debian
"""
    assert parse_deb822(text) == ["http://local.mirror/debian", "http://second.mirror/debian"]


def test_only_debian_archives_are_mirrors(tmp_path: Path) -> None:
    """Security, third-party and non-http archives are left out; order follows apt's; repeats once."""
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb http://mirror.corp/debian bookworm main\n"
        "deb http://mirror.corp/debian-security bookworm-security main\n"
    )
    (tmp_path / "sources.list.d" / "a.list").write_text(
        "deb https://packages.cloud.google.com/apt sdk main\n"
    )
    (tmp_path / "sources.list.d" / "b.sources").write_text(
        "Types: deb\nURIs: http://snapshot.debian.org/archive/debian/20250520T000000Z http://mirror.corp/debian/\n"
        "Suites: bookworm\nComponents: main\n"
    )
    assert debian_mirrors(tmp_path) == [
        Mirror("http://mirror.corp/debian", str(tmp_path / "sources.list")),
        Mirror(
            "http://snapshot.debian.org/archive/debian/20250520T000000Z",
            str(tmp_path / "sources.list.d/b.sources"),
        ),
    ]


@pytest.mark.parametrize("layout", [{}, {"sources.list": "deb file:/cdrom/debian bookworm main\n"}])
def test_no_debian_mirror_found(tmp_path: Path, layout: dict[str, str]) -> None:
    """Without sources, or with only a file: archive, no mirror is found (the installer uses the default)."""
    for name, text in layout.items():
        (tmp_path / name).write_text(text)
    assert debian_mirrors(tmp_path) == []
