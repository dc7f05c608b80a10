"""ServiceView: the indexed, memoised view answers exactly what wire.matches accepts (property-based)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consul_agents import _wire as wire
from consul_agents._cache import ServiceView, request_key
from consul_agents._models import AgentInfo, AgentStatus, DiscoveryRequest

CAPABILITIES = ["plan", "code", "search", "sum"]
TAG_KEYS = ["tier", "zone"]
TAG_VALUES = ["a", "b"]
LOADS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _agent(i: int, fields: tuple[AgentStatus, list[str], float, dict[str, str], str]) -> AgentInfo:
    status, capabilities, load, tags, datacenter = fields
    return AgentInfo(
        agent_id=f"a{i:03d}",
        agent_type="t",
        capabilities=capabilities,
        status=status,
        endpoint="http://h:1",
        health_score=wire.HEALTH_SCORES[status],
        current_load=load,
        last_heartbeat=None,
        tags=tags,
        datacenter=datacenter,
    )


agent_fields = st.tuples(
    st.sampled_from(list(AgentStatus)),
    st.lists(st.sampled_from(CAPABILITIES), unique=True, max_size=4),
    st.sampled_from(LOADS),
    st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES)),
    st.sampled_from(["dc1", "dc2"]),
)
fleets = st.lists(agent_fields, max_size=30).map(
    lambda rows: [_agent(i, fields) for i, fields in reversed(list(enumerate(rows)))]
)


requests = st.builds(
    DiscoveryRequest,
    agent_type=st.sampled_from([None, "t", "other"]),
    capabilities=st.lists(st.sampled_from([*CAPABILITIES, "none"]), unique=True, max_size=3),
    status=st.sampled_from([None, *AgentStatus]),
    max_load=st.sampled_from([None, *LOADS, 0.3]),
    tags=st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(TAG_VALUES), max_size=2),
    region=st.sampled_from([None, "dc1", "dc2"]),
)


@settings(max_examples=150, deadline=None)
@given(fleets, st.lists(requests, min_size=1, max_size=5))
def test_view_answers_equal_the_predicate(fleet: list[AgentInfo], asked: list[DiscoveryRequest]) -> None:
    """For any fleet and requests, the view returns exactly the agents wire.matches accepts, by id,
    the first time and again from its memo."""
    view = ServiceView(fleet)
    for request in asked:
        expected = sorted((a for a in fleet if wire.matches(request, a)), key=lambda a: a.agent_id)
        assert view.query(request) == expected
        assert view.query(request) == expected


def test_request_key_ignores_order_only() -> None:
    """Requests differing only in the order of capabilities or tags share a key; others do not."""
    a = DiscoveryRequest(capabilities=["plan", "code"], tags={"x": "1", "y": "2"})
    b = DiscoveryRequest(capabilities=["code", "plan"], tags={"y": "2", "x": "1"})
    assert request_key(a) == request_key(b)
    assert request_key(a) != request_key(DiscoveryRequest(capabilities=["code", "plan"], max_load=0.5))
    assert request_key(a) != request_key(DiscoveryRequest(capabilities=["code", "plan"], region="dc2"))


def test_a_new_view_does_not_reuse_old_answers() -> None:
    """A view built after a change answers from the new agents, not from the old view's memo."""
    request = DiscoveryRequest(capabilities=["plan"])
    base = dict(agent_type="t", endpoint="http://h:1", last_heartbeat=None, current_load=0.0)
    one = AgentInfo(agent_id="a", capabilities=["plan"], status=AgentStatus.PASSING, health_score=1.0, **base)
    old = ServiceView([one])
    assert old.query(request) == [one]
    gone = one.model_copy(update={"status": AgentStatus.CRITICAL, "health_score": 0.0})
    assert ServiceView([gone]).query(request) == []
    assert old.query(request) == [one]
