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
from collections import deque
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kbert_tui.events import Event
from kbert_tui.events._codec import decode_lines
from kbert_tui.events import catalog as ev

from .log_index import EventLog
from .run_state import RunState

__all__ = ["EndView", "load_end", "load_all", "TAIL_BYTES"]

TAIL_BYTES = 1 << 20  # ~3,500 events: a screenful many times over, decoded in a blink

_MILESTONE = re.compile(
    rb'"name":"(?:training\.(?!batch_completed")|control\.|plugin\.(?!stats")|model\.checkpoint|bus\.'
    rb'|data\.(?!batch_loaded")|system\.(?:perf|bottleneck|gpu_unavailable|error))')


@dataclass
class EndView:
    """What `load_end` found: the end state, the newest events, and what the file holds."""

    state: RunState
    log: EventLog
    runs: int  # training.started lines: a log holding several runs says so
    malformed: int = 0
    total_bytes: int = 0
    run_ids: list[str] = field(default_factory=list)


def _map(path: Path) -> mmap.mmap | None:
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return None
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def load_end(files: list[Path], capacity: int, *, tail_bytes: int = TAIL_BYTES) -> EndView:
    """The end of the run recorded in `files` (segments, oldest first), without decoding it all."""
    maps = [(path, _map(path)) for path in files]
    maps = [(path, m) for path, m in maps if m is not None]
    total_bytes = sum(len(m) for _, m in maps)
    # the tail may span segments: take whole lines from the newest backwards
    tail_lines: list[bytes] = []
    need = tail_bytes
    tail_start = [len(m) for _, m in maps]  # per segment: where its tail part starts
    for index in range(len(maps) - 1, -1, -1):
        _, m = maps[index]
        start = max(0, len(m) - need)
        if start:
            start = m.find(b"\n", start) + 1 or len(m)
        tail_start[index] = start
        tail_lines[:0] = m[start:].split(b"\n")
        need -= len(m) - start
        if need <= 0:
            break
    milestones: list[tuple[int, int, bytes]] = []
    runs = 0
    for index, (_, m) in enumerate(maps):
        limit = tail_start[index]
        last_line = -1
        for hit in _MILESTONE.finditer(m, 0, limit):
            begin = m.rfind(b"\n", 0, hit.start()) + 1
            if begin == last_line:
                continue
            last_line = begin
            end = m.find(b"\n", hit.end())
            milestones.append((index, begin, m[begin:end if end >= 0 else len(m)]))
    state = RunState()
    log = EventLog(capacity)
    malformed = 0
    run_ids: list[str] = []
    found, problems = decode_lines([line for _, _, line in milestones])
    malformed += len(problems)
    for event in found:
        state.apply(event)
        if event.name == ev.TRAINING_STARTED:
            runs += 1
            run_ids.append(str(event.data.get("run_id") or event.correlation_id or "?"))
    found, problems = decode_lines(list(filter(None, map(bytes.strip, tail_lines))))
    malformed += len(problems)
    for event in found:
        state.apply(event)
        log.append(event)
        if event.name == ev.TRAINING_STARTED:
            runs += 1
            run_ids.append(str(event.data.get("run_id") or event.correlation_id or "?"))
    for _, m in maps:
        m.close()
    return EndView(state, log, runs, malformed, total_bytes, run_ids)


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
