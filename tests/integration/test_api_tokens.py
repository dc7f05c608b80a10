"""Per-token registry views of the REST API: one per token, bounded, closed on eviction, keyed by a digest."""

from __future__ import annotations

from support import eventually

from consul_agents import AgentRegistry, DiscoveryRequest
from consul_agents.api._tokens import TokenViews, token_key


async def test_views_are_per_token_bounded_and_evicted_views_stop_their_watches(
    consul_addr: str, unique: str
) -> None:
    """A token gets the same view each time; the least recently used view beyond the bound is closed."""
    async with AgentRegistry(consul_addr, "") as base:
        views = TokenViews(base, size=2)
        first = views.for_token("token-one")
        assert views.for_token("token-one") is first
        assert views.for_token(None) is not first and views.for_token("") is views.for_token(None)
        assert not (await first.discover(DiscoveryRequest(agent_type=unique))).cached  # a token seen once
        assert (await first.discover(DiscoveryRequest(agent_type=unique))).cached
        assert first.discovery.cache.watch_count >= 1

        views.for_token("token-two")  # token-one is now the least recently used view beyond the bound
        assert len(views) == 2

        async def stopped() -> bool:
            return first.discovery.cache.watch_count == 0

        await eventually(stopped, timeout=5, what="the evicted view's watches stop")
        assert views.for_token("token-one") is not first  # a fresh view, with nothing of the old one's
        await views.close()
        assert len(views) == 0
    assert base.gateway._http is None  # the shared connection closed with the base registry, not before


def test_view_keys_reveal_nothing_of_the_token() -> None:
    """Keys are SHA-256 digests (the anonymous token's key is empty); the token is not in them."""
    key = token_key("s3cr3t-token-value")
    assert len(key) == 64 and "s3cr3t" not in key
    assert token_key(None) == token_key("") == ""
    assert token_key("a") != token_key("b")
