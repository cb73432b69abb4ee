"""The Event record and its identifiers."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

_UTC = timezone.utc


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

    @classmethod
    def _build(
        cls,
        name: str,
        data: dict[str, Any],
        timestamp: datetime,
        source: str,
        correlation_id: str | None,
        metadata: dict[str, Any],
        event_id: str,
        _new: Any = object.__new__,
    ) -> Event:
        # The bus's hot path: a frozen dataclass's __init__ costs ~0.8 µs, filling __dict__ ~0.3 µs.
        event = _new(cls)
        fields = event.__dict__
        fields["name"] = name
        fields["data"] = data
        fields["timestamp"] = timestamp
        fields["source"] = source
        fields["correlation_id"] = correlation_id
        fields["metadata"] = metadata
        fields["id"] = event_id
        return event

    @property
    def category(self) -> str:
        """The first segment of the name (`training` for `training.started`)."""
        return self.name.partition(".")[0]
