"""EventQuery: a chainable description of which events to find in history or the log."""

from __future__ import annotations

import gc
import heapq
import json
import re
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ._codec import decode_lines
from ._event import Event
from ._patterns import compile_pattern, validate_pattern

if TYPE_CHECKING:
    from .index import LogIndex


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
        return len(expected) == len(actual) and all(contains(a, e) for a, e in zip(actual, expected, strict=True))
    return bool(actual == expected)


def _aware(moment: datetime | None) -> datetime | None:
    # Naive datetimes mean local time, as `datetime.now()` gives.
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


# A line holding no backslash spells every string as its plain UTF-8 between quotes, so the byte-level
# tests below may look for those spellings; a line holding one may spell anything with escapes (\u0061,
# \/), so it always passes and is decoded. Whitespace and key order are free in either case.
_WS = rb"[ \t\r\n]*"
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f]')  # characters JSON only writes escaped
_UTF8_CHAR = rb'(?:[^"\x80-\xff]|[\xc0-\xff][\x80-\xbf]*)'  # one character, as `?` matches it
_STR_OF_NON_STRING = re.compile(r"[-\d\[{]|True$|False$|inf$|nan$")  # str() of a number, list, dict or bool


def _quoted(text: Any) -> bytes | None:
    """`text` as a JSON string spelled without escapes (its UTF-8 in quotes); None if it needs one."""
    if not isinstance(text, str) or _NEEDS_ESCAPE.search(text):
        return None
    try:
        return b'"%s"' % text.encode()
    except UnicodeEncodeError:  # a lone surrogate is only ever written escaped
        return None


def _needles(expected: Any) -> list[bytes]:
    """Byte strings that every escape-free JSON line holding `expected` must contain."""
    found: list[bytes] = []
    if isinstance(expected, dict):
        for key, value in expected.items():
            if (quoted := _quoted(key)) is not None:
                found.append(quoted)
            found.extend(_needles(value))
    elif isinstance(expected, (list, tuple)):
        for item in expected:
            found.extend(_needles(item))
    elif isinstance(expected, bool) or expected is None:
        found.append(json.dumps(expected).encode())
    elif (quoted := _quoted(expected)) is not None:
        found.append(quoted)
    # Numbers may be written as 5, 5.0 or 50e-1: see _number_patterns.
    return found


def _number_patterns(expected: Any) -> list[re.Pattern[bytes]]:
    """For each `"key": <int>` leaf, a regex that every JSON spelling of that pair matches: the integer
    itself (either sign of 0), or any number with a fraction or an exponent (5.0, 50e-1, -0.0, ...)."""
    found: list[re.Pattern[bytes]] = []
    if isinstance(expected, dict):
        for key, value in expected.items():
            quoted = _quoted(key)
            if isinstance(value, int) and not isinstance(value, bool) and quoted is not None:
                digits = b"-?0" if value == 0 else str(value).encode()
                found.append(re.compile(
                    rb"%s%s:%s(?:%s(?![\d.eE])|-?\d+[.eE])" % (re.escape(quoted), _WS, _WS, digits)))
            else:
                found.extend(_number_patterns(value))
    return found


class EventQuery:
    """Find events by name glob, time range, data subset, source and correlation id."""

    def __init__(self) -> None:
        self._patterns: list[str] = []
        self._start: datetime | None = None
        self._end: datetime | None = None
        self._data: dict[str, Any] = {}
        self._sources: set[str] | None = None
        self._correlation_id: str | None = None
        self._steps: tuple[int | None, int | None] | None = None
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

    def step_range(self, start: int | None = None, end: int | None = None) -> EventQuery:
        """Events whose `data.step` is an integer in [start, end] (either end open when None)."""
        for bound in (start, end):
            if bound is not None and (type(bound) is not int):
                raise ValueError("step_range expects integers or None")
        self._steps = (start, end)
        return self

    def narrows_by_index(self) -> bool:
        """Whether the log's index can narrow this query (name, time, step or correlation id)."""
        return bool(self._patterns and "*" not in self._patterns) or self._start is not None \
            or self._end is not None or self._steps is not None or self._correlation_id is not None

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
        if self._steps is not None and not _step_in(event.data.get("step"), self._steps):
            return False
        return not self._data or contains(event.data, self._data)

    def _line_filters(self) -> list[Callable[[bytes], Any]]:
        """Byte-level tests every escape-free line of a match passes (C-level regex searches, run by
        `_narrow`); the exact checks run on the decoded events."""
        needles = _needles(self._data)
        corr = self._correlation_id
        # A non-string correlation id (5) reads back as its str() ("5"): such ids get no needle.
        if corr is not None and not _STR_OF_NON_STRING.match(corr) and (quoted := _quoted(corr)) is not None:
            needles.append(quoted)
        if self._sources is not None and len(self._sources) == 1:
            source = next(iter(self._sources))
            # A missing or non-string source reads back as "unknown".
            if source != "unknown" and (quoted := _quoted(source)) is not None:
                needles.append(quoted)
        tests: list[Callable[[bytes], Any]] = [re.compile(re.escape(needle)).search for needle in needles]
        tests.extend(number.search for number in _number_patterns(self._data))
        names = _name_regex(self._patterns)
        if names is not None:
            tests.append(names.search)
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
                or self._correlation_id is not None or self._data or self._steps is not None:
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
        with collector_paused():
            return self._run_chunks(chunks, on_malformed, time_order)

    def _run_chunks(self, chunks: Iterable[list[bytes]], on_malformed: Callable[[str], None] | None,
                    time_order: bool) -> list[Event]:
        tests = self._line_filters()
        predicate = self._predicate()
        ordered = _TimeOrder() if time_order else None
        found: list[Event] = []
        for lines in chunks:
            events, problems = decode_lines(_narrow(lines, tests))
            if on_malformed is not None:
                for _, reason in problems:
                    on_malformed(reason)
            if predicate is not _always:
                events = list(filter(predicate, events))
            if ordered is not None:
                ordered.add(events)
            else:
                found.extend(events)
                if self._limit is not None and len(found) >= self._limit:
                    del found[self._limit:]
                    break
            time.sleep(0)  # hand the GIL over between chunks: the caller's event loop keeps turning
        if ordered is None:
            return found
        # limit(n) means the n earliest matches, so every line is read before choosing.
        found = ordered.merged()
        while self._limit is not None and len(found) > self._limit:
            del found[max(self._limit, len(found) - 4096):]  # freed a slice at a time, for the same reason
        return found

    def run_index(self, index: LogIndex, *, time_order: bool = True) -> list[Event]:
        """`run` over a log through its index: the columns choose the candidate lines (name, time, step,
        correlation id), only those are read and decoded, then checked exactly. In time order, reading
        stops once `limit` matches are found."""
        import numpy as np

        rows = index.select(patterns=self._patterns, start=self._start, end=self._end, steps=self._steps,
                            correlation_id=self._correlation_id)
        if time_order and len(rows):
            rows = rows[np.argsort(index.column("time")[rows], kind="stable")]
        predicate = self._predicate()
        found: list[Event] = []
        with collector_paused():
            for first in range(0, len(rows), _INDEX_BATCH):
                events, _ = decode_lines(index.lines(rows[first:first + _INDEX_BATCH]))
                found.extend(events if predicate is _always else filter(predicate, events))
                if self._limit is not None and len(found) >= self._limit:
                    del found[self._limit:]
                    break
                time.sleep(0)  # hand the GIL over between batches: the caller's event loop keeps turning
        return found

    def run_events(self, events: Iterable[Event]) -> list[Event]:
        found = [e for e in events if self.matches(e)]
        found.sort(key=lambda e: e.timestamp)
        return found if self._limit is None else found[: self._limit]


_timestamp = attrgetter("timestamp")


_MERGE_AT_ONCE = 1 << 15  # events one C-level sort may reorder while it holds the GIL (a few ms)


class _TimeOrder:
    """Events in time order (equal times in arrival order), built chunk by chunk so that no step holds
    the GIL for long (one sort of 1M events did for ~90 ms): a log is nearly in time order, so a chunk
    mostly extends the current run, or reorders a short tail of it; anything else starts a new run."""

    def __init__(self) -> None:
        self.runs: list[list[Event]] = [[]]

    def add(self, events: list[Event]) -> None:
        if not events:
            return
        events.sort(key=_timestamp)
        run = self.runs[-1]
        first = events[0].timestamp
        if not run or run[-1].timestamp <= first:
            run.extend(events)
            return
        start = bisect_right(run, first, key=_timestamp)
        if len(run) - start + len(events) > _MERGE_AT_ONCE:
            self.runs.append(events)
            return
        tail = run[start:]
        del run[start:]
        tail.extend(events)
        tail.sort(key=_timestamp)  # stable: among equal times the earlier line stays first
        run.extend(tail)

    def merged(self) -> list[Event]:
        if len(self.runs) == 1:
            return self.runs[0]
        return list(heapq.merge(*self.runs, key=_timestamp))  # Python-level steps: other threads get turns


def _narrow(lines: list[bytes], tests: list[Callable[[bytes], Any]]) -> list[bytes]:
    """The lines that pass every test, and every line holding a backslash (it may spell anything)."""
    if not tests:
        return lines
    if b"\\" in b"".join(lines):  # one C-level scan of the chunk: escapes are rare
        return [line for line in lines if b"\\" in line or all(test(line) for test in tests)]
    for test in tests:
        lines = list(filter(test, lines))
    return lines


_FREEZE_AT = 100_000  # young objects past which re-enabling the collector would scan them in one go
_pause_lock = threading.Lock()
_pauses = 0
_resume_collector = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic GC while a read builds many objects that all live on: it would rescan them
    again and again (half the time of a 1M-event query).

    Re-enabled as it was, the collector would then scan every object made meanwhile in one go, holding
    the GIL (~340 ms after a 1M-event query: the caller's loop stalls), and rescan them in each later
    full collection. So past `_FREEZE_AT` young objects they are frozen first (`gc.freeze`): events
    hold no cycles and are still freed by reference counting. Nested reads pause it once.
    """
    global _pauses, _resume_collector
    with _pause_lock:
        if not _pauses:
            _resume_collector = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if not _pauses and _resume_collector:
                if gc.get_count()[0] > _FREEZE_AT:
                    gc.freeze()
                gc.enable()


def _step_in(step: Any, bounds: tuple[int | None, int | None]) -> bool:
    if type(step) is not int:
        return False
    low, high = bounds
    return (low is None or step >= low) and (high is None or step <= high)


_INDEX_BATCH = 4096  # candidate lines read and decoded at a time


def _always(event: Event) -> bool:
    return True


def _batches(lines: Iterable[bytes], size: int = 4096) -> Iterator[list[bytes]]:
    iterator = iter(lines)
    while batch := list(islice(iterator, size)):
        yield batch


def _name_regex(patterns: list[str]) -> re.Pattern[bytes] | None:
    """A search that an escape-free line passes if its name may match one of `patterns` (in any layout
    and key order); None when the patterns can't be told from bytes (`*` alone, `[...]`)."""
    if not patterns or "*" in patterns:
        return None
    alternatives = []
    for pattern in patterns:
        if "[" in pattern or _quoted(pattern) is None:
            return None
        alternatives.append(b"".join(b'[^"]*' if c == "*" else _UTF8_CHAR if c == "?" else re.escape(c.encode())
                                     for c in pattern))
    return re.compile(b'"name"%s:%s"(?:%s)"' % (_WS, _WS, b"|".join(alternatives)))
