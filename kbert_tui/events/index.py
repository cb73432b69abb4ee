"""The index beside an event log: one row per line, in columns numpy maps without a Python loop.

For ``events.jsonl`` it is the folder ``events.jsonl.idx/`` (each rotated segment has its own):

    meta.json        {"format": 1, "first_line": blake2b of the log's first line}
    names.jsonl      one JSON string per line: the event names; a row's `name` is 1 + a line number here
    offset.u64 length.u32 name.u32 time.i64 step.i64 epoch.i32 corr.u64
                     the columns (little-endian, no header): `np.fromfile("offset.u64", "<u8")`

It is derived data, never trusted: `open_index` checks it against the log (the first line, offsets
that only grow, the last rows' lines re-read and re-indexed) and rebuilds it when it is damaged or
belongs to another file, completes it when it is behind (a writer killed between the log and the
index), and indexes in memory whatever a live writer has not indexed yet. A log written by another
tool gets its index built on first open (`index_block`: Arrow reads the JSON), saved beside the log,
or under the cache directory when the log's folder is read-only.

`JsonlStore` keeps the index of the file it writes as it writes (`IndexAppender`), so opening a
finished run costs one look at the columns. `open_index` gives a whole log's `LogIndex` (_log_index.py):
rows narrowed by their columns, their lines read back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
import numpy as np

from ._log_index import LogIndex
from ._index_build import COLUMNS, NO_EPOCH, NO_VALUE, Columns, NameTable, index_block

__all__ = ["BuildProgress", "IndexAppender", "LogIndex", "NO_EPOCH", "NO_VALUE", "SegmentIndex", "cache_root",
           "index_dir", "open_index", "open_segment"]

FORMAT = 1
_SUFFIX = {key: {"<u8": "u64", "<u4": "u32", "<i8": "i64", "<i4": "i32"}[dtype.str] for key, dtype in COLUMNS.items()}
_BUILD_BLOCK = 16 << 20  # bytes indexed at a time when building: Arrow gets enough to use its threads
_GATHER_BYTES = 4 << 20  # the writer indexes its lines this many bytes at a time...
_GATHER_S = 0.25  # ...or once the oldest gathered line is this old
_SPOT_CHECKS = 8  # rows re-read from the log when an index is opened

BuildProgress = Callable[[int, int], None]  # (bytes indexed, bytes to index)


def cache_root() -> Path:
    """KBERT_TUI_CACHE_DIR, else $XDG_CACHE_HOME/kbert-tui, else ~/.cache/kbert-tui."""
    explicit = os.environ.get("KBERT_TUI_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "kbert-tui"


def index_dir(log: Path) -> Path:
    """Where the index of `log` lives: beside it (``events.jsonl.idx``)."""
    return log.with_name(log.name + ".idx")


def _cached_dir(log: Path) -> Path:
    key = hashlib.blake2b(str(log.resolve()).encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return cache_root() / "index" / f"{log.name}-{key}.idx"


def _column_path(folder: Path, key: str) -> Path:
    return folder / f"{key}.{_SUFFIX[key]}"


def _first_line_key(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def _read_first_line(log: Path) -> bytes | None:
    with open(log, "rb") as fh:
        head = fh.read(1 << 16)
        cut = head.find(b"\n")
        while cut < 0:
            more = fh.read(1 << 16)
            if not more:
                return None  # no whole line yet
            head += more
            cut = head.find(b"\n")
    return head[:cut + 1]


# -- writing ------------------------------------------------------------------------------------------

class IndexAppender:
    """Appends rows for lines as they reach a log: the store's writer thread hands each written block to
    `add`, a thread of its own indexes them (so the log's writes never wait for the index).

    Columns are appended after their lines are in the log, so a crash leaves the index behind the log,
    never ahead; a torn last row (columns of different lengths) is cut back on the next open. Any
    failure to write the index only switches it off (`failed`, and the folder removed): readers then
    rebuild it from the log.
    """

    def __init__(self, log: Path, folder: Path, names: NameTable, rows: int, end: int,
                 saved_names: int | None = None) -> None:
        self.log = log
        self.folder = folder
        self.names = names
        self.rows = rows
        self.end = end  # bytes of the log the index covers
        self._saved_names = len(names) if saved_names is None else saved_names
        self.failed: str | None = None
        for key, dtype in COLUMNS.items():  # cut a row torn by a crash (the columns are read to the shortest)
            path = _column_path(folder, key)
            with open(path, "ab") as fh:
                if fh.tell() != rows * dtype.itemsize:
                    fh.truncate(rows * dtype.itemsize)
        _cut_names(folder / "names.jsonl", self._saved_names)
        self._files = {key: open(_column_path(folder, key), "ab") for key in COLUMNS}
        self._names_file = open(folder / "names.jsonl", "ab")
        self._lock = threading.Lock()  # guards the gathered blocks
        self._indexing = threading.Lock()  # one indexer at a time (the thread, or close)
        self._pending: list[bytes] = []
        self._pending_lengths: list[int] = []
        self._pending_bytes = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._next = end  # where the writer's next block must start

    @classmethod
    def start(cls, log: Path) -> IndexAppender | None:
        """Open (checking, completing, or rebuilding) the index of the log this process is about to write;
        None when no index can be kept there (the log's folder is read-only, the disk is full...)."""
        try:
            if log.exists() and log.stat().st_size:
                segment = open_segment(log, writable=True)
                folder = segment.folder
                if folder is None or folder != index_dir(log):
                    return None
                return cls(log, folder, NameTable(segment.names), len(segment), segment.end)
            folder = index_dir(log)
            _remove(folder)
            folder.mkdir()
            return cls(log, folder, NameTable(), 0, 0)
        except OSError:
            return None

    def add(self, block: bytes, base: int, lengths: list[int]) -> None:
        """Queue `block` (whole lines of `lengths` bytes, just written at offset `base`) for indexing.
        Blocks gather for up to `_GATHER_S` or `_GATHER_BYTES`, then are indexed at once: Arrow's fixed
        cost per call would otherwise dominate a busy writer's small batches."""
        if self.failed is not None:
            return
        with self._lock:
            self._pending.append(block)
            self._pending_lengths.extend(lengths)
            self._pending_bytes += len(block)
            if self._pending_bytes >= _GATHER_BYTES:
                self._wake.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"event-log-indexer:{self.log.name}", daemon=True)
            self._thread.start()
        if base != self._next:
            self.fail(f"lines written at byte {base}, where the index expected byte {self._next}")
        self._next = base + len(block)

    def _run(self) -> None:
        while not self._closing and self.failed is None:
            self._wake.wait(_GATHER_S)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Index the blocks gathered so far."""
        with self._indexing:
            with self._lock:
                if not self._pending or self.failed is not None:
                    return
                block = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
                lengths = self._pending_lengths
                self._pending, self._pending_lengths, self._pending_bytes = [], [], 0
            base = self.end
            try:
                if self.rows == 0 and base == 0:
                    first = block[:block.find(b"\n") + 1]
                    (self.folder / "meta.json").write_bytes(orjson.dumps({"format": FORMAT,
                                                                         "first_line": _first_line_key(first)}))
                self.write(index_block(block, base, self.names, lengths), base + len(block))
            except (OSError, ValueError) as exc:
                self.fail(str(exc))

    def write(self, columns: Columns, end: int) -> None:
        """Append `columns` (rows whose names are in `self.names`), which cover the log up to `end`."""
        if len(self.names) > self._saved_names:  # new names first: a row never names what isn't saved
            self._names_file.write(b"".join(orjson.dumps(n) + b"\n" for n in self.names.names[self._saved_names:]))
            self._names_file.flush()
            self._saved_names = len(self.names)
        for key, fh in self._files.items():
            fh.write(columns.arrays[key].tobytes())
        for fh in self._files.values():
            fh.flush()
        self.rows += len(columns)
        self.end = end

    def fail(self, reason: str) -> None:
        """Stop keeping the index and remove it (readers rebuild it from the log)."""
        with self._lock:
            if self.failed is not None:
                return
            self.failed = reason
            self._pending, self._pending_lengths, self._pending_bytes = [], [], 0
        self._closing = True
        self._wake.set()
        self._close_files()
        _remove(self.folder)

    def close(self) -> None:
        """Index what is gathered, stop the indexing thread, close the files."""
        self._closing = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.flush()
        self._close_files()

    def _close_files(self) -> None:
        for fh in (*self._files.values(), self._names_file):
            try:
                fh.close()
            except (OSError, ValueError):
                pass

    def rotated(self, segment: Path) -> None:
        """The log was renamed to `segment`: its index goes along, under the segment's name."""
        self.close()  # indexes the gathered blocks first: they are in the renamed file
        if self.failed is None:
            try:
                target = index_dir(segment)
                _remove(target)
                os.replace(self.folder, target)
            except OSError:
                _remove(self.folder)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _cut_names(path: Path, count: int) -> None:
    """Keep the first `count` names of a names file (a crash may have torn the one after)."""
    with open(path, "ab+") as fh:
        fh.seek(0)
        data = fh.read()
        keep = 0
        for _ in range(count):
            keep = data.index(b"\n", keep) + 1
        if keep != len(data):
            fh.truncate(keep)


# -- reading ------------------------------------------------------------------------------------------

@dataclass
class SegmentIndex:
    """The index of one file of a log: its columns (memory-mapped), names and what it covers."""

    log: Path
    folder: Path | None  # where it is saved (None: built in memory only)
    names: list[str]
    columns: dict[str, np.ndarray]
    end: int  # bytes of the log covered

    def __len__(self) -> int:
        return len(self.columns["offset"])


def _load_columns(folder: Path, rows: int | None = None) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for key, dtype in COLUMNS.items():
        path = _column_path(folder, key)
        count = path.stat().st_size // dtype.itemsize
        columns[key] = np.memmap(path, dtype, "r", shape=(count,)) if count else np.empty(0, dtype)
    shortest = min(len(c) for c in columns.values()) if rows is None else rows
    return {key: c[:shortest] for key, c in columns.items()}


def _load_names(folder: Path) -> list[str]:
    names = []
    with open(folder / "names.jsonl", "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # torn by a crash: the rows that would use it are cut below
            name = orjson.loads(line)
            if not isinstance(name, str):
                raise ValueError("a name is not a string")
            names.append(name)
    return names


def _trusted(log: Path, folder: Path, size: int, first: bytes | None) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """The saved index of `log` if it checks out against it (else None: rebuild)."""
    try:
        meta = orjson.loads((folder / "meta.json").read_bytes())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or first is None \
                or meta.get("first_line") != _first_line_key(first):
            return None
        columns = _load_columns(folder)  # before the names: a live writer saves a name before rows that use it
        names = _load_names(folder)
    except (OSError, ValueError):
        return None
    offsets, lengths = columns["offset"], columns["length"]
    if len(offsets):
        if int(offsets[0]) != 0 and not _blank(log, 0, int(offsets[0])):
            return None
        if int(offsets[-1]) + int(lengths[-1]) > size or not _ascending(offsets, lengths):
            return None
        if int(columns["name"].max(initial=0)) > len(names):
            return None
        rows = sorted({len(offsets) - 1, *np.linspace(0, len(offsets) - 1, _SPOT_CHECKS).astype(int).tolist()})
        if not _rows_agree(log, columns, names, rows):
            return None
    return names, columns


def _ascending(offsets: np.ndarray, lengths: np.ndarray, chunk: int = 1 << 20) -> bool:
    """Each line starts at or past the end of the one before (checked a chunk at a time: no full copies)."""
    for first in range(0, len(offsets) - 1, chunk):
        starts = offsets[first + 1:first + chunk + 1].astype(np.int64)
        ends = offsets[first:first + len(starts)].astype(np.int64) + lengths[first:first + len(starts)]
        if bool((starts < ends).any()):
            return False
    return True


def _blank(log: Path, start: int, end: int) -> bool:
    with open(log, "rb") as fh:
        fh.seek(start)
        return not fh.read(end - start).strip()


def _rows_agree(log: Path, columns: dict[str, np.ndarray], names: list[str], rows: Iterable[int]) -> bool:
    """Re-index the lines at `rows` from the log: each must give the same row."""
    with open(log, "rb") as fh:
        for row in rows:
            offset, length = int(columns["offset"][row]), int(columns["length"][row])
            fh.seek(offset)
            line = fh.read(length)
            if len(line) != length or not line.endswith(b"\n"):
                return False
            table = NameTable(names)
            fresh = index_block(line, offset, table)
            if len(fresh) != 1 or any(fresh.arrays[key][0] != columns[key][row] for key in COLUMNS) \
                    or len(table) != len(names):
                return False
    return True


def open_segment(log: str | os.PathLike[str], *, writable: bool | None = None,
                 progress: BuildProgress | None = None) -> SegmentIndex:
    """The index of one file, checked; built or completed (and saved where allowed) as needed.

    `writable=None` saves only when no live writer holds the log (its writer keeps the index itself).
    """
    pieces = open_pieces(log, writable=writable, progress=progress)
    if len(pieces) == 1:
        return pieces[0]
    saved, tail = pieces
    columns = Columns.concat([Columns(dict(saved.columns)), Columns(dict(tail.columns))]).arrays
    return SegmentIndex(saved.log, saved.folder, tail.names, columns, tail.end)


def open_pieces(log: str | os.PathLike[str], *, writable: bool | None = None,
                progress: BuildProgress | None = None) -> list[SegmentIndex]:
    """`open_segment` without joining: the saved index (memory-mapped), then, where a live writer has
    lines it has not indexed yet, those rows in memory as a second piece of the same file (joining them
    would copy every column)."""
    path = Path(log)
    size = path.stat().st_size
    first = _read_first_line(path) if size else None
    save = _may_save(path, writable)
    for folder in (index_dir(path), _cached_dir(path)):
        if folder.is_dir():
            trusted = _trusted(path, folder, size, first)
            if trusted is not None:
                names, columns = trusted
                covered = int(columns["offset"][-1]) + int(columns["length"][-1]) if len(columns["offset"]) else 0
                return _complete(SegmentIndex(path, folder, names, columns, covered), size, save, progress)
            if save:
                _remove(folder)
    return _build(path, size, save, progress)


def _may_save(log: Path, writable: bool | None) -> bool:
    if writable is not None:
        return writable
    return not _writer_alive(log)


def _writer_alive(log: Path) -> bool:
    """A store holds the log's writer lock (see store._hold_writer_lock): it keeps the index itself."""
    lock = log.with_name(log.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except ImportError:  # pragma: no cover - no flock: assume a writer may be there
        return True
    finally:
        os.close(fd)


Sink = Callable[[Columns, int], None]  # rows for the log up to a byte, as they are made


def _index_range(path: Path, start: int, stop: int, names: NameTable, progress: BuildProgress | None,
                 whole_lines: bool, sink: Sink | None = None) -> tuple[Columns, int]:
    """Rows for the lines in path[start:stop] (handed to `sink` block by block when given, so memory holds
    one block's rows; else returned); with `whole_lines`, a last line without its newline is left out
    (the end it returns says where indexing stopped)."""
    parts: list[Columns] = []
    if stop <= start:
        return Columns.empty(), start
    with open(path, "rb") as fh:  # read, not mapped: a mapped 3 GB log would count its pages as ours
        position = start
        while position < stop:
            block = os.pread(fh.fileno(), min(_BUILD_BLOCK, stop - position), position)
            cut = block.rfind(b"\n") + 1
            while not cut and position + len(block) < stop:  # a line longer than a block
                more = os.pread(fh.fileno(), min(_BUILD_BLOCK, stop - position - len(block)), position + len(block))
                if not more:
                    break
                cut = more.rfind(b"\n") + 1 and len(block) + more.rfind(b"\n") + 1
                block += more
            if not block:
                break
            if cut and (position + len(block) < stop or whole_lines):
                block = block[:cut]
            elif whole_lines or not cut and position + len(block) < stop:
                break  # only the start of a line no newline ends yet
            rows = index_block(block, position, names)
            if sink is None:
                parts.append(rows)
            else:
                sink(rows, position + len(block))
            position += len(block)
            if progress is not None:
                progress(position, stop)
    return Columns.concat(parts), position


def _build(path: Path, size: int, save: bool, progress: BuildProgress | None) -> list[SegmentIndex]:
    names = NameTable()
    first = _read_first_line(path) if save else None
    saved = _build_saved(path, first, names, progress) if first is not None else None
    if saved is not None:
        folder, end = saved
        return _complete(SegmentIndex(path, folder, names.names, _load_columns(folder), end), size, False, None)
    columns, end = _index_range(path, 0, size, names, progress, whole_lines=False)
    return [SegmentIndex(path, None, names.names, columns.arrays, end)]


def _build_saved(path: Path, first: bytes, names: NameTable, progress: BuildProgress | None) -> tuple[Path, int] | None:
    """Build the index straight into files (beside the log, else in the cache folder), a block at a time;
    (its folder, the bytes it covers), or None when it can be saved nowhere."""
    for target in (index_dir(path), _cached_dir(path)):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            work.chmod(0o755)
        except OSError:
            continue
        try:
            (work / "meta.json").write_bytes(orjson.dumps({"format": FORMAT, "first_line": _first_line_key(first)}))
            (work / "names.jsonl").touch()
            for key in COLUMNS:
                _column_path(work, key).touch()
            writer = IndexAppender(path, work, names, 0, 0, saved_names=0)
            try:
                _, end = _index_range(path, 0, path.stat().st_size, names, progress, whole_lines=True,
                                      sink=writer.write)
            finally:
                writer.close()
            _remove(target)
            os.replace(work, target)
            return target, end
        except OSError:
            _remove(work)
    return None


def _complete(segment: SegmentIndex, size: int, save: bool, progress: BuildProgress | None) -> list[SegmentIndex]:
    """Index what the log holds past `segment.end`: its whole lines appended to the saved index when allowed,
    the rest (a live writer's newest lines, a last line without its newline) in memory, as a second piece."""
    if segment.end >= size:
        return [segment]
    names = NameTable(segment.names)
    if save and segment.folder is not None:
        try:
            appender = IndexAppender(segment.log, segment.folder, names, len(segment), segment.end,
                                     saved_names=len(segment.names))
        except (OSError, ValueError):
            appender = None
        if appender is not None:
            try:
                _, end = _index_range(segment.log, segment.end, size, names, progress, whole_lines=True,
                                      sink=appender.write)
            except OSError as exc:
                appender.fail(str(exc))
            appender.close()
            if appender.failed is None:
                segment = SegmentIndex(segment.log, segment.folder, names.names, _load_columns(segment.folder), end)
    if segment.end >= size:
        return [segment]
    tail, end = _index_range(segment.log, segment.end, size, names, progress, whole_lines=False)
    return [segment, SegmentIndex(segment.log, None, names.names, tail.arrays, end)]


def open_index(log: str | os.PathLike[str], *, progress: BuildProgress | None = None,
               include_segments: bool = True) -> LogIndex:
    """The checked index of the log at `log` (every segment), built or completed where needed.

    `progress(done, total)` hears the bytes indexed while something is being built.
    """
    from .store import segment_paths

    path = Path(log)
    files = segment_paths(path) if include_segments else [path]
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    done = 0
    segments = []
    for file, size in zip(files, sizes, strict=False):
        report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
        segments.extend(open_pieces(file, progress=report))
        done += size
    return LogIndex(segments)
