"""The reaper's reading of KV listings and health entries for A2A cards (pure: no Consul)."""

from __future__ import annotations

from typing import Any

import pytest

from consul_agents._wire import META_CARD_DIGEST, card_digests, card_keys

HEX = "ab" * 32
PREFIX = "consul-agents/metadata/"


def test_card_keys_reads_only_keys_this_library_writes() -> None:
    """Only ``<type>/<id>/card/<64 hex>`` keys are cards; metadata keys, other hex lengths, upper case, dot
    segments, nested paths and non-strings are left out."""
    listing: list[Any] = [
        f"{PREFIX}echo/echo-1/card/{HEX}",
        f"{PREFIX}echo/echo-1",
        f"{PREFIX}echo/echo-1/card/{HEX[:10]}",
        f"{PREFIX}echo/echo-1/card/{HEX.upper()}",
        f"{PREFIX}echo/../card/{HEX}",
        f"{PREFIX}echo/echo-1/card/{HEX}/more",
        f"{PREFIX}Echo/echo-1/card/{HEX}",
        f"other/echo/echo-1/card/{HEX}",
        7,
        None,
    ]
    assert card_keys(listing) == [(listing[0], "echo", "echo-1", f"sha256:{HEX}")]


@pytest.mark.parametrize("listing", [None, {}, "text", 3])
def test_card_keys_of_a_listing_that_is_not_a_list_is_empty(listing: Any) -> None:
    """A KV answer of another shape names no card."""
    assert card_keys(listing) == []


def test_card_digests_pairs_each_entry_with_the_card_its_meta_names() -> None:
    """Entries naming a card give (id, digest); entries without one, or malformed, give nothing."""
    entries: list[Any] = [
        {"Service": {"ID": "a", "Meta": {META_CARD_DIGEST: f"sha256:{HEX}"}}},
        {"Service": {"ID": "b", "Meta": {}}},
        {"Service": {"ID": 3, "Meta": {META_CARD_DIGEST: f"sha256:{HEX}"}}},
        {"Service": None},
        None,
    ]
    assert card_digests(entries) == {("a", f"sha256:{HEX}")}
    assert card_digests("not a list") == set()
