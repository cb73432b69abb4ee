"""Loading a recorded run end first: the run's final state in a fraction of a second, the rest behind it.

A 1M-event log is ~280 MB; decoding every line takes several seconds, but the end of a run depends on
few of them. `load_end` reads

- the tail of the log (the last `tail_bytes`): the newest events for the log pane and the latest
  readings (step, loss, system, plugin counters);
- every *milestone* line of the whole log, found by a byte-level search without decoding the others:
  training.* except batches, control.*, plugin.* except stats, model.checkpoint_*, data.* except
  batches, bus.*, system warnings/bottlenecks/gpu_unavailable;

and reduces milestones, then the tail, into a `RunState` (the loss curve then covers the tail only).
`load_all` then decodes everything in order into a complete `RunState` and `EventLog`, reporting
progress; both are plain functions the monitor runs on a worker thread.
"""

from __future__ import annotations

import mmap
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.events._codec import decode_lines

from .log_index import EventLog
from .run_state import RunState
from .story import resumed_at_step

__all__ = ["TAIL_BYTES", "EndEvents", "EndView", "end_events", "load_all", "load_end"]

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


def end_events(files: list[Path], tail_bytes: int = TAIL_BYTES) -> EndEvents:
    """The milestones of `files` (segments, oldest first) before their last `tail_bytes`, and the events
    of that tail, in file order, without decoding the other lines."""
    maps = [(path, _map(path)) for path in files]
    mapped = [m for _, m in maps if m is not None]
    try:
        return _end_events(mapped, tail_bytes)
    finally:
        for m in mapped:
            m.close()


def _end_events(maps: list[mmap.mmap], tail_bytes: int) -> EndEvents:
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
        candidates.extend(_candidate_lines(m, tail_start[index]))
    milestones, problems = decode_lines(candidates)
    malformed = len(problems)
    milestones = [event for event in milestones if _IS_MILESTONE.match(event.name)]
    tail, problems = decode_lines(list(filter(None, map(bytes.strip, tail_lines))))
    return EndEvents(milestones, tail, malformed + len(problems), sum(map(len, maps)))


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


def load_end(files: list[Path], capacity: int, *, tail_bytes: int = TAIL_BYTES) -> EndView:
    """The end of the run recorded in `files` (segments, oldest first), without decoding it all."""
    end = end_events(files, tail_bytes)
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
