"""Batch registration and deregistration: many agents in one call, each with its own result.

Rules, the same through the library, the REST API and the CLI:

* **Validated first, all or nothing.** Every item is validated before anything reaches Consul. When any
  item is invalid (a field pydantic refuses, an agent id that is not one, an id given twice in the batch) the
  whole batch is refused with :class:`InvalidBatchError`, which lists every invalid item by index, field and
  reason; nothing is written. A batch file with a typo is fixed and sent again, instead of leaving the fleet
  in a state that no file describes.
* **Bounded.** At most :data:`MAX_BATCH` items per call, at most ``concurrency`` writes in flight
  (:data:`MAX_CONCURRENCY` at most). Each item is one ``register_agent``/``deregister_agent`` call with the
  client's own timeout; ``timeout`` optionally bounds the whole batch (an item not done by then fails with
  RegistryTimeoutError, and is reported as such).
* **Every item reported.** A valid batch never raises for an item's failure: each item ends as
  ``ok`` or with the error's class and message (``PermissionDeniedError``, ``RegistryUnavailableError``...).
  The items that succeeded stay done; nothing is rolled back (``failed`` lists what to retry).
* **Cancellation stays cancellation.** Cancelling the call cancels the items in flight and propagates; the
  items already done stay done (as with N single calls).

A batch registration is N single registrations: each agent starts passing and must then be heartbeated
within its TTL by its own process (REST ``PUT /v1/agents/{id}/heartbeat``, a sidecar, a session), exactly
as after ``register_agent``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from consul_agents._errors import ConsulAgentsError, InvalidAgentError, RegistryTimeoutError
from consul_agents._gateway import call_deadline, time_left
from consul_agents._models import AGENT_ID_PATTERN, AgentRegistration, invalid_agent_error

if TYPE_CHECKING:
    from consul_agents._registry import AgentRegistry

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_BATCH",
    "MAX_CONCURRENCY",
    "BatchItemResult",
    "BatchResult",
    "InvalidBatchError",
    "InvalidItem",
    "deregister_many",
    "register_many",
    "validate_agent_ids",
    "validate_registrations",
]

#: Most items in one batch (a REST body of 1,000 registrations is about 300 KB, within its 1 MiB).
MAX_BATCH = 1000
#: Writes in flight at once by default, and at most.
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64

T = TypeVar("T")


class InvalidItem(BaseModel):
    """One item refused by validation: its position in the batch, the field at fault and why."""

    model_config = ConfigDict(frozen=True)

    index: int
    field: str | None = None
    message: str


class InvalidBatchError(InvalidAgentError):
    """The batch was refused before anything was written: ``invalid`` lists every invalid item."""

    def __init__(self, invalid: Sequence[InvalidItem], size: int) -> None:
        shown = "; ".join(f"[{i.index}] {i.message}" for i in invalid[:5])
        more = f"; and {len(invalid) - 5} more" if len(invalid) > 5 else ""
        super().__init__(
            f"batch refused, nothing written: {len(invalid)} of {size} item(s) invalid: {shown}{more}",
            field=f"[{invalid[0].index}]" if invalid else "",
        )
        self.invalid = list(invalid)


class BatchItemResult(BaseModel):
    """What became of one item: ``ok``, or the error's class and message. ``removed`` (deregistration
    only) is False when the agent was not registered, which is not an error."""

    model_config = ConfigDict(frozen=True)

    index: int
    agent_id: str | None
    ok: bool
    removed: bool | None = None
    error: str | None = None
    message: str | None = None


class BatchResult(BaseModel):
    """Every item's result, in the order of the batch."""

    model_config = ConfigDict(frozen=True)

    results: list[BatchItemResult]

    @property
    def ok(self) -> bool:
        """Whether every item succeeded."""
        return all(r.ok for r in self.results)

    @property
    def succeeded(self) -> list[BatchItemResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[BatchItemResult]:
        return [r for r in self.results if not r.ok]


def _check_size(size: int, concurrency: int) -> None:
    if size > MAX_BATCH:
        raise InvalidAgentError(
            f"batch of {size} items refused: at most {MAX_BATCH} per batch", field="batch"
        )
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidAgentError(
            f"concurrency {concurrency!r} must be between 1 and {MAX_CONCURRENCY}", field="concurrency"
        )


def _duplicates(ids: Sequence[str | None]) -> list[InvalidItem]:
    """Items naming an id an earlier item names (Consul matches ids case-insensitively)."""
    first: dict[str, int] = {}
    invalid = []
    for index, agent_id in enumerate(ids):
        if agent_id is None:
            continue
        key = agent_id.lower()
        if key in first:
            message = f"agent_id {agent_id!r} is also item {first[key]} of this batch"
            invalid.append(InvalidItem(index=index, field="agent_id", message=message))
        else:
            first[key] = index
    return invalid


def validate_registrations(
    items: Sequence[AgentRegistration | Mapping[str, Any]], *, concurrency: int = DEFAULT_CONCURRENCY
) -> list[AgentRegistration]:
    """Every item as an AgentRegistration, or InvalidBatchError naming every invalid one."""
    _check_size(len(items), concurrency)
    registrations: list[AgentRegistration | None] = []
    invalid: list[InvalidItem] = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, AgentRegistration):
                registrations.append(item)
            elif isinstance(item, Mapping):
                registrations.append(AgentRegistration(**item))
            else:
                raise InvalidAgentError(
                    f"expected a registration (an object), not {type(item).__name__}", field=""
                )
        except ValidationError as exc:
            error = invalid_agent_error(exc, "AgentRegistration")
            invalid.append(InvalidItem(index=index, field=error.field or None, message=str(error)))
            registrations.append(None)
        except (InvalidAgentError, TypeError) as exc:
            invalid.append(
                InvalidItem(index=index, field=getattr(exc, "field", None) or None, message=str(exc))
            )
            registrations.append(None)
    invalid += _duplicates([r.agent_id if r is not None else None for r in registrations])
    if invalid:
        raise InvalidBatchError(sorted(invalid, key=lambda i: i.index), len(items))
    return [r for r in registrations if r is not None]


def validate_agent_ids(agent_ids: Sequence[object], *, concurrency: int = DEFAULT_CONCURRENCY) -> list[str]:
    """Every item as an agent id, or InvalidBatchError naming every invalid one."""
    _check_size(len(agent_ids), concurrency)
    invalid = [
        InvalidItem(index=index, field="agent_id", message=f"{str(value)[:140]!r} is not an agent id")
        for index, value in enumerate(agent_ids)
        if not isinstance(value, str) or not AGENT_ID_PATTERN.fullmatch(value)
    ]
    invalid += _duplicates([v if isinstance(v, str) else None for v in agent_ids])
    if invalid:
        raise InvalidBatchError(sorted(invalid, key=lambda i: i.index), len(agent_ids))
    return [str(v) for v in agent_ids]


async def _run(
    calls: Sequence[Callable[[], Awaitable[T]]],
    concurrency: int,
    timeout: float | None,
    result_of: Callable[[int, T], BatchItemResult],
    id_of: Callable[[int], str | None],
) -> BatchResult:
    """Run every call, at most ``concurrency`` at once, each turned into its item's result."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> BatchItemResult:
        async with gate:
            try:
                left = time_left()
                if left is not None and left <= 0:
                    raise RegistryTimeoutError("the batch's deadline passed before this item was started")
                return result_of(index, await calls[index]())
            except ConsulAgentsError as exc:
                error: Exception = exc
            except Exception as exc:  # a bug must not hide the other items' results
                error = exc
            return BatchItemResult(
                index=index, agent_id=id_of(index), ok=False, error=type(error).__name__, message=str(error)
            )

    with call_deadline(timeout):
        # TaskGroup: a cancellation of the batch cancels every item still running, then propagates.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(index)) for index in range(len(calls))]
    return BatchResult(results=[task.result() for task in tasks])


async def register_many(
    registry: AgentRegistry,
    items: Sequence[AgentRegistration | Mapping[str, Any]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
) -> BatchResult:
    """Register every item (see the module's rules); ``agent_id`` of each result is the id registered."""
    registrations = validate_registrations(items, concurrency=concurrency)
    calls = [lambda r=r: registry.register_agent(r) for r in registrations]
    return await _run(
        calls,
        concurrency,
        timeout,
        lambda index, agent_id: BatchItemResult(index=index, agent_id=agent_id, ok=True),
        lambda index: registrations[index].agent_id,
    )


async def deregister_many(
    registry: AgentRegistry,
    agent_ids: Sequence[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
) -> BatchResult:
    """Deregister every agent (see the module's rules); an agent that was not registered is ``ok`` with
    ``removed`` False."""
    ids = validate_agent_ids(agent_ids, concurrency=concurrency)
    calls = [lambda a=a: registry.deregister_agent(a) for a in ids]
    return await _run(
        calls,
        concurrency,
        timeout,
        lambda index, removed: BatchItemResult(index=index, agent_id=ids[index], ok=True, removed=removed),
        lambda index: ids[index],
    )
