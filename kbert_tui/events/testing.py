"""Test helpers: a bus that records what was emitted, and the `event_bus` / `recording_bus` fixtures.

Installed as a pytest plugin (entry point ``pytest11``), so any suite gets the fixtures once
kbert-tui is installed::

    def test_my_plugin_announces_itself(recording_bus):
        ...
        recording_bus.assert_emitted("plugin.activated", count=1, plugin_name="mine")
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._event import Event
from ._patterns import compile_pattern
from ._query import contains
from .bus import EventBus

__all__ = ["RecordingBus", "event_bus", "recording_bus"]


class RecordingBus(EventBus):
    """An EventBus that also keeps every accepted event, in order, for assertions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: list[Event] = []
        self.add_tap(self.events.append)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def emitted(self, pattern: str = "*", **data: Any) -> list[Event]:
        """Recorded events whose name matches `pattern` and whose data contains `data`."""
        match = compile_pattern(pattern)
        return [e for e in self.events if match(e.name) and (not data or contains(e.data, data))]

    def assert_emitted(self, pattern: str, count: int | None = None, **data: Any) -> list[Event]:
        """Fail unless events matching `pattern` (and data) were emitted — exactly `count` if given."""
        found = self.emitted(pattern, **data)
        wanted = f"{count} event(s)" if count is not None else "at least one event"
        if (count is None and not found) or (count is not None and len(found) != count):
            where = f" with data ⊇ {data}" if data else ""
            seen = ", ".join(self.names[-20:]) or "nothing"
            raise AssertionError(
                f"expected {wanted} matching {pattern!r}{where}, found {len(found)}; last emitted: {seen}"
            )
        return found

    def assert_not_emitted(self, pattern: str, **data: Any) -> None:
        found = self.emitted(pattern, **data)
        if found:
            raise AssertionError(f"expected no event matching {pattern!r}, found {[e.name for e in found]}")

    def assert_order(self, *patterns: str) -> None:
        """Fail unless events matching `patterns` were emitted in this order (others may interleave)."""
        position = 0
        for pattern in patterns:
            match = compile_pattern(pattern)
            while position < len(self.events) and not match(self.events[position].name):
                position += 1
            if position == len(self.events):
                raise AssertionError(f"{pattern!r} not emitted after the earlier patterns; got {self.names}")
            position += 1

    def clear(self) -> None:
        self.events.clear()


@pytest.fixture
def event_bus() -> Iterator[EventBus]:
    """A fresh in-memory EventBus, closed after the test."""
    bus = EventBus()
    yield bus
    bus.close()


@pytest.fixture
def recording_bus() -> Iterator[RecordingBus]:
    """A fresh RecordingBus (every accepted event lands in `.events`), closed after the test."""
    bus = RecordingBus()
    yield bus
    bus.close()
