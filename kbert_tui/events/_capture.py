"""An event's data as of emit time: the containers in it are copied, so the emitter's later changes
can't reach handlers (the log line is encoded at emit time too).

What is copied: dicts and their subclasses (an OrderedDict stays one, a defaultdict keeps its
factory), lists, tuples holding anything mutable, sets, bytearrays and numpy arrays, at any depth;
shared and circular references stay shared and circular in the copy. Everything else (str, numbers,
bytes, frozensets, datetimes, Decimals, Enums, dataclass instances, other objects) is handed over
as it is: an object the emitter changes later is seen changed.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["capture"]

# Immutable values: kept as they are (the common case, checked first).
_ATOMS = frozenset({str, int, float, bool, type(None), bytes, complex, frozenset})
_RECURSIVE_DEPTH = 32  # deeper than this the copy goes on without recursion


class _Cycle(Exception):
    """The payload holds itself: copy it the memoized way (following each cycle once)."""


def capture(data: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of an event's data (or metadata) that later changes by the emitter can't reach.

    The one snapshot of every emit path. Never raises: a mapping that resists copying is handed over
    as given.
    """
    try:
        copy = data.copy() if type(data) is dict else dict(data)
        for key, value in copy.items():
            kind = type(value)
            if kind not in _ATOMS:  # replacing a value leaves the iteration intact
                if kind is dict and _ATOMS.issuperset(map(type, value.values())):
                    copy[key] = value.copy()  # the usual nesting, a dict of numbers (metrics): no visit
                else:
                    copy[key] = _capture(value, (id(data),))
        return copy
    except (_Cycle, RecursionError):  # a payload that holds itself, or an emit from deep recursion
        return _capture_deep(data if type(data) is dict else dict(data))  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - a hostile mapping: deliver it as given
        return data


def _capture(value: Any, parents: tuple[int, ...]) -> Any:
    """`value` copied where it is mutable; recursive for the usual shallow payloads (`parents`: the ids of
    the containers it is in, so a cycle is noticed at once, not unrolled)."""
    kind = type(value)
    inner = None  # worked out at the first member that is a container: most hold only atoms
    if kind is dict or isinstance(value, dict):
        copy = value.copy() if kind is dict else _copy_mapping(value)
        for key, item in copy.items() if kind is dict else list(copy.items()):
            if type(item) not in _ATOMS:
                if inner is None:
                    inner = _inside(value, parents)
                copy[key] = _capture(item, inner)
        return copy
    if kind is list or isinstance(value, list):
        copy = value.copy() if kind is list else list(value)
        for index, item in enumerate(copy):
            if type(item) not in _ATOMS:
                if inner is None:
                    inner = _inside(value, parents)
                copy[index] = _capture(item, inner)
        return copy
    if isinstance(value, tuple):
        for item in value:
            if type(item) not in _ATOMS:
                inner = _inside(value, parents)
                return _remake_tuple(value, [_capture(member, inner) for member in value])
        return value  # immutable members only: the tuple is its own snapshot
    return _capture_leaf(value)


def _inside(value: Any, parents: tuple[int, ...]) -> tuple[int, ...]:
    """The parents of `value`'s members; raises _Cycle if `value` is one of its own parents."""
    key = id(value)
    if key in parents:
        raise _Cycle
    if len(parents) >= _RECURSIVE_DEPTH:
        raise RecursionError  # deep nesting: the whole payload is copied the iterative way
    return (*parents, key)


def _copy_mapping(value: dict[Any, Any]) -> dict[Any, Any]:
    """A dict subclass copied as its own type where its `copy()` allows (OrderedDict, defaultdict, Counter)."""
    try:
        copy = value.copy()
        if isinstance(copy, dict) and copy is not value:
            return copy
    except Exception:  # noqa: BLE001 - a subclass whose copy() needs arguments or raises
        pass
    return dict(value)


def _remake_tuple(original: tuple[Any, ...], members: list[Any]) -> tuple[Any, ...]:
    if all(new is old for new, old in zip(members, original, strict=True)):  # members: one per original item
        return original
    make = getattr(type(original), "_make", None)  # a namedtuple stays one
    if make is not None:
        try:
            return make(members)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001 - a tuple subclass with its own ideas: a plain tuple then
            pass
    return tuple(members)


def _capture_leaf(value: Any) -> Any:
    """Containers without containers to visit inside them: sets, bytearrays, numpy arrays."""
    try:
        if isinstance(value, (set, bytearray)):
            return set(value) if isinstance(value, set) else bytearray(value)
        numpy = sys.modules.get("numpy")  # no numpy loaded, no numpy arrays to copy
        if numpy is not None and isinstance(value, numpy.ndarray):
            return value.copy()  # an object array's elements are shared, like other objects
    except Exception:  # noqa: BLE001 - a set whose members no longer hash: handed over as it is
        pass
    return value


_MAPPING, _LIST, _TUPLE = 0, 1, 2


def _capture_deep(root: Any) -> Any:
    """`_capture` without recursion: any depth; shared and circular references are kept as such.

    A cycle that runs through a tuple keeps that tuple itself (a tuple can't be made before its members).
    """
    memo: dict[int, Any] = {}  # id of an original container -> its copy
    building: set[int] = set()  # tuples whose members are being captured
    # A frame: [copy being filled, (slot, member) pairs left, kind, the original tuple, parent frame, slot in it]
    result: list[Any] = [None]

    def start(value: Any, parent: list[Any] | None, slot: Any) -> list[Any] | None:
        """Place the copy of `value` in the parent (or the result); a frame when its members need visiting."""
        key = id(value)
        if key in memo:
            copy, frame = memo[key], None
        elif key in building:
            copy, frame = value, None
        elif isinstance(value, dict):
            copy = value.copy() if type(value) is dict else _copy_mapping(value)
            memo[key] = copy
            frame = [copy, iter(list(copy.items())), _MAPPING, None, parent, slot]
        elif isinstance(value, list):
            copy = list(value)
            memo[key] = copy
            frame = [copy, iter(list(enumerate(copy))), _LIST, None, parent, slot]
        elif isinstance(value, tuple):
            building.add(key)
            members = list(value)
            return [members, iter(list(enumerate(members))), _TUPLE, value, parent, slot]  # placed when done
        else:
            copy, frame = _capture_leaf(value), None
        _place(parent, slot, copy, result)
        return frame

    stack: list[list[Any]] = []
    frame = start(root, None, None)
    if frame is not None:
        stack.append(frame)
    while stack:
        frame = stack[-1]
        copy, members = frame[0], frame[1]
        for slot, member in members:
            if type(member) not in _ATOMS:
                child = start(member, frame, slot)
                if child is not None:
                    stack.append(child)
                    break
        else:
            stack.pop()
            if frame[2] == _TUPLE:
                original = frame[3]
                finished = _remake_tuple(original, copy)
                building.discard(id(original))
                memo[id(original)] = finished
                _place(frame[4], frame[5], finished, result)
    return result[0]


def _place(parent: list[Any] | None, slot: Any, copy: Any, result: list[Any]) -> None:
    if parent is None:
        result[0] = copy
    else:
        parent[0][slot] = copy
