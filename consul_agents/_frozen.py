"""Read-only lists and dicts for the values every caller of the cache shares (pure).

An AgentInfo answered from the cache is the same object for every caller, so its ``capabilities``,
``tags`` and ``metadata`` must not be changed by one of them. They are frozen here once, when Consul's
answer is converted, which is cheaper than copying them for every answer (a cached discovery of 1,000
agents would copy 1,000 of each). They subclass ``list``/``dict``, as werkzeug's ``ImmutableList`` and
``ImmutableDict`` do, so they compare equal to plain lists and dicts and serialise with ``json.dumps``;
every method that would change them raises TypeError.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["FrozenDict", "FrozenList", "freeze", "freeze_flat"]


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: copy it (list(x), dict(x)) to change it")


class FrozenList(list[Any]):
    """A list that cannot change."""

    __slots__ = ()
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))


class FrozenDict(dict[str, Any]):
    """A dict that cannot change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda item: item[0])))


def freeze(value: Any) -> Any:
    """``value`` with every list and dict in it, at any depth, replaced by a frozen one."""
    kind = type(value)
    if kind is dict:
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if kind is list:
        return FrozenList([freeze(item) for item in value])
    if kind is FrozenDict or kind is FrozenList:
        return value
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList([freeze(item) for item in value])
    return value


def freeze_flat(value: Any) -> Any:
    """A list or dict of scalars (capabilities, tags) frozen, without looking deeper."""
    if isinstance(value, FrozenDict | FrozenList):
        return value
    return FrozenDict(value) if isinstance(value, dict) else FrozenList(value)
