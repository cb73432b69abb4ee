"""The Event record and its identifiers."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

_UTC = UTC
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)


def _new_prefix() -> str:
    # Milliseconds since the epoch plus 32 random bits: distinct across processes and restarts.
    return f"{int(time.time() * 1000):011x}{os.urandom(4).hex()}-"


_prefix = _new_prefix()
_counter = itertools.count(1)


def _reseed_after_fork() -> None:
    global _prefix, _counter
    _prefix = _new_prefix()
    _counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)


def new_event_id() -> str:
    """Return an id unique across processes and restarts (a per-process prefix and a counter)."""
    return f"{_prefix}{next(_counter):x}"


def id_of(origin: tuple[int, str, int]) -> str:
    return f"{origin[1]}{origin[2]:x}"


def timestamp_of(origin: tuple[int, str, int]) -> datetime:
    return _EPOCH + timedelta(microseconds=origin[0] // 1000)


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(_UTC)


@dataclass(frozen=True)
class Event:
    """Something that happened: a dotted name, its data, when, where from, and how it relates."""

    name: str
    data: dict[str, Any]
    timestamp: datetime = field(default_factory=utcnow)
    source: str = "unknown"
    correlation_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_event_id)

    def __getattr__(self, attr: str) -> Any:
        # The other half of the bus's event factory (EventBus._make_event), which stores only `_origin`:
        # the datetime, the id string and an empty metadata dict are made the first time someone reads
        # them (most handlers never do).
        fields = self.__dict__
        origin = fields.get("_origin")
        if origin is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        if attr == "timestamp":
            value: Any = timestamp_of(origin)
        elif attr == "id":
            value = id_of(origin)
        elif attr == "metadata":
            value = {}
        else:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        fields[attr] = value
        return value

    @property
    def category(self) -> str:
        """The first segment of the name (`training` for `training.started`)."""
        return self.name.partition(".")[0]

