"""EventQuery: a chainable description of which events to find in history or the log."""

from __future__ import annotations

import gc
import heapq
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from operator import attrgetter
from typing import Any

from ._codec import decode_lines
from ._event import Event
from ._patterns import compile_pattern, validate_pattern


def contains(actual: Any, expected: Any) -> bool:
    """Nested subset match: every key of `expected` is in `actual` with a containing value."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual  # True is not 1 here
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return False
        for key, value in expected.items():
            if key not in actual or not contains(actual[key], value):
                return False
        return True
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(contains(a, e) for a, e in zip(actual, expected))
    return bool(actual == expected)


def _aware(moment: datetime | None) -> datetime | None:
    # Naive datetimes mean local time, as `datetime.now()` gives.
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _needles(expected: Any) -> list[bytes]:
    """Byte strings that any compact or spaced JSON line holding `expected` must contain."""
    found: list[bytes] = []
    if isinstance(expected, dict):
        for key, value in expected.items():
            if _plain(key):
                found.append(b'"%s"' % key.encode())
            found.extend(_needles(value))
    elif isinstance(expected, bool) or expected is None:
        found.append(json.dumps(expected).encode())
    elif _plain(expected):
        found.append(b'"%s"' % expected.encode())
    # Numbers may be written as 5, 5.0 or 5e0: see _number_patterns.
    return found


def _number_patterns(expected: Any) -> list[re.Pattern[bytes]]:
    """For each `"key": <int>` leaf, a regex that any JSON spelling of that pair matches."""
    found: list[re.Pattern[bytes]] = []
    if isinstance(expected, dict):
        for key, value in expected.items():
            if isinstance(value, int) and not isinstance(value, bool) and _plain(key):
                found.append(re.compile(
                    rb'"%s"\s*:\s*%s(?:\.0*)?(?:[eE]\+?0+)?(?![\d.eE])' % (re.escape(key.encode()), str(value).encode())
                ))
            else:
                found.extend(_number_patterns(value))
    return found


def _plain(text: Any) -> bool:
    """True for strings every JSON writer spells the same way (ASCII, nothing to escape)."""
    return isinstance(text, str) and text.isascii() and text.isprintable() and not any(c in text for c in '"\\/')


class EventQuery:
    """Find events by name glob, time range, data subset, source and correlation id."""

    def __init__(self) -> None:
        self._patterns: list[str] = []
        self._start: datetime | None = None
        self._end: datetime | None = None
        self._data: dict[str, Any] = {}
        self._sources: set[str] | None = None
        self._correlation_id: str | None = None
        self._limit: int | None = None

    def event_name_pattern(self, pattern: str) -> EventQuery:
        self._patterns.append(validate_pattern(pattern))
        return self

    def time_range(self, start: datetime | None = None, end: datetime | None = None) -> EventQuery:
        self._start, self._end = _aware(start), _aware(end)
        return self

    def data_contains(self, subset: dict[str, Any]) -> EventQuery:
        if not isinstance(subset, dict):
            raise ValueError("data_contains expects a dict")
        self._data.update(subset)
        return self

    def source(self, *sources: str) -> EventQuery:
        self._sources = set(sources)
        return self

    def correlation_id(self, correlation_id: str) -> EventQuery:
        self._correlation_id = correlation_id
        return self

    def limit(self, n: int) -> EventQuery:
        if n < 0:
            raise ValueError("limit must be >= 0")
        self._limit = n
        return self

    def matches(self, event: Event) -> bool:
        if self._patterns and not any(compile_pattern(p)(event.name) for p in self._patterns):
            return False
        if self._start is not None and event.timestamp < self._start:
            return False
        if self._end is not None and event.timestamp > self._end:
            return False
        if self._sources is not None and event.source not in self._sources:
            return False
        if self._correlation_id is not None and event.correlation_id != self._correlation_id:
            return False
        return not self._data or contains(event.data, self._data)

    def _line_filters(self) -> list[Callable[[bytes], Any]]:
        """Byte-level tests every line of a match passes (C-level regex searches, run by `filter`)."""
        needles = _needles(self._data)
        if _plain(self._correlation_id):
            needles.append(b'"%s"' % self._correlation_id.encode())  # type: ignore[union-attr]
        if self._sources is not None and len(self._sources) == 1 and _plain(source := next(iter(self._sources))):
            needles.append(b'"%s"' % source.encode())
        tests = [re.compile(re.escape(needle)).search for needle in needles]
        tests.extend(number.search for number in _number_patterns(self._data))
        names = _name_regex(self._patterns)
        if names is not None:
            tests.append(names.match)
        return tests

    def _predicate(self) -> Callable[[Event], bool]:
        """`matches`, with only the checks this query has (run once per candidate event)."""
        checks: list[Callable[[Event], bool]] = []
        if self._patterns:
            names = [compile_pattern(p) for p in self._patterns]
            if len(names) == 1:
                only = names[0]
                checks.append(lambda e: only(e.name))
            else:
                checks.append(lambda e: any(check(e.name) for check in names))
        if self._start is not None or self._end is not None or self._sources is not None \
                or self._correlation_id is not None or self._data:
            checks.append(self.matches)
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        return lambda e: all(check(e) for check in checks)

    def run(
        self,
        lines: Iterable[bytes],
        on_malformed: Callable[[str], None] | None = None,
        *,
        time_order: bool = True,
    ) -> list[Event]:
        """Evaluate against raw JSONL lines; results in time order (else file order), at most `limit`.

        With time order, `limit(n)` gives the n earliest matches; in file order, the first n read.
        """
        return self.run_chunks(_batches(lines), on_malformed, time_order=time_order)

    def run_chunks(
        self,
        chunks: Iterable[list[bytes]],
        on_malformed: Callable[[str], None] | None = None,
        *,
        time_order: bool = True,
    ) -> list[Event]:
        """`run` over lists of lines (as `EventLogReader.chunks()` gives them): each list is narrowed by
        byte-level tests, the rest decoded in bulk, and Events are built only for those."""
        with _collector_paused():
            return self._run_chunks(chunks, on_malformed, time_order)

    def _run_chunks(self, chunks: Iterable[list[bytes]], on_malformed: Callable[[str], None] | None,
                    time_order: bool) -> list[Event]:
        tests = self._line_filters()
        predicate = self._predicate()
        found: list[Event] = []
        for lines in chunks:
            for test in tests:
                lines = list(filter(test, lines))
            events, problems = decode_lines(lines)
            if on_malformed is not None:
                for _, reason in problems:
                    on_malformed(reason)
            if predicate is not _always:
                events = list(filter(predicate, events))
            found.extend(events)
            if not time_order and self._limit is not None and len(found) >= self._limit:
                del found[self._limit:]
                break
        if time_order:
            # limit(n) means the n earliest matches, so every line is read before choosing.
            if self._limit is not None:
                return heapq.nsmallest(self._limit, found, key=_timestamp)
            found.sort(key=_timestamp)
        return found

    def run_events(self, events: Iterable[Event]) -> list[Event]:
        found = [e for e in events if self.matches(e)]
        found.sort(key=lambda e: e.timestamp)
        return found if self._limit is None else found[: self._limit]


_timestamp = attrgetter("timestamp")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic GC while a read builds many objects that all live on: it would rescan
    them again and again (half the time of a 1M-event query); the events hold no cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _always(event: Event) -> bool:
    return True


def _batches(lines: Iterable[bytes], size: int = 4096) -> Iterator[list[bytes]]:
    iterator = iter(lines)
    while batch := list(islice(iterator, size)):
        yield batch


def _name_regex(patterns: list[str]) -> re.Pattern[bytes] | None:
    """A match that a line JsonlStore wrote passes only if its name may match one of `patterns`.

    Other lines (not starting with `{"id":`) and names holding an escape always pass; the exact
    check runs on the decoded event.
    """
    if not patterns or "*" in patterns:
        return None
    alternatives = []
    for pattern in patterns:
        if "[" in pattern or not pattern.isascii() or any(c in pattern for c in '"\\'):
            return None
        alternatives.append("".join('[^"\\\\]*' if c == "*" else '[^"\\\\]' if c == "?" else re.escape(c)
                                    for c in pattern))
    names = "|".join(alternatives)
    layout = '\\{"id":"[^"\\\\]*","name":"'  # how JsonlStore starts a line
    return re.compile(f'{layout}(?:(?:{names})"|[^"]*\\\\)|(?!{layout})'.encode())
