"""Loading a recorded run end first: the run's final state in a fraction of a second, the rest behind it.

A 1M-event log is ~280 MB; decoding every line takes several seconds, but the end of a run depends on
few of them. `load_end` reads

- the tail of the log (the last `tail_bytes`): the newest events for the log pane and the latest
  readings (step, loss, system, plugin counters);
- every *milestone* line of the whole log, found by a byte-level search without decoding the others:
  training.* except batches, control.*, plugin.* except stats, model.checkpoint_*, data.* except
  batches, bus.*, system warnings/bottlenecks/gpu_unavailable;

and reduces milestones, then the tail, into a `RunState` (the loss curve then covers the tail only).
`load_all` then decodes everything in order into a complete `RunState` and `EventLog` (a multi-rank
run, or a log whose index can't be opened).

Through the log's index (kbert_tui.events.index) no line is searched: `end_from_index` finds the
milestones by their name ids and the tail by the lengths column; `indexed_log` decodes the newest
`capacity` events into a `DiskEventLog` (every event navigable, the older ones read from disk when
shown); `history_state` decodes only the older events the panes keep (`history_names`) into the run's
`RunState`. All are plain functions the monitor runs on a worker thread.
"""

from __future__ import annotations

import mmap
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.events._codec import decode_lines
from kbert_tui.events._query import collector_paused
from kbert_tui.events.index import LogIndex

from .disk_log import DiskEventLog, decode_rows, name_table_mask, readable_rows
from .log_index import EventLog
from .run_state import _DISPATCH, RunState
from .story import resumed_at_step

__all__ = ["TAIL_BYTES", "EndEvents", "EndView", "end_events", "end_from_index", "history_names", "history_state",
           "indexed_log", "load_all", "load_end", "load_indexed"]

TAIL_BYTES = 1 << 20  # ~3,500 events: a screenful many times over, decoded in a blink

# Milestone names; the byte form follows `"name":` in any layout (spaces, key order), the text form
# checks a decoded name (a byte hit may be a "name" key inside data).
_MILESTONE_NAMES = (r'(?:training\.(?!batch_completed{end})|control\.|plugin\.(?!stats{end})|model\.checkpoint|bus\.'
                    r'|data\.(?!batch_loaded{end})|system\.(?:perf|bottleneck|gpu_unavailable|error))')
_MILESTONE = re.compile(rb'"name"[ \t\r\n]*:[ \t\r\n]*"' + _MILESTONE_NAMES.format(end='"').encode())
_IS_MILESTONE = re.compile(_MILESTONE_NAMES.format(end="$"))


@dataclass
class EndView:
    """What `load_end` found: the end state, the newest events, and what the file holds."""

    state: RunState
    log: EventLog
    runs: int  # runs started in the log (a resumed run's new process is the same run): several say so
    malformed: int = 0
    total_bytes: int = 0
    run_ids: list[str] = field(default_factory=list)


def _map(path: Path) -> mmap.mmap | None:
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return None
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


@dataclass
class EndEvents:
    """What the end of a log holds: milestone events before the tail, then every event of the tail."""

    milestones: list[Event]
    tail: list[Event]
    malformed: int  # unreadable lines among the tail and the milestone candidates
    total_bytes: int


def end_events(files: list[Path], tail_bytes: int = TAIL_BYTES, *, milestones: bool = True) -> EndEvents:
    """The milestones of `files` (segments, oldest first) before their last `tail_bytes` (none without
    `milestones`), and the events of that tail, in file order, without decoding the other lines."""
    maps = [(path, _map(path)) for path in files]
    mapped = [m for _, m in maps if m is not None]
    try:
        return _end_events(mapped, tail_bytes, milestones)
    finally:
        for m in mapped:
            m.close()


def _end_events(maps: list[mmap.mmap], tail_bytes: int, milestones: bool = True) -> EndEvents:
    # the tail may span segments: take whole lines from the newest backwards
    tail_lines: list[bytes] = []
    need = tail_bytes
    tail_start = [len(m) for m in maps]  # per segment: where its tail part starts
    for index in range(len(maps) - 1, -1, -1):
        if need <= 0:
            break
        m = maps[index]
        start = max(0, len(m) - need)
        if start:
            start = m.find(b"\n", start) + 1 or len(m)
        tail_start[index] = start
        tail_lines[:0] = m[start:].split(b"\n")
        need -= len(m) - start
    candidates: list[bytes] = []
    for index, m in enumerate(maps):
        if milestones:
            candidates.extend(_candidate_lines(m, tail_start[index]))
    decoded, problems = decode_lines(candidates)
    malformed = len(problems)
    found = [event for event in decoded if _IS_MILESTONE.match(event.name)]
    tail, problems = decode_lines(list(filter(None, map(bytes.strip, tail_lines))))
    return EndEvents(found, tail, malformed + len(problems), sum(map(len, maps)))


def _candidate_lines(m: mmap.mmap, limit: int) -> list[bytes]:
    """The lines of m[:limit] that may be milestones (stripped, in file order): a milestone name after
    `"name":`, or a backslash anywhere (a line may spell its name or keys with escapes)."""
    starts: dict[int, int] = {}
    for hit in _MILESTONE.finditer(m, 0, limit):
        begin = m.rfind(b"\n", 0, hit.start()) + 1
        starts.setdefault(begin, hit.end())
    position = m.find(b"\\", 0, limit)
    while position >= 0:
        begin = m.rfind(b"\n", 0, position) + 1
        starts.setdefault(begin, position)
        end = m.find(b"\n", position)
        if end < 0:
            break
        position = m.find(b"\\", end, limit)
    lines = []
    for begin in sorted(starts):
        end = m.find(b"\n", starts[begin])
        line = m[begin:end if 0 <= end <= limit else limit].strip()
        if line:
            lines.append(line)
    return lines


def load_end(files: list[Path], capacity: int, *, tail_bytes: int = TAIL_BYTES, milestones: bool = True) -> EndView:
    """The end of the run recorded in `files` (segments, oldest first), without decoding it all; without
    `milestones`, from the tail alone (a glance at a big log whose index is still being built)."""
    return _reduce_end(end_events(files, tail_bytes, milestones=milestones), capacity)


def _reduce_end(end: EndEvents, capacity: int) -> EndView:
    state = RunState()
    log = EventLog(capacity)
    runs = 0
    run_ids: list[str] = []
    for part in (end.milestones, end.tail):
        for event in part:
            state.apply(event)
            if part is end.tail:
                log.append(event)
            if event.name == ev.TRAINING_STARTED:
                run_id = str(event.data.get("run_id") or event.correlation_id or "?")
                if resumed_at_step(event.data) is None or run_id not in run_ids:  # `run --resume`: the same run
                    runs += 1
                    run_ids.append(run_id)
    return EndView(state, log, runs, end.malformed, end.total_bytes, run_ids)


def load_all(events: Iterator[Event], capacity: int, *,
             cancelled: Callable[[], bool] | None = None, every: int = 20_000) -> tuple[RunState, EventLog] | None:
    """Every event in order into a fresh `RunState`; the newest `capacity` of them into an `EventLog`
    (older ones only count, as they would have left its window anyway). None when cancelled."""
    state = RunState()
    apply = state.apply
    window: deque[Event] = deque(maxlen=capacity)
    keep = window.append
    n = 0
    for n, event in enumerate(events, 1):
        apply(event)
        keep(event)
        if not n % every and cancelled is not None and cancelled():
            return None
    log = EventLog(capacity)
    log.skip(n - len(window))
    log.extend(window)
    return state, log


# -- through the index (kbert_tui.events.index): no scan of the file ----------------------------------

def end_from_index(index: LogIndex, capacity: int, *, tail_bytes: int = TAIL_BYTES) -> EndView:
    """`load_end` through the log's index: the milestones found by their name ids, the tail by the
    lengths column; only those lines are read and decoded."""
    lengths = index.column("length")
    count = len(lengths)
    newest = np.asarray(lengths[max(0, count - max(1, tail_bytes // 2)):][::-1], np.int64)
    tail_rows = max(1, int(np.searchsorted(np.cumsum(newest), tail_bytes, side="right"))) if count else 0
    tail_from = count - tail_rows
    milestone_mask = name_table_mask(index, lambda name: _IS_MILESTONE.match(name) is not None)
    rows = np.flatnonzero(milestone_mask[:tail_from])
    tail = np.arange(tail_from, count)
    tail = tail[index.column("name")[tail_from:] != 0]
    end = EndEvents(decode_rows(index, rows), decode_rows(index, tail), index.unreadable(), index.total_bytes)
    return _reduce_end(end, capacity)


def history_names(name: str) -> bool:
    """Events whose story the panes keep beyond the newest ones: milestones, batches (the loss curve),
    errors and warnings (their counts), rules and what the Training pane reduces; system readings,
    data/model timings and plugin stats only matter at the end (the window holds those)."""
    if _IS_MILESTONE.match(name) or name == ev.TRAINING_BATCH_COMPLETED or name == ev.RULE_FIRED:
        return True
    if name.endswith((".failed", ".error", ".handler_error")) or "warning" in name or "bottleneck" in name:
        return True
    return name in _DISPATCH and not name.startswith("system.")


def load_indexed(index: LogIndex, capacity: int, *, cancelled: Callable[[], bool] | None = None,
                 chunk: int = 4000) -> tuple[RunState, DiskEventLog] | None:
    """`indexed_log`, then `history_state` over it. None when cancelled."""
    log = indexed_log(index, capacity, cancelled=cancelled, chunk=chunk)
    if log is None:
        return None
    state = history_state(log, cancelled=cancelled, chunk=chunk)
    return None if state is None else (state, log)


def indexed_log(index: LogIndex, capacity: int, *, cancelled: Callable[[], bool] | None = None,
                chunk: int = 4000) -> DiskEventLog | None:
    """Every event of the log as a `DiskEventLog`: the newest `capacity` decoded (a chunk at a time, the
    GIL handed over between chunks), the older ones left on disk. None when cancelled."""
    rows = readable_rows(index)
    total = len(index) if rows is None else len(rows)
    window_from = max(0, total - capacity)
    window_rows = np.arange(window_from, total) if rows is None else rows[window_from:]
    window: list[Event] = []
    with collector_paused():  # the window lives on: no point scanning it
        for start in range(0, len(window_rows), chunk):
            window.extend(decode_rows(index, window_rows[start:start + chunk]))
            if cancelled is not None and cancelled():
                return None
            time.sleep(0)
        return DiskEventLog(index, capacity, window, rows)


def history_state(log: DiskEventLog, *, cancelled: Callable[[], bool] | None = None, chunk: int = 4000,
                  progress: Callable[[int, int], None] | None = None) -> RunState | None:
    """The run's `RunState` over its whole history: the older events `history_names` keeps, decoded from
    disk a chunk at a time, then every event of the log's window. None when cancelled. `progress(done,
    total)` hears how many of the older events are in."""
    index = log.index
    first_window_row = int(log.row_numbers(np.array([log.base]))[0]) if log.base < log.total else len(index)
    older = np.flatnonzero(name_table_mask(index, history_names)[:first_window_row])
    state = RunState()
    apply = state.apply
    with collector_paused():  # what is decoded is freed as it goes
        for start in range(0, len(older), chunk):
            for event in decode_rows(index, older[start:start + chunk]):
                apply(event)
            if cancelled is not None and cancelled():
                return None
            if progress is not None:
                progress(min(len(older), start + chunk), len(older))
            time.sleep(0)
        for seq in range(log.base, log.total):
            apply(log.get(seq))
    state.events_seen = log.total  # the readings left out count too
    return state
