"""Following an event log that another process is still writing, across its rotations.

`LogFollower.read_lines()` returns every complete line written since the last call (never blocks):
first the rotated segments and the active file as they are (the history), then whatever the writer
appends. Rotation (`events.jsonl` renamed to `events.N.jsonl`, a new `events.jsonl` started) is
noticed by inode, so no line is read twice or skipped, even when several rotations happen between
two calls. A line is delivered only once its newline is on disk; `position` counts delivered lines.

A file cut back in place (truncated, then written again: same inode) is noticed by its size or by the
bytes just before the read position no longer being the ones read there; it is then read again from
its start, counted in `truncations` and described in `notice`.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import BinaryIO

from ._codec import decode_lines  # the shared bulk decoder; re-exported here for the readers that follow a log
from ._event import Event
from .store import segment_paths

__all__ = ["LogFollower", "decode_lines"]

_CHUNK = 1 << 20
_FINGERPRINT = 1 << 16  # at most this much before the read position must still be there for the file not to be cut


class LogFollower:
    """Reads a (rotated) JSONL log from its oldest segment, or from its end, and keeps up with it."""

    def __init__(self, path: str | os.PathLike[str], *, from_end: bool = False) -> None:
        self.path = Path(path)
        self.position = 0  # complete, non-blank lines delivered so far
        self.bytes_read = 0
        self.rotations = 0  # rotations noticed while following the active file
        self.malformed = 0
        self.first_error: str | None = None
        self.truncations = 0  # times the file being read was cut back in place and read again from its start
        self.notice: str | None = None  # what happened at the last truncation, for the user
        self._seen_tail = b""  # the last bytes read from the open file, ending at its read position
        self._done: set[tuple[int, int]] = set()  # (device, inode) of files read to their final end
        self._fh: BinaryIO | None = None
        self._key: tuple[int, int] | None = None
        self._partial = b""
        self._ready: deque[bytes] = deque()
        if from_end:
            self._skip_existing()

    # -- public ------------------------------------------------------------------------------------
    def read_lines(self, limit: int | None = None) -> list[bytes]:
        """Every complete, non-blank line (stripped) written since the last call, at most `limit`."""
        want = limit if limit is not None else float("inf")
        while len(self._ready) < want and self._fill():
            pass
        ready = self._ready
        count = len(ready) if limit is None else min(limit, len(ready))
        out = [ready.popleft() for _ in range(count)]
        self.position += count
        return out

    def read_events(self, limit: int | None = None) -> list[Event]:
        """Like `read_lines`, decoded; malformed lines are skipped and counted."""
        lines = self.read_lines(limit)
        events, problems = decode_lines(lines)
        self.malformed += len(problems)
        if problems and self.first_error is None:
            index, reason = problems[0]
            self.first_error = f"line {self.position - len(lines) + index + 1} of the log: {reason}"
        return events

    @property
    def caught_up(self) -> bool:
        """True when the last read reached the end of what is on disk."""
        return not self._ready

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Read one more chunk into `_ready`; False when nothing more is on disk for now."""
        if self._fh is None and not self._open_next():
            return False
        fh = self._fh
        assert fh is not None
        if self._was_cut(fh):
            self._read_again(fh)
        chunk = fh.read(_CHUNK)
        if chunk:
            self._take(chunk)
            return True
        if self._still_active():
            return False  # the writer has not written more yet
        # This file is final (rotated away, or a segment): read what was added before the rename.
        while chunk := fh.read(_CHUNK):
            self._take(chunk)
        self._finish_file()
        return True

    def _was_cut(self, fh: BinaryIO) -> bool:
        """Was the open file truncated in place since we read it (even if written past that point again)?"""
        offset = fh.tell()
        if not offset:
            return False
        if os.fstat(fh.fileno()).st_size < offset:
            return True
        seen = self._seen_tail
        return os.pread(fh.fileno(), len(seen), offset - len(seen)) != seen

    def _read_again(self, fh: BinaryIO) -> None:
        offset = fh.tell()
        size = os.fstat(fh.fileno()).st_size
        self.truncations += 1
        dropped = f"; an unfinished line of {len(self._partial):,} bytes was dropped" if self._partial else ""
        self.notice = (f"{self.path.name} was truncated in place after {offset:,} bytes had been read "
                       f"(now {size:,} bytes): reading it again from its start; lines written just before the cut "
                       f"may be missing, and up to {min(size, offset):,} bytes may be read twice{dropped}")
        self._partial = b""
        self._seen_tail = b""
        fh.seek(0)

    def _take(self, chunk: bytes) -> None:
        self.bytes_read += len(chunk)
        data = self._partial + chunk
        last = data.rfind(b"\n")  # remember from the start of the last whole line (it holds an id, a time)
        start = data.rfind(b"\n", 0, last) + 1 if last > 0 else 0
        self._seen_tail = (data if last >= 0 else self._seen_tail + chunk)[start if last >= 0 else 0:][-_FINGERPRINT:]
        lines = data.split(b"\n")
        self._partial = lines.pop()
        ready = self._ready
        for line in lines:
            stripped = line.strip()
            if stripped:
                ready.append(stripped)

    def _finish_file(self) -> None:
        # A final file's last line without a newline (a writer that died mid-line) still counts.
        tail = self._partial.strip()
        if tail:
            self._ready.append(tail)
        self._partial = b""
        self._seen_tail = b""
        assert self._fh is not None and self._key is not None
        self._done.add(self._key)
        self._fh.close()
        self._fh = None
        self._key = None

    def _open_next(self) -> bool:
        """Open the oldest file of the log not yet read to its end; False if there is none (yet)."""
        while True:
            opened = self._open_first_unread()
            if opened is None:
                return False
            fh, key = opened
            # A rotation while we listed may have left an older segment unread: it must come first.
            if self._first_unread_key() in (key, None):
                self._fh, self._key = fh, key
                return True
            fh.close()

    def _open_first_unread(self) -> tuple[BinaryIO, tuple[int, int]] | None:
        for candidate in segment_paths(self.path):
            try:
                fh = open(candidate, "rb")
            except FileNotFoundError:
                continue  # rotated between listing and opening: it shows up under its new name next time
            st = os.fstat(fh.fileno())
            key = (st.st_dev, st.st_ino)
            if key in self._done:
                fh.close()
                continue
            return fh, key
        return None

    def _first_unread_key(self) -> tuple[int, int] | None:
        for candidate in segment_paths(self.path):
            try:
                st = os.stat(candidate)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key not in self._done:
                return key
        return None

    def _still_active(self) -> bool:
        """Is the open file still the log's active file (so more may be appended to it)?"""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == self._key:
            return True
        if st is not None or self._was_rotated():
            self.rotations += 1
            return False
        return True  # no active file and ours is not a segment: deleted? keep what we have open

    def _was_rotated(self) -> bool:
        for segment in segment_paths(self.path):
            try:
                st = os.stat(segment)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) == self._key and segment != self.path:
                return True
        return False

    def _skip_existing(self) -> None:
        files = segment_paths(self.path)
        for file in files[:-1] if files and files[-1] == self.path else files:
            try:
                st = os.stat(file)
            except FileNotFoundError:
                continue
            self._done.add((st.st_dev, st.st_ino))
        if self.path.exists() and self._open_next():
            assert self._fh is not None
            end = self._fh.seek(0, os.SEEK_END)
            self._seen_tail = os.pread(self._fh.fileno(), min(end, _FINGERPRINT), max(0, end - _FINGERPRINT))
