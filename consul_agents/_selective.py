"""Selective watches: when a question narrows a large agent type by what Consul can filter, a watch of its
own that Consul filters. Pure: which questions qualify, and the key and filter of their watch.

Consul 1.8 re-sends every instance of a service on each change (no streaming): at 1,000 agents of one
type, 1.4 MB that Consul spends most of a wake serialising. A question asking for a capability or an
agent tag among them needs a tenth of that, and a blocking query with Consul's ``filter`` is answered 2 to 4
times sooner (see reports/bench-propagation.json). The cache therefore keeps, beside the one watch per
type that serves every question of the type, a few watches with a filter:

* only for a question that names its type and a capability or an agent tag (what Consul can filter; a
  ``max_load`` alone cannot be: Consul 1.8 compares strings only), over a type whose watch holds at
  least :data:`MIN_AGENTS` agents (below that the whole answer is small);
* keyed by the capabilities and tags alone: status, draining and ``max_load`` are tested on the filtered
  view, so every question with the same capabilities and tags shares one watch, whatever else it asks;
* at most :data:`PER_SERVICE` per type, within the cache's own watch limit and the pool's budget; one is
  never started by stopping another watch, and it stops when idle like any other;
* started in the background on the first such question, which the type's watch answers meanwhile;
* while only such questions are asked, the type's own watch stops after :data:`SHADOWED_IDLE` seconds
  unused (its whole answers, serialised by Consul on every change, slowed the filtered ones 2x in the
  benchmark); a question that needs it starts it again, and from then on it stays until idle.
"""

from __future__ import annotations

from consul_agents import _wire as wire
from consul_agents._models import DiscoveryRequest

__all__ = ["MIN_AGENTS", "PER_SERVICE", "SHADOWED_IDLE", "selector"]

#: A type's watch must hold at least this many agents before a question narrowing it gets its own watch.
MIN_AGENTS = 200
#: Selective watches per type at most (each one a pooled connection, and one more answer per change).
PER_SERVICE = 4
#: The type's own watch, unused this many seconds while selective watches answer its questions, stops
#: (once per type: see DiscoveryCache._selective_watch); Consul then serialises only the filtered answers.
SHADOWED_IDLE = 1.0


def selector(request: DiscoveryRequest) -> str | None:
    """The Consul filter of the selective watch that can answer ``request``: its capabilities and agent
    tags, every status included; None when the request narrows nothing Consul can filter."""
    if request.agent_type is None or not (request.capabilities or request.tags):
        return None
    narrowed = DiscoveryRequest(
        agent_type=request.agent_type,
        capabilities=sorted(set(request.capabilities)),
        tags=dict(sorted(request.tags.items())),
        include_draining=True,
    )
    # With include_draining and no status, the expression keeps every status (see wire.filter_expression).
    return wire.filter_expression(narrowed)
