"""The JSONL event log: a background writer with size-based rotation, and a tolerant reader.

Layout on disk for ``events.jsonl``::

    events.1.jsonl   oldest rotated segment
    events.2.jsonl   ...
    events.jsonl     the active file, newest events

A line is never split across segments; reopening appends; readers skip malformed lines and count them.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import socket
import stat
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._codec import decode_lines, encode_event_bytes
from ._event import Event
from . import catalog as ev

if TYPE_CHECKING:
    from .index import IndexAppender

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, one writer per log is up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = ["JsonlStore", "EventLogReader", "PersistenceError", "read_events", "segment_paths"]

_BLOCK = 1 << 20  # bytes a reader takes at a time
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_LINGER_S = 0.001  # how long the writer lets lines gather after a wake-up...
_LINGER_LINES = 1024  # ...unless this many are already waiting


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

    def _blocks(self) -> Iterator[tuple[Path, int, list[bytes]]]:
        """(file, number of the first line, its lines unstripped) for each ~1 MB of the log, lines whole."""
        for file in self.files:
            lineno = 1
            rest = b""
            with open(file, "rb") as fh:
                while block := fh.read(_BLOCK):
                    self.bytes_read += len(block)
                    parts = (rest + block).split(b"\n")
                    rest = parts.pop()
                    yield file, lineno, parts
                    lineno += len(parts)
            if rest:
                yield file, lineno, [rest]

    def chunks(self) -> Iterator[list[bytes]]:
        """The non-blank lines (bytes, stripped) of every segment, oldest first, ~1 MB at a time."""
        for _, _, parts in self._blocks():
            lines = list(filter(None, map(bytes.strip, parts)))
            self.lines += len(lines)
            yield lines

    def raw_lines(self) -> Iterator[bytes]:
        """Yield each non-blank line (bytes, stripped) of every segment, oldest first."""
        for lines in self.chunks():
            yield from lines

    def skip(self, reason: str, where: str = "") -> None:
        """Count a line that could not be read; the first reason is kept for messages."""
        self.malformed += 1
        if self.first_error is None:
            self.first_error = f"{where}: {reason}" if where else reason

    def event_chunks(self) -> Iterator[list[Event]]:
        """The events of the log ~1 MB at a time (decoded in bulk); unreadable lines are counted."""
        for file, first, parts in self._blocks():
            lines = list(filter(None, map(bytes.strip, parts)))
            self.lines += len(lines)
            events, problems = decode_lines(lines)
            if problems:
                numbers = [first + i for i, part in enumerate(parts) if part.strip()]
                for index, reason in problems:
                    self.skip(reason, f"{file.name}:{numbers[index]}")
            yield events

    def __iter__(self) -> Iterator[Event]:
        for events in self.event_chunks():
            yield from events


def read_events(path: str | os.PathLike[str], *, include_segments: bool = True) -> EventLogReader:
    """Open the event log at `path` for reading (raises FileNotFoundError if it doesn't exist)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"no such events file: {p}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{p} is a directory, not an events file")
    if not stat.S_ISREG(mode):  # a device or a FIFO may never end: reading it would only grow
        raise OSError(errno.EINVAL, f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'a special file')})")
    return EventLogReader(p, include_segments=include_segments)


_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a named pipe",
          stat.S_IFSOCK: "a socket"}


_live_stores: weakref.WeakSet[JsonlStore] = weakref.WeakSet()


@atexit.register
def close_live_stores(timeout: float = 5.0) -> None:
    """Write out and close every open event log (at exit, or before a forced exit)."""
    for store in list(_live_stores):
        store.close(timeout=timeout)


class PersistenceError(RuntimeError):
    """Events were accepted but could not be written (or not yet): the message says how many, where and why."""


StatusCallback = Callable[[str, dict[str, Any]], None]


class JsonlStore:
    """Appends events to a JSONL file from a background thread, rotating by size.

    `append`/`append_line` are cheap and thread-safe: a line is queued and the writer thread puts it
    on disk within milliseconds, whatever the caller's event loop is doing. A failing disk is retried
    with backoff; nothing is counted as written until its whole line is in the file, and a line is
    never left torn. Events given up on (at `close` while the disk still fails, or past
    `max_pending` queued during a failure) are counted in `lost`, with the reason in `last_error`.
    `on_status(name, data)` hears `bus.persistence_failed` / `bus.persistence_recovered` from the
    writer thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_file_size_mb: float = 100.0,
        on_status: StatusCallback | None = None,
        max_pending: int = 500_000,
        append_lock: threading.Lock | None = None,
        index: bool = True,
    ) -> None:
        if max_file_size_mb <= 0:
            raise ValueError("max_file_size_mb must be positive")
        self.path = Path(path)
        self.max_bytes = max(1, int(max_file_size_mb * 1024 * 1024))
        self.max_pending = max_pending
        self.on_status = on_status
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: deque[bytes] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._cond = threading.Condition()
        self._append_lock = append_lock or threading.Lock()  # a bus passes the lock it admits events under
        self._enqueued = 0
        self._written = 0
        self._lost = 0
        self._closing = False
        self._closed = False
        self._give_up_at: float | None = None  # set by close(timeout): retries end there
        self.rotations = 0
        self.failed_writes = 0  # write attempts that raised (each retried)
        self.failing = False
        self.last_error: str | None = None
        self._failure_started_lost = 0
        self._fd: int | None = None
        self._size = 0
        self._lock_fd: int | None = None
        self._keep_index = index
        self._index: IndexAppender | None = None
        self._open_active()
        self._thread = threading.Thread(target=self._run, name=f"event-log-writer:{self.path.name}", daemon=True)
        self._thread.start()
        _live_stores.add(self)

    # -- producer side -------------------------------------------------------------------------
    def append(self, event: Event) -> None:
        """Queue `event` (encoded here, so later changes to its data can't reach the log)."""
        self.append_line(encode_event_bytes(event))

    def append_line(self, line: bytes) -> None:
        """Queue one encoded line (ending in a newline). Thread-safe."""
        with self._append_lock:
            self.append_line_locked(line)

    def append_line_locked(self, line: bytes) -> None:
        """`append_line` for a caller that holds the `append_lock` it gave the store."""
        if not self.append_line_open(line):
            raise RuntimeError(f"event log {self.path} is closed")

    def append_line_open(self, line: bytes) -> bool:
        """`append_line_locked`, False (nothing queued) once the store is closing."""
        if self._closing:
            return False
        self._queue.append(line)
        self._enqueued += 1
        if self.failing and len(self._queue) > self.max_pending:
            self._shed()
        if self._idle:
            self._idle = False  # one wake-up per idle writer, not one per line
            self._wake.set()
        return True

    def _shed(self) -> None:
        # The disk keeps failing and the backlog is at its cap: give up the oldest, counted.
        with self._cond:
            while len(self._queue) > self.max_pending:
                try:
                    self._queue.popleft()
                except IndexError:
                    break
                self._lost += 1
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Events queued and not yet on disk (nor given up)."""
        return self._enqueued - self._written - self._lost

    @property
    def written(self) -> int:
        """Events whose whole line is in the file."""
        return self._written

    @property
    def lost(self) -> int:
        """Events accepted but given up on (see `last_error` for why)."""
        return self._lost

    @property
    def accepted(self) -> int:
        """Events handed to the store so far."""
        return self._enqueued

    def wait_written(self, target: int | None = None, timeout: float | None = None) -> bool:
        """Block until `target` events (default: all appended so far) are settled: on disk or given up.

        Returns False on timeout, and at once (False) while the disk is failing: the caller then
        reports `pending` and `last_error` instead of hanging.
        """
        goal = self.accepted if target is None else target
        with self._cond:
            if self._written + self._lost < goal:
                self._wake.set()
            return self._cond.wait_for(
                lambda: self._written + self._lost >= goal or self.failing or not self._thread.is_alive(), timeout
            ) and self._written + self._lost >= goal

    def close(self, timeout: float | None = 10.0) -> None:
        """Write everything appended so far, then stop the writer and close the file (idempotent).

        While the disk fails, retries go on until `timeout`; what is still unwritten then is counted
        in `lost`. Never leaves a torn line behind.
        """
        if self._closing:
            if self._thread.is_alive() and threading.current_thread() is not self._thread:
                self._thread.join(timeout)
            return
        self._give_up_at = None if timeout is None else time.monotonic() + timeout
        self._closing = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(None if timeout is None else timeout + 1.0)
        _live_stores.discard(self)

    # -- writer thread -------------------------------------------------------------------------
    def _open_active(self) -> None:
        try:
            fd = _open_append(self.path)
        except _NotRegularFile as exc:
            raise PersistenceError(
                f"{self.path} is not a regular file ({exc.kind}): the event log must be a file"
            ) from None
        try:
            self._lock_fd = _hold_writer_lock(self.path)  # before the repair below: the holder may be mid-line
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as check:
                    check.seek(size - 1)
                    if check.read(1) != b"\n":
                        os.write(fd, b"\n")  # the previous writer died mid-line: keep the next line whole
                        size += 1
        except BaseException:
            os.close(fd)
            _release_writer_lock(self.path, self._lock_fd)
            raise
        self._fd = fd
        self._size = size
        self._index = _start_index(self.path) if self._keep_index else None
        existing = segment_paths(self.path)[:-1]
        self._next_segment = 1 + max((_segment_number(self.path, p) for p in existing), default=0)

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        target = self.path.with_name(f"{self.path.stem}.{self._next_segment}{self.path.suffix}")
        if self.path.exists():
            os.replace(self.path, target)
            if self._index is not None:
                self._index.rotated(target)
            self._next_segment += 1
            self.rotations += 1
        self._fd = _open_append(self.path)
        self._size = 0
        self._index = _start_index(self.path) if self._keep_index else None

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                self._idle = True
                if not self._queue:
                    if self._closing:
                        break
                    self._wake.wait(0.5)
                self._idle = False
                if len(self._queue) < _LINGER_LINES and not self._closing:
                    time.sleep(_LINGER_S)  # let a burst gather: one wake-up and one write per batch, not per line
                while self._queue:
                    with self._append_lock:  # take everything queued at once: producers go on with a new deque
                        batch, self._queue = self._queue, deque()
                    written = self._write_batch(batch)
                    with self._cond:
                        self._written += written
                        self._lost += len(batch) - written
                        self._cond.notify_all()
                if self._closing and not self._queue:
                    break
        finally:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
                self._fd = None
            if self._index is not None:
                self._index.close()
            _release_writer_lock(self.path, self._lock_fd)
            self._lock_fd = None
            self._closed = True
            with self._cond:
                self._cond.notify_all()

    def _write_batch(self, batch: deque[bytes]) -> int:
        """Write `batch`, rotating where needed; returns how many lines reached the file."""
        if self._size + sum(map(len, batch)) <= self.max_bytes:  # the usual case: no rotation inside
            return len(batch) if self._commit(batch) else 0
        lines = list(batch)
        done = 0
        start = 0
        size = self._size
        limit = self.max_bytes
        for i, line in enumerate(lines):
            if size and size + len(line) > limit:
                if not self._commit(lines[start:i]):
                    return done
                done += i - start
                start = i
                if not self._retry(self._rotate):
                    return done
                size = 0
            size += len(line)
        if self._commit(lines[start:]):
            done += len(lines) - start
        return done

    def _commit(self, lines: list[bytes] | deque[bytes]) -> bool:
        """Append `lines` whole, retrying until they are in; False (and the file unchanged) if given up."""
        if not lines:
            return True
        data = b"".join(lines)
        base = self._size
        offset = 0

        def attempt() -> None:
            nonlocal offset
            if self._fd is None:
                self._fd = _open_append(self.path)
            view = memoryview(data)
            while offset < len(data):
                offset += os.write(self._fd, view[offset:])

        if self._retry(attempt):
            self._size = base + len(data)
            if self._index is not None:
                self._index.add(data, base, list(map(len, lines)))  # after the lines are in: never ahead of the log
            return True
        # Given up: cut back whatever part of these lines made it, so no line is left torn.
        if offset and self._fd is not None:
            try:
                os.ftruncate(self._fd, base)
            except OSError:
                pass
        return False

    def _retry(self, operation: Callable[[], None]) -> bool:
        """Run `operation` until it succeeds, backing off; False once `close` says to give up."""
        delay = 0.05
        while True:
            try:
                operation()
            except OSError as exc:
                if exc.errno in _DISK_FULL and self._index is not None:  # the log comes first: free the index's space
                    self._index.fail(f"dropped: {exc.strerror or exc} (the log needs the space)")
                    self._index = None
                    continue
                self.failed_writes += 1
                self._failed(exc)
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    return False
                wait = delay if self._give_up_at is None else max(0.0, min(delay, self._give_up_at - time.monotonic()))
                time.sleep(wait)
                delay = min(delay * 2, 2.0)
                continue
            if self.failing:
                self._recovered()
            return True

    def _failed(self, exc: OSError) -> None:
        self.last_error = f"{self.path}: {exc.strerror or exc}"
        if self.failing:
            return
        self.failing = True
        self._failure_started_lost = self._lost
        with self._cond:
            self._cond.notify_all()  # wake wait_written: it reports instead of hanging
        self._report(ev.BUS_PERSISTENCE_FAILED, {
            "path": str(self.path), "errno": exc.errno, "error": errno.errorcode.get(exc.errno or 0, ""),
            "message": exc.strerror or str(exc), "pending": self.pending,
        })

    def _recovered(self) -> None:
        self.failing = False
        self._report(ev.BUS_PERSISTENCE_RECOVERED, {
            "path": str(self.path), "lost": self._lost - self._failure_started_lost, "pending": self.pending,
        })

    def _report(self, name: str, data: dict[str, Any]) -> None:
        if self.on_status is not None:
            try:
                self.on_status(name, data)
            except Exception:  # noqa: BLE001 - a report must never stop the writer
                pass


def _start_index(path: Path) -> IndexAppender | None:
    from .index import IndexAppender  # numpy and Arrow load with the first log written, not with the package

    return IndexAppender.start(path)


class _NotRegularFile(OSError):
    """The log's path names a FIFO, a device, a directory...: writing there would hang or go nowhere."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", str(path))
        self.kind = kind


def _open_append(path: Path) -> int:
    """The log file opened for appending; refuses anything but a regular file (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except IsADirectoryError:
        raise _NotRegularFile(path, "a directory") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise _NotRegularFile(path, _KINDS[stat.S_IFIFO]) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _NotRegularFile(path, _KINDS.get(stat.S_IFMT(mode), "a special file"))
    return fd


def _hold_writer_lock(path: Path) -> int | None:
    """Take the advisory lock `<log>.lock` that makes this store the log's one writer (two would lose events
    at rotation). The kernel drops it when the process dies, so a crashed writer never blocks the next."""
    if fcntl is None:
        return None
    lock_path = _lock_path(path)
    for _ in range(10):  # the holder may remove the file between our open and our flock: then anew
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return None  # a directory we can't create files in fails at the log itself, with its own message
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise PersistenceError(
                f"event log {path} is already being written by {holder} (lock {lock_path.name}); a second "
                f"writer would lose events when the log rotates: close the other event bus or use another path"
            ) from None
        except OSError:  # a file system without flock: go on unlocked, as before
            os.close(fd)
            return None
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:  # locked a file its holder had just removed
            os.close(fd)
            continue
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
        return fd
    return None


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _release_writer_lock(path: Path, fd: int | None) -> None:
    """Remove the lock file, then let go of it (a newcomer that opened the old file sees it gone and retries)."""
    if fd is None:
        return
    try:
        os.unlink(_lock_path(path))
    except OSError:
        pass
    try:
        os.close(fd)  # closing the descriptor releases the flock
    except OSError:
        pass


def _segment_number(active: Path, segment: Path) -> int:
    match = re.match(re.escape(active.stem) + r"\.(\d+)" + re.escape(active.suffix) + r"$", segment.name)
    return int(match.group(1)) if match else 0
