"""A recording's whole event log, navigable in bounded memory: the newest events in memory, the rest on disk.

`DiskEventLog` is an `EventLog` whose window holds the newest `capacity` events of a finished log and
whose older events are read back from the file through its index (kbert_tui.events.index) when they
are shown: a few hundred decoded at a time, a small LRU of them kept. Its sequence numbers are the
log's readable lines in file order, so `total` is every event of the log and scrolling reaches the top.

A filter over the older events is answered from the index's name column when it only names events
(`training.*`, `name:x OR y`, `!system.*`): a table lookup per name, then one numpy pass over every row.
Any other filter (free text, field comparisons, epoch:/step:) reads the lines on a worker
(`scan_older`), in chunks, handing back what it found so far; the log shows those as they arrive.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.events._codec import decode_lines
from kbert_tui.events._query import collector_paused
from kbert_tui.events.index import LogIndex

from .filter import _EVENT_NAME, _GLOB_CHARS, _OPERATORS, EventMatcher, _tokenize, event_text
from .log_index import EventLog
from .summary import event_kind

__all__ = ["DiskEventLog", "decode_rows", "name_only", "name_table_mask", "read_lines", "readable_rows",
           "scan_rows", "text_prefilter"]

_CHUNK = 256  # older events decoded together when one of them is shown
_CACHED_CHUNKS = 64  # chunks kept decoded (~16k events)
_SCAN_CHUNK = 4000  # lines decoded per step of a filter's scan (the GIL is handed over between steps)
_SCAN_BYTES = 4 << 20  # bytes of the log searched at a time for a free-text needle
_PLAIN_NEEDLE = re.compile(r"^[a-z_.\-]+$")
_NEIGHBOURHOOD = 2000  # events either side of an older one that `c` shows its thread among
_CONNECTIVES = ("AND", "OR", "||", "|", "!", "(", ")")


def name_only(matcher: EventMatcher) -> bool:
    """Whether `matcher` judges nothing but the event name: every term names events (a name, a name glob,
    `name:GLOB`), joined by AND / OR / ! / parentheses. Then its answer for a name is its answer for any
    event of that name."""
    if matcher.scopes or matcher.uses_text or matcher.fields:
        return False
    for token in _tokenize(matcher.query):
        if token.paren or (not token.quoted and token.text in _CONNECTIVES):
            continue
        if token.quoted:
            return False
        text = token.text[1:] if token.text.startswith("!") and not token.text.startswith("!=") else token.text
        lowered = text.lower()
        if lowered.startswith("name:"):
            continue
        if lowered.startswith(("source:", "corr:", "epoch:", "step:", "caused-by:")):
            return False
        if any(op in text for op in _OPERATORS):
            return False
        if not (_GLOB_CHARS & set(text) or _EVENT_NAME.match(text)):
            return False
    return True


def name_table_mask(index: LogIndex, accept: Callable[[str], bool]) -> np.ndarray:
    """Every row of `index`: whether its event name passes `accept` (unreadable rows never do)."""
    parts = []
    for segment in index.segments:
        table = np.zeros(len(segment.names) + 1, bool)
        table[1:] = [accept(name) for name in segment.names]
        parts.append(table[segment.columns["name"]])
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def readable_rows(index: LogIndex) -> np.ndarray | None:
    """The global rows of the log's events (a line readers skip has none); None when every row is one."""
    if not index.unreadable():
        return None
    return np.flatnonzero(index.column("name") != 0)


def read_lines(index: LogIndex, rows: np.ndarray) -> list[bytes]:
    """The lines (stripped) at ascending global `rows` (`LogIndex.lines`: plain reads of the spans they lie in)."""
    return index.lines(np.asarray(rows, np.int64))


def decode_rows(index: LogIndex, rows: np.ndarray) -> list[Event]:
    """The events at ascending global `rows` (readable ones), one per row; a line that no longer decodes (the
    file changed under the index) stands in as a `log.unreadable_line` event rather than shifting the rest."""
    lines = read_lines(index, rows)
    events, problems = decode_lines(lines)
    if not problems:
        return events
    bad = {i: why for i, why in problems}
    out: list[Event] = []
    good = iter(events)
    for i, line in enumerate(lines):
        if i in bad:
            out.append(Event("log.unreadable_line", {"reason": bad[i], "line": line[:200].decode("utf-8", "replace")}))
        else:
            out.append(next(good))
    return out


class DiskEventLog(EventLog):
    """Every event of a finished log: the newest `capacity` in memory, older ones read through `index`."""

    def __init__(self, index: LogIndex, capacity: int, window: list[Event], rows: np.ndarray | None = None) -> None:
        super().__init__(capacity)
        self.index = index
        self._rows = rows  # sequence number → global row (None: the same)
        total = len(index) if rows is None else len(rows)
        if len(window) > min(capacity, total):
            raise ValueError("the window holds more events than the log's newest `capacity`")
        self.skip(total - len(window))
        self.extend(window)
        self._older = np.empty(0, np.int64)  # sequence numbers below `base` the filter shows, ascending
        self.older_complete = True  # False while a scan of the older events for the filter runs
        self._chunks: OrderedDict[int, list[Event]] = OrderedDict()
        self._problems_older: np.ndarray | None = None

    @property
    def evicted(self) -> int:
        """Nothing is out of reach: older events are read from the file when shown."""
        return 0

    def row_numbers(self, seqs: np.ndarray) -> np.ndarray:
        """Global index rows of sequence numbers."""
        return seqs if self._rows is None else self._rows[seqs]

    # -- older events, from disk ---------------------------------------------------------------------
    def get(self, seq: int) -> Event:
        if seq >= self.base:
            return super().get(seq)
        if seq < 0:
            raise IndexError(f"event #{seq}")
        chunk = seq // _CHUNK
        events = self._chunks.get(chunk)
        if events is None:
            first = chunk * _CHUNK
            events = decode_rows(self.index, self.row_numbers(np.arange(first, min(first + _CHUNK, self.base))))
            self._chunks[chunk] = events
            if len(self._chunks) > _CACHED_CHUNKS:
                self._chunks.popitem(last=False)
        else:
            self._chunks.move_to_end(chunk)
        return events[seq - chunk * _CHUNK]

    def text(self, seq: int) -> str:
        return super().text(seq) if seq >= self.base else event_text(self.get(seq))

    def neighbourhood(self, seq: int) -> tuple[EventLog, int]:
        """The events around `seq` (an older one) in a small in-memory log, and `seq`'s number there: `c`
        follows its thread, step and epoch among them."""
        first = max(0, seq - _NEIGHBOURHOOD)
        last = min(self.total, seq + _NEIGHBOURHOOD + 1)
        local = EventLog(last - first)
        local.extend(self.get(s) for s in range(first, last))
        return local, seq - first

    # -- the filter ----------------------------------------------------------------------------------
    def set_filter(self, matcher: EventMatcher | None, *, budget_s: float | None = None) -> None:
        """The window as `EventLog` filters it; older events by the name column when the filter only
        names events, else none until `add_older` brings what `scan_older` finds."""
        super().set_filter(matcher, budget_s=budget_s)
        self._older = np.empty(0, np.int64)
        self.older_complete = True
        if self.matcher is None or not self.base:
            return
        if name_only(self.matcher):
            matches = self.matcher.matches
            mask = name_table_mask(self.index, lambda name: matches(Event(name, {}), str))
            hits = mask if self._rows is None else mask[self._rows]
            self._older = np.flatnonzero(hits[:self.base])
        else:
            self.older_complete = False

    def add_older(self, matcher: EventMatcher, found: np.ndarray, complete: bool) -> bool:
        """What a scan for `matcher` found so far (ascending sequence numbers from the oldest); ignored
        (False) when the filter has changed since."""
        if matcher is not self.matcher:
            return False
        self._older = found
        self.older_complete = complete
        return True

    def scan_older(self, matcher: EventMatcher, *, cancelled: Callable[[], bool] | None = None,
                   every_s: float = 0.25) -> Iterator[tuple[np.ndarray, bool]]:
        """For a worker thread: the older events `matcher` accepts on their own (epoch:/step: by their data,
        caused-by: none), as `scan_rows` finds them."""
        yield from scan_rows(self.index, self._rows, self.base, matcher, cancelled=cancelled, every_s=every_s)

    # -- errors and warnings (e / E) ----------------------------------------------------------------------
    def problem_after(self, seq: int, *, forward: bool = True, limit: int | None = None) -> int | None:
        """`EventLog.problem_after` over every event: the window's, then (or first) the older ones on disk."""
        if forward:
            if seq + 1 < self.base:
                older = self._older_problems()
                for candidate in older[np.searchsorted(older, seq + 1):].tolist():
                    if limit is not None and candidate >= limit:
                        return None
                    if self.row_of(candidate) is not None:
                        return int(candidate)
            return super().problem_after(seq, forward=True, limit=limit)
        found = super().problem_after(seq, forward=False, limit=limit) if seq > self.base else None
        if found is not None:
            return found
        older = self._older_problems()
        below = min(seq, self.base, seq if limit is None else limit)
        for candidate in older[:np.searchsorted(older, below)][::-1].tolist():
            if self.row_of(candidate) is not None:
                return int(candidate)
        return None

    def _older_problems(self) -> np.ndarray:
        """Older sequence numbers of errors and warnings (by name; a failed validation by its data)."""
        if self._problems_older is None:
            def by_name(name: str) -> bool:
                return name != ev.DATA_VALIDATION_COMPLETED and event_kind(Event(name, {})) in ("error", "warning")

            def older(mask: np.ndarray) -> np.ndarray:
                return np.flatnonzero((mask if self._rows is None else mask[self._rows])[:self.base])

            named = older(name_table_mask(self.index, by_name))
            validations = older(name_table_mask(self.index, lambda name: name == ev.DATA_VALIDATION_COMPLETED))
            events = decode_rows(self.index, self.row_numbers(validations))
            failed = validations[[i for i, e in enumerate(events) if event_kind(e) == "error"]]
            self._problems_older = np.union1d(named, failed).astype(np.int64)
        return self._problems_older

    # -- visible rows --------------------------------------------------------------------------------
    def _window_rows(self) -> int:
        return super().__len__()

    def _before(self) -> int:
        """Visible rows ahead of the window's."""
        return len(self._older) if self.matcher is not None else self.base

    def __len__(self) -> int:
        return self._before() + self._window_rows()

    def rows_before(self, seq_limit: int) -> int:
        if seq_limit <= self.base:
            if self.matcher is None:
                return max(0, seq_limit)
            return int(np.searchsorted(self._older, seq_limit))
        return self._before() + super().rows_before(seq_limit)

    def seq_at(self, row: int) -> int:
        if row < 0 or row >= len(self):
            raise IndexError(row)
        before = self._before()
        if row >= before:
            return super().seq_at(row - before)
        return row if self.matcher is None else int(self._older[row])

    def row_of(self, seq: int) -> int | None:
        if seq < 0 or seq >= self.total:
            return None
        if seq >= self.base:
            row = super().row_of(seq)
            return None if row is None else self._before() + row
        if self.matcher is None:
            return seq
        i = int(np.searchsorted(self._older, seq))
        return i if i < len(self._older) and int(self._older[i]) == seq else None

    def nearest_row(self, seq: int) -> int:
        last = max(0, len(self) - 1)
        if self.matcher is None:
            return min(max(seq, 0), last)
        if seq < self.base:
            return min(int(np.searchsorted(self._older, seq)), last)
        return min(self._before() + super().nearest_row(seq), last)


def scan_rows(index: LogIndex, rows: np.ndarray | None, stop: int, matcher: EventMatcher, *,
              cancelled: Callable[[], bool] | None = None, every_s: float = 0.25) -> Iterator[tuple[np.ndarray, bool]]:
    """For a worker thread: the sequence numbers below `stop` whose events `matcher` accepts on their own
    (`rows` maps sequence numbers to `index` rows; None: the same), read through the index a chunk at a
    time; yields (found so far, done) at most every `every_s` seconds and once at the end. Stops early
    (without a last yield) when `cancelled()`.

    A free-text filter first looks for its needle in the raw lines (`text_prefilter`), so only lines
    that may match are decoded."""
    needle = text_prefilter(matcher)
    chunks = _seq_chunks(stop) if needle is None else _candidate_chunks(index, rows, stop, needle)
    found: list[np.ndarray] = []
    reported = time.monotonic()
    matches = matcher.matches_alone
    with collector_paused():  # what is decoded is freed as it goes: no collections over the window
        for seqs in chunks:
            if cancelled is not None and cancelled():
                return
            if len(seqs):
                events = decode_rows(index, seqs if rows is None else rows[seqs])
                hits = [i for i, event in enumerate(events) if matches(event)]
                if hits:
                    found.append(seqs[hits])
            time.sleep(0)  # let the screen's thread run between chunks
            if time.monotonic() - reported >= every_s:
                reported = time.monotonic()
                yield _joined(found), False
    yield _joined(found), True


def _seq_chunks(stop: int) -> Iterator[np.ndarray]:
    for first in range(0, stop, _SCAN_CHUNK):
        yield np.arange(first, min(first + _SCAN_CHUNK, stop))


def _candidate_chunks(index: LogIndex, rows: np.ndarray | None, stop: int, needle: bytes) -> Iterator[np.ndarray]:
    """Sequence numbers below `stop` whose lines hold `needle` (ASCII-lowercased) or a backslash, ascending,
    a block of the file at a time (an empty array between blocks without any)."""
    if rows is None:
        stop_row = min(stop, len(index))
    else:
        stop_row = len(index) if stop >= len(rows) else int(rows[stop])
    for first, segment in zip(index.starts.tolist(), index.segments, strict=False):
        offsets = segment.columns["offset"]
        if first >= stop_row:
            return
        count = min(len(offsets), stop_row - first)
        with open(segment.log, "rb") as fh:
            row = 0
            while row < count:
                start = int(offsets[row])
                # the key in the column's own type: a Python int would have numpy convert all 10M offsets
                end_row = min(count, int(np.searchsorted(offsets, np.uint64(start + _SCAN_BYTES), side="left")))
                end_row = max(end_row, row + 1)
                end = int(offsets[end_row - 1]) + int(segment.columns["length"][end_row - 1])
                fh.seek(start)
                block = fh.read(end - start).lower()
                hits = _line_hits(block, needle) + _line_hits(block, b"\\")
                if hits:
                    local = np.searchsorted(offsets[row:end_row], np.array(hits, np.uint64) + np.uint64(start),
                                            side="right") - 1 + row
                    yield _seqs_of(rows, np.unique(local) + first)
                else:
                    yield np.empty(0, np.int64)
                row = end_row


def _seqs_of(rows: np.ndarray | None, found: np.ndarray) -> np.ndarray:
    """Sequence numbers of global rows `found` (those of lines readers skip dropped)."""
    if rows is None:
        return found
    at = np.searchsorted(rows, found)
    keep = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == found)
    return np.asarray(at[keep], np.int64)


def text_prefilter(matcher: EventMatcher) -> bytes | None:
    """A needle every line of a matching event holds (ASCII-lowercased): one of the filter's free-text terms
    ANDed with the rest (`required_needles`) that is letters, `_`, `.` or `-`: those read the same in the
    line as in `event_text` (a line with a backslash may spell them with escapes: it is always a candidate).
    Not for a needle inside `none` or `null` (a value written as one may be searched as the other)."""
    needles = matcher.required_needles
    if not needles:
        return None
    usable = [n for n in needles if _PLAIN_NEEDLE.match(n) and n not in "none" and n not in "null"]
    return max(usable, key=len).encode() if usable else None


def _line_hits(block: bytes, needle: bytes) -> list[int]:
    """A position in each line of `block` that holds `needle` (one per line)."""
    hits = []
    at = block.find(needle)
    while at >= 0:
        hits.append(at)
        end = block.find(b"\n", at)
        if end < 0:
            break
        at = block.find(needle, end)
    return hits


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, np.int64)
