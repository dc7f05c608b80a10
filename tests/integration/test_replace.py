"""replace_agent against a real Consul: the new agent passes before the old one drains and goes, and a
failure at any step leaves the documented state."""

from __future__ import annotations

import asyncio

import pytest
from support import consul_get, eventually, registration

from consul_agents import (
    AgentNotFoundError,
    AgentRegistry,
    AgentStatus,
    InvalidAgentError,
    PermissionDeniedError,
    SelectionCriteria,
)
from consul_agents._replace import ReplacementError


def _ids(consul_addr: str, agent_type: str) -> set[str]:
    entries, _ = consul_get(consul_addr, f"/v1/health/service/agent-{agent_type}")
    return {e["Service"]["ID"] for e in entries}


async def _heartbeat_when_registered(registry: AgentRegistry, agent_id: str) -> None:
    """What the new agent's own process does: heartbeat it passing once it is registered."""

    async def beat() -> bool:
        try:
            await registry.heartbeat(agent_id)
        except AgentNotFoundError:
            return False
        return True

    await eventually(beat, what=f"{agent_id} registered")


async def test_replace_waits_for_passing_then_for_the_leases_then_deregisters(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """The new agent is registered critical and waited for until its process makes it pass; the old one is
    then draining while this client's lease on it runs, and deregistered once the lease ends."""
    old = await registry.register_agent(registration(unique, agent_id=f"{unique}-old"))
    new = registration(unique, agent_id=f"{unique}-new", endpoint="http://127.0.0.1:9001")
    async with registry.lease(SelectionCriteria(agent_type=unique)) as leased:
        assert leased.agent_id == old
        replacing = asyncio.create_task(registry.replace_agent(old, new, timeout=20, drain_timeout=20))
        assert (await registry.get_agent(old)).draining is False
        await _heartbeat_when_registered(registry, new.agent_id or "")

        async def old_draining() -> bool:
            return (await registry.get_agent(old)).draining

        await eventually(old_draining, what="old agent draining")
        assert not replacing.done() and old in _ids(consul_addr, unique)
    done = await asyncio.wait_for(replacing, 20)
    assert (done.old_id, done.new_id, done.leases_left) == (old, new.agent_id, 0)
    assert _ids(consul_addr, unique) == {new.agent_id}
    assert (await registry.get_agent(done.new_id)).status is AgentStatus.PASSING
    await registry.deregister_agent(done.new_id)


async def test_a_new_agent_that_never_passes_is_rolled_back(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """When the new agent is not passing by the timeout, ReplacementError names step wait_passing, the new
    agent is deregistered again and the old one is untouched (registered, not draining)."""
    old = await registry.register_agent(registration(unique, agent_id=f"{unique}-old"))
    new = registration(unique, agent_id=f"{unique}-new")
    with pytest.raises(ReplacementError) as failed:
        await registry.replace_agent(old, new, timeout=1.0)
    assert failed.value.step == "wait_passing" and "rolled back" in failed.value.state
    assert "critical" in str(failed.value)
    assert _ids(consul_addr, unique) == {old}
    assert (await registry.get_agent(old)).draining is False
    await registry.deregister_agent(old)


async def test_leases_past_the_drain_timeout_are_reported_not_waited_for(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """A lease still running when drain_timeout passes does not stop the replacement: the old agent is
    deregistered and leases_left says one lease was still on it."""
    old = await registry.register_agent(registration(unique, agent_id=f"{unique}-old"))
    new = registration(unique, agent_id=f"{unique}-new")
    async with AgentRegistry(consul_addr) as newcomer, newcomer.session(new) as session:
        async with registry.lease(SelectionCriteria(agent_type=unique, exclude=[session.agent_id])):
            done = await registry.replace_agent(old, session.agent_id, timeout=10, drain_timeout=0.3)
        assert done.leases_left == 1 and done.drained_for >= 0.3
        assert _ids(consul_addr, unique) == {session.agent_id}


async def test_nothing_is_written_for_an_unknown_old_agent_or_a_bad_request(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """An old agent that does not exist is AgentNotFoundError before the new one is registered; the same id
    for both, or a bad id, is InvalidAgentError."""
    with pytest.raises(AgentNotFoundError):
        await registry.replace_agent(f"{unique}-ghost", registration(unique, agent_id=f"{unique}-new"))
    assert _ids(consul_addr, unique) == set()
    with pytest.raises(InvalidAgentError, match="another id"):
        await registry.replace_agent(f"{unique}-a", registration(unique, agent_id=f"{unique}-A"))
    with pytest.raises(InvalidAgentError, match="old_id"):
        await registry.replace_agent("../kv", f"{unique}-b")
    with pytest.raises(InvalidAgentError, match="drain_timeout"):
        await registry.replace_agent(f"{unique}-a", f"{unique}-b", drain_timeout=float("nan"))


async def test_cancelling_before_the_new_agent_passes_rolls_it_back(
    registry: AgentRegistry, consul_addr: str, unique: str
) -> None:
    """A replacement cancelled while waiting for the new agent propagates CancelledError and leaves the old
    agent alone and the new one deregistered."""
    old = await registry.register_agent(registration(unique, agent_id=f"{unique}-old"))
    new = registration(unique, agent_id=f"{unique}-new")
    task = asyncio.create_task(registry.replace_agent(old, new, timeout=30))

    async def new_registered() -> bool:
        return f"{unique}-new" in _ids(consul_addr, unique)

    await eventually(new_registered, what="new agent registered")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _ids(consul_addr, unique) == {old}
    await registry.deregister_agent(old)


async def test_a_failed_deregistration_says_the_old_agent_is_left_draining(
    consul_addr: str, unique: str
) -> None:
    """When the old agent cannot be deregistered (it lives on another Consul agent's node here), the error
    names step deregister and says the old agent is left draining, and the new one serves."""
    async with AgentRegistry(consul_addr) as owner, AgentRegistry(consul_addr) as operator:
        old = await owner.register_agent(registration(unique, agent_id=f"{unique}-old"))
        async with owner.session(registration(unique, agent_id=f"{unique}-new")) as session:
            # Consul refusing the deregistration (as its ACLs would), after the drain went through
            real = operator.deregister_agent

            async def refused(agent_id: str) -> bool:
                if agent_id == old:
                    raise PermissionDeniedError(f"deregister agent {agent_id!r}")
                return await real(agent_id)

            operator.deregister_agent = refused  # type: ignore[method-assign]
            with pytest.raises(ReplacementError) as failed:
                await operator.replace_agent(old, session.agent_id, timeout=10, drain_timeout=0.1)
            assert failed.value.step == "deregister" and "draining" in failed.value.state
            assert (await owner.get_agent(old)).draining is True
        await owner.deregister_agent(old)


async def test_a_refused_registration_leaves_the_old_agent_alone(
    consul_addr: str, registry: AgentRegistry, unique: str
) -> None:
    """A new agent whose id another type holds fails at step register: the old agent is untouched and
    serving, the holder unchanged."""
    old = await registry.register_agent(registration(unique, agent_id=f"{unique}-old"))
    async with AgentRegistry(consul_addr) as other:
        held = await other.register_agent(registration(f"{unique}x", agent_id=f"{unique}-held"))
        with pytest.raises(ReplacementError) as failed:
            await registry.replace_agent(old, registration(unique, agent_id=held))
        assert failed.value.step == "register" and "untouched" in failed.value.state
        assert isinstance(failed.value.__cause__, InvalidAgentError)
        assert (await registry.get_agent(old)).draining is False
        assert (await registry.get_agent(held)).agent_type == f"{unique}x"
        await other.deregister_agent(held)
    await registry.deregister_agent(old)
