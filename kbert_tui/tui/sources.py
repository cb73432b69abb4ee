"""Where the monitor's events come from: a live RunSession's bus, or a replayed events file.

Both push events into the app's inbox (a plain deque; appends are thread-safe) and nothing else;
the app drains the inbox on a timer into RunState and the log index.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events.index import open_index
from kbert_tui.events.store import EventLogReader, read_events
from kbert_tui.remote import rank_logs
from kbert_tui.state.ranks import MergedLogReader
from kbert_tui.state.replay_load import end_from_index, history_state, indexed_log, load_all, load_end

__all__ = ["EventSource", "ReplaySource", "LiveSource", "StaticSource"]

GLANCE_BYTES = 64 << 20  # a log this big shows its tail's state first, while its index is checked or built


class EventSource:
    """The interface the app talks to."""

    events_path: Path | None = None
    # What the app may do with it (the footer and the actions follow these, not the source's type):
    controllable = False  # `p` / `s` / `k` reach a running training through `emit_control` (else hidden)
    owns_run = False  # the training runs in this process: quitting stops it (asking first), its end is awaited
    recording = False  # a finished recording: nothing happens now (no bell for rules that fired then)

    # Playback pacing, for a source that is `paceable` (a `--speed` replay); the app offers p / n / + / -
    # only then, so here they are no-ops.
    paused = False
    speed: float | None = None

    @property
    def paceable(self) -> bool:
        """Playback can be paused, stepped and sped up (`--speed` replay)."""
        return False

    def toggle_pause(self) -> bool:
        """Pause or resume playback; returns whether it is paused now."""
        return self.paused

    def step(self, count: int = 1) -> None:
        """While paused, let `count` more events through."""

    def set_speed(self, speed: float | None) -> None:
        """Play back at `speed` times the recorded pace (None: as fast as possible)."""

    @property
    def end_first(self) -> bool:
        """A whole recording, loaded from its end (the app reads it itself, off the UI thread)."""
        return False

    async def start(self, inbox: deque[Event]) -> None:
        raise NotImplementedError

    async def wait(self) -> str | None:
        """For a source that follows a run: wait until the run is over, return how it ended."""
        return None

    async def emit_control(self, name: str, data: dict[str, Any]) -> None:
        """Send a control request (`control.pause_requested`, …) to the run."""

    async def close(self) -> None:
        """Stop producing; for a live run, stop training cleanly and flush the log."""

    def describe(self) -> str:
        return ""

    @property
    def finished(self) -> bool:
        return False

    @property
    def malformed(self) -> int:
        return 0


class StaticSource(EventSource):
    """A fixed list of events (tests, demos)."""

    def __init__(self, events: list[Event], *, label: str = "recorded events") -> None:
        self.events = events
        self.label = label

    async def start(self, inbox: deque[Event]) -> None:
        inbox.extend(self.events)

    def describe(self) -> str:
        return self.label

    @property
    def finished(self) -> bool:
        return True


class ReplaySource(EventSource):
    """Reads an events file (with its rotated segments) on a worker thread.

    Fast (speed None): as quickly as the app drains it, in batches, with back-pressure so memory stays
    bounded. Paced (speed X): at X times the recorded pace; `toggle_pause`, `step`, `set_speed`.
    """

    recording = True

    @property
    def paceable(self) -> bool:
        return self.speed is not None

    @property
    def end_first(self) -> bool:
        return self.speed is None

    BATCH = 2000
    MAX_BACKLOG = 50_000

    def __init__(self, path: str | os.PathLike[str], *, speed: float | None = None) -> None:
        self.path = Path(path)
        self.events_path = self.path
        logs = rank_logs(self.path)  # a multi-rank run: every rank's log, merged in time order
        self.reader: EventLogReader | MergedLogReader = (
            MergedLogReader(logs) if len(logs) > 1 else read_events(self.path))  # raises for a missing file
        for file in self.reader.files:
            with open(file, "rb"):
                pass  # unreadable (permissions) → OSError here, before the app starts
        self.total_bytes = sum(f.stat().st_size for f in self.reader.files)
        self.speed = speed
        self.paused = False
        self.read = 0
        self._steps = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False
        self.error: str | None = None
        self.indexing: tuple[int, int, float] | None = None  # (bytes indexed, bytes to index, when it began)
        self.unreadable: int | None = None  # lines skipped, counted by the log's index (the reader never ran)
        self.via_index = False  # the monitor reads the log through its index, not through `reader`
        self.history_done: float | None = None  # how much of the panes' history is in (through the index)

    async def start(self, inbox: deque[Event]) -> None:
        self._thread = threading.Thread(target=self._run, args=(inbox,), name="kbert-replay", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 2.0)

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def malformed(self) -> int:
        return self.reader.malformed if self.unreadable is None else self.unreadable

    def _history_progress(self, done: int, total: int) -> None:
        self.history_done = done / max(1, total)

    def index_progress(self, done: int, total: int) -> None:
        """The log's index is being built (a worker calls this): the title shows how far, how fast."""
        began = self.indexing[2] if self.indexing is not None else time.monotonic()
        self.indexing = (done, total, began)

    def describe(self) -> str:
        parts = [f"replay {self.path.name}"]
        ranks = self.reader.ranks if isinstance(self.reader, MergedLogReader) else 1
        if ranks > 1:
            parts.append(f"{ranks} ranks")
        if len(self.reader.files) > ranks:
            parts.append(f"{len(self.reader.files)} segments")
        if self.indexing is not None and self.indexing[0] < self.indexing[1]:
            done, total, began = self.indexing
            rate = done / max(1e-6, time.monotonic() - began) / 1e6
            parts.append(f"indexing {100 * done // max(1, total)}% · {rate:.0f} MB/s")
        elif self.history_done is not None and not self._done:
            parts.append(f"history {100 * self.history_done:.0f}%")
        elif self.total_bytes and not self._done and not self.via_index:
            parts.append(f"{min(100.0, 100.0 * self.reader.bytes_read / self.total_bytes):.0f}% read")
        parts.append(f"speed {self.speed:g}×" if self.speed else "fast")
        if self.paused:
            parts.append("PAUSED")
        if self._done:
            parts.append("end of file")
        return " · ".join(parts)

    def end_first_stages(self, capacity: int, cancelled: Callable[[], bool]) -> Iterator[tuple[str, Any]]:
        """For a worker thread, what to show of the recording, in order: ("glance", EndView) — a big log:
        its tail's state while the index is checked, or built (progress in `describe`);
        ("end", EndView) — the run's end, milestones and all; through the index, ("log", DiskEventLog) —
        every event navigable, the older ones read from disk; ("history", (RunState, EventLog)) — the
        panes' whole history behind it.
        A multi-rank run is merged and decoded as before (its ranks have one index each)."""
        files = self.reader.files
        index = None
        if not isinstance(self.reader, MergedLogReader):
            if self.total_bytes >= GLANCE_BYTES:  # even a saved index takes a second to check at 10M events
                self.via_index = True
                yield "glance", load_end(files, capacity, milestones=False)
            try:
                index = open_index(self.path, progress=self.index_progress)
            except (OSError, ValueError):  # e.g. a segment vanished mid-build: read it the plain way
                index = None
            self.via_index = index is not None
        if index is None:
            yield "end", load_end(files, capacity)
            result = load_all(iter(self.reader), capacity, cancelled=cancelled)
            if result is not None:
                yield "history", result
            return
        self.unreadable = index.unreadable()
        yield "end", end_from_index(index, capacity)
        log = indexed_log(index, capacity, cancelled=cancelled)
        if log is None:
            return
        yield "log", log  # every event navigable now; the panes' history follows
        state = history_state(log, cancelled=cancelled, progress=self._history_progress)
        if state is not None:
            yield "history", (state, log)

    def loaded(self) -> None:
        """The monitor read the whole file itself (end first, kbert_tui.state.replay_load)."""
        self._done = True

    # -- controls (called from the UI thread) -------------------------------------------------------
    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        self._wake.set()
        return self.paused

    def step(self, count: int = 1) -> None:
        """While paused, let `count` more events through."""
        self._steps += count
        self._wake.set()

    def set_speed(self, speed: float | None) -> None:
        self.speed = speed
        self._wake.set()

    # -- the thread ---------------------------------------------------------------------------------
    def _run(self, inbox: deque[Event]) -> None:
        try:
            self._pump(inbox)
        except Exception as exc:  # an unreadable segment mid-way: say so, keep what we have
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._done = True

    def _pump(self, inbox: deque[Event]) -> None:
        batch: list[Event] = []
        anchor_wall = anchor_ts = None
        anchor_speed = self.speed
        for event in self.reader:
            if self._stop.is_set():
                return
            self.read += 1
            if self.speed is None and not self.paused:
                batch.append(event)
                if len(batch) >= self.BATCH:
                    self._deliver(inbox, batch)
                    batch = []
                continue
            if batch:
                self._deliver(inbox, batch)
                batch = []
            # paced or paused: one event at a time
            ts = event.timestamp.timestamp()
            while not self._stop.is_set():
                if self.paused:
                    if self._steps > 0:
                        self._steps -= 1
                        anchor_wall = None
                        break
                    self._wake.wait(0.1)
                    self._wake.clear()
                    anchor_wall = None
                    continue
                if self.speed is None:
                    break
                if anchor_wall is None or anchor_speed != self.speed:
                    anchor_wall, anchor_ts, anchor_speed = time.monotonic(), ts, self.speed
                due = anchor_wall + (ts - anchor_ts) / self.speed  # type: ignore[operator]
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                self._wake.wait(min(wait, 0.1))
                self._wake.clear()
            inbox.append(event)
        if batch:
            self._deliver(inbox, batch)

    def _deliver(self, inbox: deque[Event], batch: list[Event]) -> None:
        while len(inbox) > self.MAX_BACKLOG and not self._stop.is_set():
            time.sleep(0.005)
        inbox.extend(batch)


class LiveSource(EventSource):
    """Runs training: creates the RunSession on the app's loop and forwards its bus to the inbox."""

    owns_run = True
    controllable = True

    def __init__(self, config: Any, *, output_dir: str | os.PathLike[str] | None = None,
                 session_factory: Any = None) -> None:
        self.config = config
        self.output_dir = output_dir
        self.session_factory = session_factory  # (config, output_dir) -> a RunSession (`watch`: its child's)
        self.session: Any = None
        self.outcome: str | None = None
        self.error: str | None = None
        self._closed = False

    async def start(self, inbox: deque[Event]) -> None:
        from kbert_tui.session import RunSession

        output_dir = None if self.output_dir is None else Path(self.output_dir)
        self.session = (self.session_factory or RunSession)(self.config, output_dir=output_dir)
        self.events_path = Path(self.session.events_path)
        earlier = self.session.earlier_events()  # a resumed run: its story so far, read before it is appended to
        await self.session.start()
        bus = self.session.bus
        # Plugins and the sampler emit during start(): take those from the bus's history, then
        # everything after from the subscription (no await in between; ids guard the seam).
        early: set[str] = set()
        append = inbox.append

        def forward(event: Event) -> None:
            if event.id not in early:
                append(event)

        self._sub = bus.subscribe_sync("*", forward)
        inbox.extend(earlier)
        backfill = bus.history
        early.update(event.id for event in backfill)
        inbox.extend(backfill)

    async def wait(self) -> str:
        self.outcome = await self.session.wait()
        return self.outcome

    @property
    def bus(self) -> Any:
        return None if self.session is None else self.session.bus

    async def emit_control(self, name: str, data: dict[str, Any]) -> None:
        if self.session is None:
            return
        await self.session.bus.emit(name, data, source="tui", correlation_id=self.session.run_id)

    async def close(self) -> None:
        if self._closed or self.session is None:
            return
        self._closed = True
        await self.session.close()

    def abandon(self, timeout: float = 60.0) -> None:
        """After the app's loop is gone without `close()` (a crash): stop the worker thread anyway."""
        session = self.session
        if self._closed or session is None or session.worker is None or not session.worker.alive:
            return
        session.worker.control.request_stop("monitor exited", "tui")
        session.worker.join(timeout)

    def describe(self) -> str:
        where = f" → {self.events_path}" if self.events_path else ""
        return f"live{where}"
