"""The ranks of a multi-rank run (`mlx.launch`): one lane per rank, from the events' metadata, and the
run's logs read as one (rank 0 writes events.jsonl, rank N events.rankN.jsonl beside it).

Every rank reports the same loss and metrics (they are reduced across ranks), so rank 0's events drive
the panes; the others' training and system events only feed their lane here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.events.store import EventLogReader, read_events

from .summary import dict_at

__all__ = ["RankLane", "RankLanes", "MergedLogReader", "rank_of"]

_SHADOWED = ("training", "system", "plugin", "data", "model", "rule")  # categories rank 0 speaks for


def rank_of(event: Event) -> dict[str, Any] | None:
    """The event's metadata when it names a rank, else None."""
    # Live events make their metadata lazily: read it without creating an empty dict on every event.
    metadata: dict[str, Any] | None = vars(event).get("metadata")
    if metadata and isinstance(metadata.get("rank"), int) and not isinstance(metadata.get("rank"), bool):
        return metadata
    return None


@dataclass
class RankLane:
    """One rank as its own events show it."""

    rank: int
    host: str | None = None
    status: str = "running"
    epoch: int = 0
    step: int = 0
    step_time_ms: float | None = None
    samples_per_sec: float | None = None
    last_event: str | None = None
    last_at: datetime | None = None
    error: str | None = None


class RankLanes:
    """Per-rank progress of a multi-rank run; empty for a single process's run."""

    def __init__(self) -> None:
        self.world_size: int | None = None
        self.lanes: dict[int, RankLane] = {}

    def __bool__(self) -> bool:
        return bool(self.lanes)

    def apply(self, event: Event, metadata: dict[str, Any]) -> bool:
        """Note `event` in its rank's lane; True when only the lane should see it (another rank's copy of
        what rank 0 reports too), False when the run's reducers should see it as well."""
        rank = metadata["rank"]
        lane = self.lanes.get(rank)
        if lane is None:
            lane = self.lanes[rank] = RankLane(rank)
        size = metadata.get("world_size")
        if isinstance(size, int) and size > 0:
            self.world_size = size
        host = metadata.get("host")
        if isinstance(host, str):
            lane.host = host
        name, data = event.name, event.data if isinstance(event.data, dict) else {}
        lane.last_event, lane.last_at = name, event.timestamp
        if name == ev.TRAINING_BATCH_COMPLETED:
            if isinstance(data.get("step"), int):
                lane.step = data["step"]
            if isinstance(data.get("epoch"), int):
                lane.epoch = data["epoch"]
            metrics = dict_at(data, "metrics")
            lane.step_time_ms = _num(metrics.get("step_time_ms"), lane.step_time_ms)
            lane.samples_per_sec = _num(metrics.get("samples_per_sec"), lane.samples_per_sec)
        elif name == ev.TRAINING_STARTED:
            lane.status = "running"
        elif name in (ev.TRAINING_COMPLETED, ev.TRAINING_STOPPED, ev.TRAINING_FAILED):
            lane.status = name.partition(".")[2]
            if name == ev.TRAINING_FAILED:
                lane.error = str(data.get("error", ""))[:200] or None
        elif name == ev.TRAINING_PAUSED:
            lane.status = "paused"
        elif name == ev.TRAINING_RESUMED:
            lane.status = "running"
        return rank != 0 and name != ev.TRAINING_FAILED and name.partition(".")[0] in _SHADOWED

    def summary(self) -> str | None:
        """One line for the Training pane, e.g. `ranks 2: r0 step 120 · r1 step 119`; None without ranks."""
        if not self.lanes:
            return None
        parts = []
        for rank in sorted(self.lanes):
            lane = self.lanes[rank]
            text = f"r{rank} step {lane.step}"
            if lane.step_time_ms is not None:
                text += f" {lane.step_time_ms:.0f} ms"
            if lane.status != "running":
                text += f" {lane.status}"
            parts.append(text)
        return f"ranks {self.world_size or len(self.lanes)}: " + " · ".join(parts)


def _num(value: Any, default: float | None) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


class MergedLogReader:
    """The logs of all ranks read as one, in time order (each log is in time order; a heap merges them).

    Has EventLogReader's face (`files`, `malformed`, `lines`, `bytes_read`, `first_error`, iteration).
    `files` lists rank 0's segments last, so the end of the list is the run's end as rank 0 wrote it.
    """

    def __init__(self, logs: dict[int, Path]) -> None:
        """`logs`: each rank's active log (kbert_tui.remote.rank_logs), rank 0 the run's own."""
        self.path = logs[0]
        self.readers: list[EventLogReader] = [read_events(logs[r]) for r in sorted(logs, reverse=True)]
        self.ranks = len(logs)
        self.files: list[Path] = [f for reader in self.readers for f in reader.files]

    @property
    def malformed(self) -> int:
        return sum(r.malformed for r in self.readers)

    @property
    def lines(self) -> int:
        return sum(r.lines for r in self.readers)

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for r in self.readers)

    @property
    def first_error(self) -> str | None:
        return next((r.first_error for r in reversed(self.readers) if r.first_error), None)

    def __iter__(self) -> Iterator[Event]:
        if len(self.readers) == 1:
            return iter(self.readers[0])
        return heapq.merge(*self.readers, key=lambda event: event.timestamp)
