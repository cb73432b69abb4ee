"""The event log behind the log pane: a bounded in-memory window of events plus a filtered index.

Every event gets a sequence number (0, 1, 2, … in arrival order). The window keeps the newest
`capacity` events in a ring; older ones are counted (`evicted`) and stay in the events file on disk.
With a filter set, an index of matching sequence numbers is kept up to date as events arrive, so the
view is always "row i of the visible rows" in O(1). A new filter may judge the window a slice at a time
(`set_filter(budget_s=)`, then `filter_more` per frame): the monitor's loop never waits on a whole window.
"""

from __future__ import annotations

import os
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from kbert_tui.events import Event
from kbert_tui.events._query import collector_paused
from kbert_tui.events.store import EventLogReader, read_events

from .filter import EventMatcher, event_text, event_texts
from .summary import event_kind
from .threads import RunThreads

__all__ = ["DEFAULT_CAPACITY", "EventLog", "search_decoding", "search_older"]

DEFAULT_CAPACITY = 100_000
_FILTER_CHUNK = 2048  # window events a filter judges between looks at the clock
_DECODE_CHUNK = 4000  # events `o` decodes at a time (the GIL is handed over between)


class EventLog:
    """Arrived events (newest `capacity` of them) and the rows the current filter shows."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ring: list[Event | None] = [None] * capacity
        self._text: list[str | None] = [None] * capacity
        self.total = 0  # events ever appended (the next sequence number)
        self.matcher: EventMatcher | None = None
        self._matches = array("q")  # sequence numbers of matching events, ascending
        self._mstart = 0  # _matches[:_mstart] have been evicted
        self._problems = array("q")  # sequence numbers of error/warning events, ascending
        self._pstart = 0
        self._warm = 0  # texts below this sequence number are built (see warm_text)
        self._judged = 0  # with a filter: the window's events below this sequence number are judged
        self.threads = RunThreads(capacity)
        self._desc_cache: tuple[tuple[int, int], set[int]] | None = None

    # -- window ------------------------------------------------------------------------------------
    @property
    def base(self) -> int:
        """The sequence number of the oldest event still in memory."""
        return max(0, self.total - self.capacity)

    @property
    def evicted(self) -> int:
        """How many events fell out of the window (they remain in the events file)."""
        return self.base

    @property
    def in_memory(self) -> int:
        return self.total - self.base

    def get(self, seq: int) -> Event:
        """The event with sequence number `seq` (must be in the window)."""
        if not self.base <= seq < self.total:
            raise IndexError(f"event #{seq} is not in memory (window {self.base}..{self.total - 1})")
        event = self._ring[seq % self.capacity]
        assert event is not None
        return event

    def text(self, seq: int) -> str:
        """The cached free-text haystack of event `seq`."""
        slot = seq % self.capacity
        cached = self._text[slot]
        if cached is None:
            cached = event_text(self.get(seq))
            self._text[slot] = cached
        return cached

    def append(self, event: Event) -> int:
        """Add one event; return its sequence number."""
        seq = self.total
        slot = seq % self.capacity
        old = self._ring[slot]
        if old is not None:
            self.threads.evict(seq - self.capacity, old)
        self._ring[slot] = event
        self._text[slot] = None
        self.total = seq + 1
        if event_kind(event) in ("error", "warning"):
            self._problems.append(seq)
        self.threads.add(seq, event)
        matcher = self.matcher
        if matcher is not None and self._judged >= seq:  # else `filter_more` comes to it in order
            self._judged = seq + 1
            if self._matches_seq(matcher, seq, event, lambda: self.text(seq)):
                self._matches.append(seq)
        if seq >= self.capacity:
            self._trim()
        return seq

    def skip(self, count: int) -> None:
        """Count `count` events that arrived but are not kept (already outside the window): only an
        empty log may skip, before anything is appended."""
        if self.total:
            raise ValueError("skip() only before the first append")
        self.total = max(0, count)

    def extend(self, events: Iterable[Event]) -> None:
        for event in events:
            self.append(event)

    def _trim(self) -> None:
        base = self.base
        self._mstart = _advance(self._matches, self._mstart, base)
        self._pstart = _advance(self._problems, self._pstart, base)
        if self._mstart > 4096 and self._mstart * 2 > len(self._matches):
            del self._matches[: self._mstart]
            self._mstart = 0
        if self._pstart > 4096 and self._pstart * 2 > len(self._problems):
            del self._problems[: self._pstart]
            self._pstart = 0

    def warm_text(self, limit: int) -> int:
        """Build up to `limit` missing free-text haystacks, oldest first (call when idle, so a
        free-text filter later scans cached strings); returns how many were built."""
        start = max(self._warm, self.base)
        end = min(self.total, start + limit)
        texts, ring, cap = self._text, self._ring, self.capacity
        for low, high in _slot_runs(start, end, cap):
            if texts[low:high].count(None) == high - low:  # none built yet: whole slices at C speed
                texts[low:high] = event_texts(ring[low:high])  # type: ignore[arg-type]
                continue
            missing = [slot for slot in range(low, high) if texts[slot] is None]
            texts_of_missing = event_texts([ring[slot] for slot in missing])  # type: ignore[misc]
            for slot, text in zip(missing, texts_of_missing, strict=True):
                texts[slot] = text
        self._warm = end
        return end - start

    # -- filter ------------------------------------------------------------------------------------
    def set_filter(self, matcher: EventMatcher | None, *, budget_s: float | None = None) -> None:
        """Show only events `matcher` accepts (None or an empty matcher shows all); re-scans the window,
        all of it now, or for about `budget_s` seconds and the rest in later `filter_more` calls (oldest
        first: the rows found so far show meanwhile)."""
        self.matcher = matcher if matcher else None
        self._matches = array("q")
        self._mstart = 0
        self._judged = self.base
        if self.matcher is not None:
            self.filter_more(budget_s)

    @property
    def filter_pending(self) -> bool:
        """Whether some of the window's events still wait to be judged by the filter (see `filter_more`)."""
        return self.matcher is not None and self._judged < self.total

    def filter_more(self, budget_s: float | None = None) -> bool:
        """Judge the window's events the filter has not yet, oldest first, `_FILTER_CHUNK` at a time, for
        about `budget_s` seconds (None: all of them); returns whether all are judged."""
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        while self.filter_pending:
            start = max(self._judged, self.base)
            end = min(self.total, start + _FILTER_CHUNK)
            self._judge(start, end)
            self._judged = end
            if deadline is not None and time.perf_counter() >= deadline:
                break
        return not self.filter_pending

    def _judge(self, start: int, end: int) -> None:
        """Add the sequence numbers start..end-1 the filter accepts to the matches."""
        matcher = self.matcher
        assert matcher is not None
        ring, cap = self._ring, self.capacity
        out = self._matches
        seqs: Iterable[int] = range(start, end)
        if matcher.scopes:
            seqs = [seq for seq in seqs if self._in_scope(matcher, seq)]
        if not matcher.has_predicates:
            out.extend(seqs)
            return
        if matcher.uses_text:
            if self._warm < end:
                self.warm_text(end - max(self._warm, self.base))
            texts = self._text
            needles = matcher.text_needles
            if needles is not None:  # only free text: search the cached texts without calling the matcher
                if len(needles) == 1:
                    needle = needles[0]
                    out.extend([seq for seq in seqs if needle in texts[seq % cap]])  # type: ignore[operator]
                else:
                    out.extend([seq for seq in seqs if all(n in texts[seq % cap] for n in needles)])  # type: ignore[operator]
                return
            for seq in seqs:
                slot = seq % cap
                if matcher.matches(ring[slot], texts[slot].__str__):  # type: ignore[arg-type]
                    out.append(seq)
        else:
            matches = matcher.matches
            for seq in seqs:
                if matches(ring[seq % cap], _no_text):  # type: ignore[arg-type]
                    out.append(seq)

    def _in_scope(self, matcher: EventMatcher, seq: int) -> bool:
        threads = self.threads
        for kind, value, negated in matcher.scopes:
            if kind == "epoch":
                hit = threads.epoch(seq) == value
            elif kind == "step":
                hit = threads.step(seq) == value
            else:  # caused-by: everything the event with that id (or span) led to
                root = threads.seq_of(str(value))
                hit = root is not None and (seq == root or seq in self._descendants(root))
            if hit == negated:
                return False
        return True

    def _descendants(self, root: int) -> set[int]:
        cached = self._desc_cache
        if cached is None or cached[0] != (root, self.total):
            cached = self._desc_cache = ((root, self.total), self.threads.descendants(root))
        return cached[1]

    def _matches_seq(self, matcher: EventMatcher, seq: int, event: Event, text: Callable[[], str]) -> bool:
        if matcher.scopes and not self._in_scope(matcher, seq):
            return False
        return matcher.matches(event, text)

    @property
    def filtered(self) -> bool:
        return self.matcher is not None

    # -- visible rows ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """How many rows are visible (the filtered count, or every event in memory)."""
        if self.matcher is None:
            return self.in_memory
        return len(self._matches) - self._mstart

    def rows_before(self, seq_limit: int) -> int:
        """How many visible rows have a sequence number below `seq_limit` (to freeze a paused view)."""
        if self.matcher is None:
            return max(0, min(seq_limit, self.total) - self.base)
        return bisect_left(self._matches, seq_limit, self._mstart) - self._mstart

    def seq_at(self, row: int) -> int:
        """The sequence number shown at visible row `row`."""
        if row < 0 or row >= len(self):
            raise IndexError(row)
        if self.matcher is None:
            return self.base + row
        return self._matches[self._mstart + row]

    def row_of(self, seq: int) -> int | None:
        """The visible row showing event `seq`, or None when it's filtered out or evicted."""
        if seq < self.base or seq >= self.total:
            return None
        if self.matcher is None:
            return seq - self.base
        i = bisect_left(self._matches, seq, self._mstart)
        if i < len(self._matches) and self._matches[i] == seq:
            return i - self._mstart
        return None

    def nearest_row(self, seq: int) -> int:
        """The visible row of `seq`, or of the first visible event after it (clamped to the last row)."""
        if self.matcher is None:
            return min(max(seq - self.base, 0), max(0, self.in_memory - 1))
        i = bisect_left(self._matches, seq, self._mstart) - self._mstart
        return min(max(i, 0), max(0, len(self) - 1))

    def event_at(self, row: int) -> Event:
        return self.get(self.seq_at(row))

    def problem_after(self, seq: int, *, forward: bool = True, limit: int | None = None) -> int | None:
        """The next (or previous) error/warning after `seq` that the filter shows, or None."""
        probs, start = self._problems, self._pstart
        end = len(probs) if limit is None else bisect_left(probs, limit, start)
        if forward:
            i = bisect_left(probs, seq + 1, start, end)
            rng: Iterable[int] = range(i, end)
        else:
            i = bisect_left(probs, seq, start, end)
            rng = range(i - 1, start - 1, -1)
        for j in rng:
            candidate = probs[j]
            if candidate >= self.base and (self.matcher is None or self.row_of(candidate) is not None):
                return candidate
        return None

    def scope(self, seq: int, level: str) -> list[int]:
        """The window's events around `seq` at `level`, ascending: `thread` (what caused it and what it
        caused), `step` (its training step), `epoch`, `run` (its correlation id)."""
        threads = self.threads
        if level == "thread":
            return threads.thread(seq, self.base)
        if level == "run":
            cid = self.get(seq).correlation_id
            return list(self.correlated(cid)) if cid else [seq]
        epoch = threads.epoch(seq)
        if epoch is None:
            return [seq]
        if level == "epoch":
            return [s for s in range(self.base, self.total) if threads.epoch(s) == epoch]
        step = threads.step(seq)
        if step is None:
            return [seq]
        return [s for s in range(self.base, self.total) if threads.step(s) == step and threads.epoch(s) == epoch]

    def correlated(self, correlation_id: str) -> Iterator[int]:
        """Sequence numbers in memory of events with `correlation_id`, oldest first."""
        ring, cap = self._ring, self.capacity
        for seq in range(self.base, self.total):
            event = ring[seq % cap]
            if event is not None and event.correlation_id == correlation_id:
                yield seq


def search_older(path: str | os.PathLike[str], count: int, matcher: EventMatcher | None, capacity: int, *,
                 cancelled: Callable[[], bool] | None = None) -> tuple[EventLog, int, int] | None:
    """The monitor's `o` search: of the first `count` events in the log at `path` (those that left the
    window), the ones `matcher` accepts on their own, the newest `capacity` of them in an EventLog; with
    how many matched and how many lines could not be read. None when cancelled.

    Through the log's index (the live writer keeps one; another's log gets it built) where there is one:
    a name-only filter reads the name column, free text looks for its needle in the raw lines and decodes
    only those that hold it (`disk_log.scan_rows`). Else every event is decoded ~1 MB at a time. Either
    way the GIL is handed over between chunks, so the screen keeps turning while it runs.
    """
    with collector_paused():  # the events found live on; the rest are freed as they go
        indexed = _search_indexed(path, count, matcher, capacity, cancelled)
    if indexed is not False:
        return indexed
    return search_decoding(path, count, matcher, capacity, cancelled=cancelled)


def search_decoding(path: str | os.PathLike[str], count: int, matcher: EventMatcher | None, capacity: int, *,
                    cancelled: Callable[[], bool] | None = None) -> tuple[EventLog, int, int] | None:
    """`search_older` by decoding every event (the reference the indexed search is tested against)."""
    with collector_paused():  # the events found live on; the rest are freed as they go
        return _search(read_events(path), count, matcher, capacity, cancelled)


def _search_indexed(path: str | os.PathLike[str], count: int, matcher: EventMatcher | None, capacity: int,
                    cancelled: Callable[[], bool] | None) -> tuple[EventLog, int, int] | None | Literal[False]:
    """`search_older` through the index; False when the log has none."""
    import numpy as np

    from kbert_tui.events.index import open_index

    from .disk_log import decode_rows, name_only, name_table_mask, readable_rows, scan_rows

    try:
        index = open_index(path)
    except (OSError, ValueError):
        return False
    rows = readable_rows(index)
    readable = len(index) if rows is None else len(rows)
    count = min(count, readable)  # the index covers the whole file as it was opened, as the plain reader reads it
    stop_row = len(index) if rows is None or count >= len(rows) else int(rows[count])
    if matcher is None:
        found = np.arange(count, dtype=np.int64)
    elif name_only(matcher):
        matches = matcher.matches
        mask = name_table_mask(index, lambda name: matches(Event(name, {}), str))
        found = np.flatnonzero((mask if rows is None else mask[rows])[:count])
    else:
        last = [report for report in scan_rows(index, rows, count, matcher, cancelled=cancelled) if report[1]]
        if not last:
            return None  # cancelled
        found = last[0][0]
    if cancelled is not None and cancelled():
        return None
    newest = found[-capacity:]
    out = EventLog(capacity)
    out.skip(len(found) - len(newest))
    for first in range(0, len(newest), _DECODE_CHUNK):
        chunk = newest[first:first + _DECODE_CHUNK]
        out.extend(decode_rows(index, chunk if rows is None else rows[chunk]))
        time.sleep(0)  # let the screen's thread run between chunks
    unreadable = 0 if rows is None else stop_row - count
    return out, len(found), unreadable


def _search(reader: EventLogReader, count: int, matcher: EventMatcher | None, capacity: int,
            cancelled: Callable[[], bool] | None) -> tuple[EventLog, int, int] | None:
    found = EventLog(capacity)
    matched = seen = 0
    for events in reader.event_chunks():
        if seen + len(events) > count:
            del events[max(0, count - seen):]
        seen += len(events)
        if matcher is not None:
            matches = matcher.matches_alone
            events = [event for event in events if matches(event)]
        matched += len(events)
        found.extend(events)
        if cancelled is not None and cancelled():
            return None
        if seen >= count:
            break
        time.sleep(0)
    return found, matched, reader.malformed


def _slot_runs(start: int, end: int, capacity: int) -> list[tuple[int, int]]:
    """The ring slots of sequence numbers start..end-1 as at most two contiguous [low, high) runs."""
    if end <= start:
        return []
    low, high = start % capacity, (end - 1) % capacity + 1
    return [(low, high)] if low < high else [(low, capacity), (0, high)]


def _no_text() -> str:
    return ""


def _advance(seqs: array[int], start: int, base: int) -> int:
    if start < len(seqs) and seqs[start] < base:
        return bisect_left(seqs, base, start)
    return start
