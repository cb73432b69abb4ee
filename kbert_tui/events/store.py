"""The JSONL event log: a background writer with size-based rotation, and a tolerant reader.

Layout on disk for ``events.jsonl``::

    events.1.jsonl   oldest rotated segment
    events.2.jsonl   ...
    events.jsonl     the active file, newest events

A line is never split across segments; reopening appends; readers skip malformed lines and count them.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ._codec import MalformedLine, decode_event, encode_event_bytes
from ._event import Event

__all__ = ["JsonlStore", "EventLogReader", "read_events", "segment_paths"]

_BATCH = 4096


def segment_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Every file of the log whose active file is `path`, oldest first (rotated segments, then `path`)."""
    active = Path(path)
    stem, suffix = active.stem, active.suffix
    pattern = re.compile(re.escape(stem) + r"\.(\d+)" + re.escape(suffix) + r"$")
    numbered: list[tuple[int, Path]] = []
    if active.parent.is_dir():
        for entry in active.parent.iterdir():
            m = pattern.match(entry.name)
            if m and entry.is_file():
                numbered.append((int(m.group(1)), entry))
    numbered.sort()
    files = [p for _, p in numbered]
    if active.exists():
        files.append(active)
    return files


class EventLogReader:
    """Iterates the events of a log (all its segments, oldest first); counts lines it had to skip."""

    def __init__(self, path: str | os.PathLike[str], *, include_segments: bool = True) -> None:
        self.path = Path(path)
        self.files = segment_paths(self.path) if include_segments else [self.path]
        self.malformed = 0
        self.lines = 0
        self.bytes_read = 0
        self.first_error: str | None = None

    def _lines(self) -> Iterator[tuple[Path, int, bytes]]:
        for file in self.files:
            with open(file, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    self.bytes_read += len(line)
                    stripped = line.strip()
                    if stripped:
                        self.lines += 1
                        yield file, lineno, stripped

    def raw_lines(self) -> Iterator[bytes]:
        """Yield each non-blank line (bytes, stripped) of every segment, oldest first."""
        for _, _, line in self._lines():
            yield line

    def skip(self, reason: str, where: str = "") -> None:
        """Count a line that could not be read; the first reason is kept for messages."""
        self.malformed += 1
        if self.first_error is None:
            self.first_error = f"{where}: {reason}" if where else reason

    def __iter__(self) -> Iterator[Event]:
        for file, lineno, line in self._lines():
            try:
                yield decode_event(line)
            except MalformedLine as exc:
                self.skip(str(exc), f"{file.name}:{lineno}")


def read_events(path: str | os.PathLike[str], *, include_segments: bool = True) -> EventLogReader:
    """Open the event log at `path` for reading (raises FileNotFoundError if it doesn't exist)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such events file: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory, not an events file")
    return EventLogReader(p, include_segments=include_segments)


_live_stores: weakref.WeakSet[JsonlStore] = weakref.WeakSet()


@atexit.register
def _close_live_stores() -> None:
    for store in list(_live_stores):
        store.close()


class JsonlStore:
    """Appends events to a JSONL file from a background thread, rotating by size.

    `append` is cheap and thread-safe; encoding and writing happen in batches on the writer thread.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_file_size_mb: float = 100.0) -> None:
        if max_file_size_mb <= 0:
            raise ValueError("max_file_size_mb must be positive")
        self.path = Path(path)
        self.max_bytes = max(1, int(max_file_size_mb * 1024 * 1024))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._cond = threading.Condition()
        self._enqueued = 0
        self._written = 0
        self._closed = False
        self.rotations = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._file = self._open_active()
        self._thread = threading.Thread(target=self._run, name=f"event-log-writer:{self.path.name}", daemon=True)
        self._thread.start()
        _live_stores.add(self)

    # -- producer side -------------------------------------------------------------------------
    def append(self, event: Event) -> None:
        if self._closed:
            raise RuntimeError(f"event log {self.path} is closed")
        self._queue.append(event)
        self._enqueued += 1
        if self._idle:
            self._wake.set()

    @property
    def pending(self) -> int:
        return self._enqueued - self._written

    @property
    def written(self) -> int:
        return self._written

    def wait_written(self, target: int | None = None, timeout: float | None = None) -> bool:
        """Block until `target` events (default: all appended so far) are on disk."""
        goal = self._enqueued if target is None else target
        with self._cond:
            if self._written < goal:
                self._wake.set()
            return self._cond.wait_for(lambda: self._written >= goal or not self._thread.is_alive(), timeout)

    def close(self) -> None:
        """Write everything appended so far, then stop the writer and close the file (idempotent)."""
        if self._closed:
            return
        self.wait_written()
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        try:
            self._file.close()
        except OSError:
            pass
        _live_stores.discard(self)

    # -- writer thread -------------------------------------------------------------------------
    def _open_active(self):
        fh = open(self.path, "ab")
        size = fh.tell()
        if size:
            with open(self.path, "rb") as check:
                check.seek(size - 1)
                if check.read(1) != b"\n":
                    fh.write(b"\n")  # the previous writer died mid-line: keep the next line whole
                    size += 1
        self._size = size
        existing = segment_paths(self.path)[:-1] if self.path.exists() else []
        self._next_segment = 1 + max((int(p.suffixes[-2][1:]) for p in existing), default=0)
        return fh

    def _rotate(self) -> None:
        self._file.close()
        target = self.path.with_name(f"{self.path.stem}.{self._next_segment}{self.path.suffix}")
        os.replace(self.path, target)
        self._next_segment += 1
        self.rotations += 1
        self._file = open(self.path, "ab")
        self._size = 0

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.clear()
            self._idle = True
            if not queue:
                if self._closed:
                    break
                self._wake.wait(0.5)
            self._idle = False
            while queue:
                batch: list[Event] = []
                pop = queue.popleft
                for _ in range(min(_BATCH, len(queue))):
                    batch.append(pop())
                self._write_batch(batch)
                with self._cond:
                    self._written += len(batch)
                    self._cond.notify_all()
            if self._closed and not queue:
                break
        with self._cond:
            self._cond.notify_all()

    def _write_batch(self, batch: list[Event]) -> None:
        chunks: list[bytes] = []
        size = self._size
        limit = self.max_bytes
        for event in batch:
            line = encode_event_bytes(event)
            if size and size + len(line) > limit:
                self._write(chunks)
                chunks = []
                self._rotate()
                size = 0
            chunks.append(line)
            size += len(line)
        self._write(chunks)
        self._size = size

    def _write(self, chunks: list[bytes]) -> None:
        if not chunks:
            return
        try:
            self._file.write(b"".join(chunks))
            self._file.flush()
        except OSError as exc:
            self.write_errors += 1
            self.last_error = str(exc)
