"""The Debian mirrors this machine's apt already uses, read from its sources (pure parsing, no network).

Machines that reach Debian only through a local mirror or a caching proxy (common in companies) cannot
download from deb.debian.org; the Consul installer asks the mirror that apt is configured with instead.
Both formats are read: one-line ``sources.list`` entries (``deb [opts] URI SUITE COMPONENT...``) in
``/etc/apt/sources.list`` and ``sources.list.d/*.list``, and deb822 paragraphs (``Types:``, ``URIs:``,
``Suites:``, ``Enabled:``) in ``sources.list.d/*.sources``. A Debian archive is recognised by its URI
path ending in ``/debian`` (or a snapshot ``/debian/<timestamp>``); security and third-party archives
are not, since they do not carry the bullseye consul package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DEFAULT_MIRROR", "Mirror", "debian_mirrors", "parse_deb822", "parse_one_line"]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
_DEBIAN_PATH = re.compile(r".*/debian(/\d{8}T\d{6}Z)?/?")


@dataclass(frozen=True)
class Mirror:
    """A Debian archive URI and the file that named it (for messages)."""

    uri: str
    source: str


def _is_debian_archive(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(_DEBIAN_PATH.fullmatch(parts.path or "/"))


def parse_one_line(text: str) -> list[str]:
    """The URIs of the ``deb`` lines of a one-line-style sources file."""
    uris = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        if rest.startswith("["):
            _, _, rest = rest.partition("]")
        fields = rest.split()
        if fields:
            uris.append(fields[0])
    return uris


def parse_deb822(text: str) -> list[str]:
    """The URIs of the enabled ``deb`` paragraphs of a deb822 ``.sources`` file."""
    uris = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in paragraph.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        uris.extend(fields.get("uris", "").split())
    return uris


def debian_mirrors(etc: Path = Path("/etc/apt")) -> list[Mirror]:
    """The Debian archives in the apt sources under ``etc``, in apt's reading order, without repeats."""
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    files += sorted((etc / "sources.list.d").glob("*.sources"))
    mirrors: list[Mirror] = []
    seen: set[str] = set()
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        uris = parse_deb822(text) if path.suffix == ".sources" else parse_one_line(text)
        for uri in uris:
            normal = uri.rstrip("/")
            if _is_debian_archive(normal) and normal not in seen:
                seen.add(normal)
                mirrors.append(Mirror(normal, str(path)))
    return mirrors
