"""The public surface: every exported name exists, user-facing classes are exported, errors subclass right."""

from __future__ import annotations

import inspect

import pytest

import consul_agents
from consul_agents import _errors, _models


def test_all_names_exist() -> None:
    """Every name in consul_agents.__all__ is an attribute of the package, listed once."""
    missing = [name for name in consul_agents.__all__ if not hasattr(consul_agents, name)]
    assert missing == []
    assert len(set(consul_agents.__all__)) == len(consul_agents.__all__)


@pytest.mark.parametrize("module", [_errors, _models], ids=lambda m: m.__name__)
def test_public_classes_are_exported(module: object) -> None:
    """Every class in a private module's __all__ is exported from consul_agents as the same object."""
    classes = {
        name
        for name in module.__all__
        if inspect.isclass(getattr(module, name))  # type: ignore[attr-defined]
    }
    assert classes  # the module does define public classes
    assert classes - set(consul_agents.__all__) == set()
    for name in classes:
        assert getattr(consul_agents, name) is getattr(module, name)


def test_core_entry_points_exported() -> None:
    """The registry, its session, the settings and the Strategy type are exported."""
    for name in ("AgentRegistry", "AgentSession", "ConsulSettings", "Strategy", "__version__"):
        assert name in consul_agents.__all__


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (consul_agents.RegistryUnavailableError, (ConnectionError,)),
        (consul_agents.RegistryTimeoutError, (TimeoutError, consul_agents.RegistryUnavailableError)),
        (consul_agents.InvalidAgentError, (ValueError,)),
        (consul_agents.AgentNotFoundError, (LookupError,)),
        (consul_agents.PermissionDeniedError, (PermissionError,)),
        (consul_agents.ConsulRequestError, ()),
    ],
)
def test_error_bases(error: type[Exception], bases: tuple[type[Exception], ...]) -> None:
    """Each error derives from ConsulAgentsError and from its documented stdlib base."""
    assert issubclass(error, consul_agents.ConsulAgentsError)
    for base in bases:
        assert issubclass(error, base)


def test_every_error_derives_from_base() -> None:
    """Every exception class in _errors derives from ConsulAgentsError."""
    errors = [getattr(_errors, n) for n in _errors.__all__]
    assert all(issubclass(e, consul_agents.ConsulAgentsError) for e in errors)
    assert issubclass(consul_agents.ConsulAgentsError, Exception)


def test_error_attributes() -> None:
    """Errors carry their documented attributes and messages."""
    assert consul_agents.InvalidAgentError("bad", field="ttl").field == "ttl"
    nf = consul_agents.AgentNotFoundError("a-1", "gone")
    assert (nf.agent_id, str(nf)) == ("a-1", "agent 'a-1' is not registered: gone")
    denied = consul_agents.PermissionDeniedError("register")
    assert (denied.operation, str(denied)) == ("register", "permission denied: register")
    req = consul_agents.ConsulRequestError("read", 400)
    assert (req.operation, req.status, str(req)) == ("read", 400, "read failed: Consul answered 400")
    assert consul_agents.RegistryTimeoutError("slow", address="http://x:1").address == "http://x:1"
