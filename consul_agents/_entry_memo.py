"""What direct (uncached) discoveries read from Consul, remembered by the text of each entry.

A direct discovery reads ``/v1/health/service/<name>`` and judges every entry of the answer as untrusted
input (``_wire_read``): most of its cost in the client, far more than the request itself. Between two
discoveries almost every entry comes back byte for byte the same, and the judgement of an entry depends on
its text alone, so it is remembered by that text: an answer is split into its entries without parsing it
(:func:`_wire.split_health_entries`, as the watch-fed cache does), a known entry costs a lookup, and only
new or changed entries are decoded and judged, by the very same rules. Nothing is weaker: an entry is
never trusted for being known, only for having been judged in exactly this text already.

Left out: entries whose metadata lives in KV (their agent depends on the KV value too: judged on every
read, with it), and answers that cannot be split (decoded whole, as before). Bounded by the total text of
the entries remembered, least recently used forgotten first.
"""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache

from consul_agents import _wire as wire
from consul_agents import _wire_read as wire_read
from consul_agents._metrics import record_skipped
from consul_agents._models import AgentInfo

__all__ = ["MAX_REMEMBERED_CHARS", "EntryMemo"]

#: Entry text remembered at most (about 5,000 entries of 1.6 KB), with the AgentInfo built from each.
MAX_REMEMBERED_CHARS = 8 * 1024 * 1024


class EntryMemo:
    """The AgentInfo (or None: not an agent, or skipped as untrusted) judged from each entry's text."""

    def __init__(self, max_chars: int = MAX_REMEMBERED_CHARS) -> None:
        self._judged: LRUCache[str, tuple[AgentInfo | None, int]] = LRUCache(
            maxsize=max_chars, getsizeof=lambda judged: judged[1]
        )

    def __len__(self) -> int:
        return len(self._judged)

    def read(self, text: str, datacenter: str, queried: str = "") -> tuple[list[AgentInfo], list[Any]] | None:
        """The agents of an answer's text about the service ``queried``, and its entries whose metadata
        lives in KV (decoded, for the caller to read with their KV values); None when the text cannot be
        split into whole entries (decode it whole). Entries skipped as untrusted input are counted and
        logged once, in ``datacenter`` ("" for the local one)."""
        pieces = wire.split_health_entries(text)
        if pieces is None:
            return None
        judged = self._judged
        agents: list[AgentInfo] = []
        in_kv: list[Any] = []
        fresh: list[tuple[str, AgentInfo | None]] = []
        for piece in pieces:
            known = judged.get(piece)
            if known is not None:
                if known[0] is not None:
                    agents.append(known[0])
                continue
            entry = wire.health_entry(piece)
            if entry is None:
                return None
            if wire_read.kv_metadata_wanted(entry) is not None:
                in_kv.append(entry)
                continue
            result = wire_read.read_entry(entry, queried=queried)
            if isinstance(result, wire_read.Skipped):
                record_skipped(result, datacenter)
            info = result if isinstance(result, AgentInfo) else None
            fresh.append((piece, info))
            if info is not None:
                agents.append(info)
        for piece, info in fresh:  # remembered once the whole answer was read
            if len(piece) <= judged.maxsize:
                judged[piece] = (info, len(piece))
        return agents, in_kv
