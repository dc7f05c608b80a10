"""Pure parts of the write path: id spelling, metadata depth, and the wire helpers of the integrity checks."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import registration

from consul_agents import SelectionCriteria
from consul_agents import _wire as wire
from consul_agents._integrity import AgentLocks
from consul_agents._models import AGENT_ID_PATTERN, MAX_METADATA_DEPTH, normalise_agent_id

agent_ids = st.from_regex(AGENT_ID_PATTERN, fullmatch=True)


@given(agent_ids)
def test_ids_differing_by_case_are_one_id(agent_id: str) -> None:
    """Every case spelling of an id registers as the same id."""
    spellings = {agent_id, agent_id.upper(), agent_id.lower(), agent_id.swapcase()}
    assert {registration("t", agent_id=s).agent_id for s in spellings} == {agent_id.lower()}


@given(agent_ids)
def test_id_filter_matches_every_spelling_and_nothing_else(agent_id: str) -> None:
    """The holder filter's pattern (RE2 and Python agree on this subset) matches the id in any case only."""
    expression = wire.id_filter(agent_id, "ID")
    literal = expression.removeprefix("ID matches ")
    pattern = literal[1:-1]  # ids hold nothing quote() must escape
    assert re.fullmatch(pattern, agent_id.swapcase())
    assert not re.fullmatch(pattern, agent_id + "x")
    if "." in agent_id:
        assert not re.fullmatch(pattern, agent_id.replace(".", "x"))


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"n": value}
    return value


def test_metadata_depth_bound_counts_lists_and_objects() -> None:
    """Metadata exactly as deep as the bound is accepted; a list inside its deepest object is one level
    too many."""
    assert registration("t", metadata=nested(MAX_METADATA_DEPTH, 1)).metadata
    with pytest.raises(ValueError, match="nests deeper"):
        registration("t", metadata=nested(MAX_METADATA_DEPTH, [1]))


def test_exclude_covers_the_lowercase_spelling() -> None:
    """An excluded id in any case excludes the lowercase id this library registers, and itself."""
    assert SelectionCriteria(exclude=["Coder-X", "coder-x"]).exclude == ["Coder-X", "coder-x"]
    assert SelectionCriteria(exclude=["a", "b"]).exclude == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"Results": [{"Service": {"Service": "agent-a", "Address": "h", "Port": 1}}]}, None),
        ({"Results": []}, "gone"),
        ({"Results": None, "Errors": [{"What": "x"}]}, "gone"),
        ("not json", "gone"),
        ({"Results": [{"Service": {"Service": "agent-b", "Address": "h", "Port": 1}}]}, "service name"),
        ({"Results": [{"Service": {"Service": "agent-a", "Address": "evil", "Port": 1}}]}, "'evil'"),
        ({"Results": [{"Service": {"Service": "agent-a", "Address": "h", "Port": 2}}]}, "port 2"),
    ],
)
def test_registration_mismatch(body: Any, expected: str | None) -> None:
    """A catalog entry differing in service name, address or port (or gone) is named; an equal one is not."""
    found = wire.registration_mismatch(body, {"Name": "agent-a", "Address": "h", "Port": 1})
    assert found is None if expected is None else expected in str(found)


def test_metadata_keys_keep_only_well_formed_entries() -> None:
    """Keys outside the prefix, without a type or id, or with nested paths are not taken for metadata."""
    keys = [
        "consul-agents/metadata/coder/a",
        "consul-agents/metadata/coder/",
        "consul-agents/metadata/coder/a/b",
        "consul-agents/metadata/../x",
        "consul-agents/metadata/coder?dc=x/a",
        "consul-agents/metadata/coder/..",
        "consul-agents/metadata/Coder/a",
        "other/x",
        7,
    ]
    assert wire.metadata_keys(keys) == [("consul-agents/metadata/coder/a", "coder", "a")]


def test_helpers_tolerate_unexpected_shapes() -> None:
    """Answers of an unexpected shape give nothing rather than raising."""
    assert wire.check_node(None) is None and wire.check_node([1]) is None
    assert wire.check_node({"service:x": {"Node": "n1"}}) == "n1"
    assert wire.id_holders("text", "Service", "ID") == {}
    assert wire.id_holders({"a": {"ID": "a", "Service": "s"}}, "Service", "ID") == {"a": "s"}
    assert wire.ids_using_kv([{"Service": {"ID": "a", "Meta": {"agent-metadata": "kv"}}}, 3]) == {"a"}
    assert wire.kv_modify_index([{"ModifyIndex": 5}]) == 5 and wire.kv_modify_index(None) is None
    assert normalise_agent_id("ÄB") == "ÄB"


async def test_agent_locks_serialise_one_id_and_are_dropped_when_unused() -> None:
    """Writes to one id run one at a time, to different ids side by side, and no lock outlives its users."""
    locks = AgentLocks()
    order: list[str] = []

    async def write(agent_id: str, name: str, pause: asyncio.Event | None = None) -> None:
        async with locks.hold(agent_id):
            order.append(f"{name}+")
            if pause is not None:
                await pause.wait()
            order.append(f"{name}-")

    release = asyncio.Event()
    first = asyncio.create_task(write("a", "first", release))
    second = asyncio.create_task(write("a", "second"))
    other = asyncio.create_task(write("b", "other"))
    await asyncio.sleep(0)
    await other
    assert order == ["first+", "other+", "other-"] and len(locks) == 1
    release.set()
    await asyncio.gather(first, second)
    assert order[3:] == ["first-", "second+", "second-"] and len(locks) == 0
    cancelled = asyncio.create_task(write("c", "cancelled", asyncio.Event()))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert len(locks) == 0


def test_readers_of_single_consul_answers() -> None:
    """The transaction, agent-self and local-service readers take what they need and tolerate the rest."""
    entry = {"Results": [{"Service": {"ID": "Coder-X", "Service": "agent-coder"}}]}
    assert wire.txn_service_id(entry) == ("Coder-X", "agent-coder")
    assert wire.txn_service_id({"Results": [{"KV": {}}]}) is None and wire.txn_service_id(None) is None
    assert wire.agent_node_name({"Config": {"NodeName": "n1"}}) == "n1"
    assert wire.agent_node_name({"Config": {"NodeName": ""}}) is None and wire.agent_node_name([]) is None
    assert wire.local_service_name({"Service": "agent-a"}) == "agent-a"
    assert wire.local_service_name({"Service": 3}) is None
    assert wire.local_agent_type({"Service": "agent-a", "Meta": {"agent-metadata": "kv"}}) == ("a", True)
    assert wire.local_agent_type({"Service": "web", "Meta": None}) == (None, False)
