"""The index of a whole log (segments, oldest first): narrowing by its columns, reading the chosen lines.

See index.py for the format and how an index is kept and checked; `open_index` there returns a LogIndex.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._index_build import _EPOCH0, _US, COLUMNS, NO_VALUE, correlation_hash
from ._patterns import compile_pattern

if TYPE_CHECKING:
    from .index import SegmentIndex

__all__ = ["LogIndex"]


class LogIndex:
    """The index of a whole log (its rotated segments, oldest first, then the active file).

    Rows are numbered across segments in file order. `select` narrows by name glob, time range, step
    range and correlation id on the columns alone; `lines` reads the chosen rows' lines from the log.
    """

    def __init__(self, segments: list[SegmentIndex]) -> None:
        self.segments = segments
        self.starts = np.cumsum([0] + [len(s) for s in segments]).astype(np.int64)  # first row of each

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def total_bytes(self) -> int:
        """Bytes of the log covered (a file in two pieces counts once)."""
        ends: dict[Path, int] = {}
        for segment in self.segments:
            ends[segment.log] = max(ends.get(segment.log, 0), segment.end)
        return sum(ends.values())

    def column(self, key: str) -> np.ndarray:
        """One column over every segment (a copy only when there are several)."""
        parts = [s.columns[key] for s in self.segments]
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, COLUMNS[key])

    def names(self) -> list[str]:
        """Every event name in the log (the union of the segments' tables)."""
        seen: dict[str, None] = {}
        for segment in self.segments:
            seen.update(dict.fromkeys(segment.names))
        return list(seen)

    def unreadable(self) -> int:
        """Lines readers skip (not JSON, or not an event)."""
        return sum(int(np.count_nonzero(s.columns["name"] == 0)) for s in self.segments)

    def name_mask(self, segment: SegmentIndex, patterns: Sequence[str]) -> np.ndarray:
        """Rows of `segment` whose name matches any glob of `patterns` (fnmatch, as subscriptions)."""
        tests = [compile_pattern(p) for p in patterns]
        wanted = [i + 1 for i, name in enumerate(segment.names) if any(test(name) for test in tests)]
        return np.isin(segment.columns["name"], np.array(wanted, np.uint32))

    def select(self, *, patterns: Sequence[str] = (), start: datetime | None = None, end: datetime | None = None,
               steps: tuple[int | None, int | None] | None = None, correlation_id: str | None = None) -> np.ndarray:
        """Global row numbers (ascending) that may match; the caller checks the decoded events exactly."""
        found: list[np.ndarray] = []
        for first, segment in zip(self.starts.tolist(), self.segments, strict=False):
            cols = segment.columns
            mask = cols["name"] != 0
            if patterns:
                mask &= self.name_mask(segment, patterns)
            if start is not None:
                mask &= cols["time"] >= _micros(start)
            if end is not None:
                mask &= (cols["time"] <= _micros(end)) & (cols["time"] != NO_VALUE)
            if steps is not None:
                low, high = steps
                mask &= cols["step"] != NO_VALUE
                if low is not None:
                    mask &= cols["step"] >= low
                if high is not None:
                    mask &= cols["step"] <= high
            if correlation_id is not None:
                mask &= cols["corr"] == np.uint64(correlation_hash(correlation_id))
            found.append(np.flatnonzero(mask) + first)
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def locate(self, rows: np.ndarray) -> list[tuple[SegmentIndex, np.ndarray]]:
        """`rows` (ascending global numbers) split by segment, as local row numbers."""
        out = []
        bounds = np.searchsorted(rows, self.starts)
        for i, segment in enumerate(self.segments):
            local = rows[bounds[i]:bounds[i + 1]] - self.starts[i]
            if len(local):
                out.append((segment, local))
        return out

    def lines(self, rows: np.ndarray) -> list[bytes]:
        """The lines (stripped) at global `rows`, in the order given (any order). Read with plain reads of
        the spans they lie in, not through a map of the file: a map's touched pages (readahead around every
        sparse row) count in the process's RSS, ~1 GB for the milestones of a 10M-event log."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        got: list[bytes] = []
        for segment, local in self.locate(rows[order]):
            offsets = segment.columns["offset"][local].astype(np.int64)
            ends = offsets + segment.columns["length"][local]
            # a new span where the next line starts past _SPAN_GAP after the last one's end, or in the next
            # _SPAN_MAX block of the file (a span never reads much more than that)
            breaks = np.flatnonzero((offsets[1:] - ends[:-1] > _SPAN_GAP)
                                    | (offsets[1:] // _SPAN_MAX != offsets[:-1] // _SPAN_MAX)) + 1
            with open(segment.log, "rb") as fh:
                fd = fh.fileno()
                for first, stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(local)], strict=True):
                    base = int(offsets[first])
                    span = os.pread(fd, int(ends[stop - 1]) - base, base)
                    got.extend(span[o - base:e - base].strip()
                               for o, e in zip(offsets[first:stop].tolist(), ends[first:stop].tolist(), strict=True))
        if bool((order[1:] > order[:-1]).all()):
            return got  # asked in file order
        result: list[bytes] = [b""] * len(rows)
        for position, line in zip(order.tolist(), got, strict=True):
            result[position] = line
        return result


_SPAN_GAP = 8 << 10  # lines closer than this are read in one span (a syscall costs about what copying 8 KB does)...
_SPAN_MAX = 4 << 20  # ...of at most about this many bytes


def _micros(moment: datetime) -> int:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=_EPOCH0.tzinfo)
    return (aware - _EPOCH0) // _US
