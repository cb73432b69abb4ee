"""A run seen from outside its process on the same machine: its info file and its control file.

Beside a run's events file (for the default layout, in the run directory) the running process keeps:

- ``session.json``: who writes the log (run id, pid, host), where, and the run's state (``running``
  until the process closes the run, then its outcome); rewritten atomically.
- ``control.jsonl``: requests from attached monitors, one event line each (the events file's format),
  appended with a single ``O_APPEND`` write so several monitors can write at once. The run reads the
  lines added since it started and re-emits each accepted request on its bus, naming where it came
  from; nothing else ever reads the file.

Whoever can write the control file can stop the run, so the run refuses one that is a symbolic link,
not a regular file, not its own or writable by group or others; it reads the file in bounded chunks
(a request longer than `MAX_REQUEST_BYTES` is skipped unread), acts on each request id once, sets the
source itself (``attach`` for the file, ``broker`` for Redis), keeps only the request's known fields,
clipped, and writes at most `REJECTIONS_PER_WINDOW` rejections a minute, counting the rest.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import os
import re
import socket
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from kbert_tui.events import Event, EventBus
from kbert_tui.events import catalog as ev
from kbert_tui.events.follow import LogFollower, decode_lines

__all__ = ["INFO_NAME", "CONTROL_NAME", "CONTROL_REQUESTS", "RunInfo", "LocalControlWatcher", "send_control",
           "control_line", "ControlFile", "RejectionBudget", "clip", "rejection", "MAX_REQUEST_BYTES",
           "requester_name", "resolve_run", "newest_run", "rank_logs", "AttachTarget", "AttachedRun"]

INFO_NAME = "session.json"
CONTROL_NAME = "control.jsonl"
CONTROL_REQUESTS = (ev.CONTROL_PAUSE_REQUESTED, ev.CONTROL_RESUME_REQUESTED, ev.CONTROL_STOP_REQUESTED,
                    ev.CONTROL_CHECKPOINT_REQUESTED)
MAX_REQUEST_BYTES = 64 * 1024  # a request is a few hundred bytes; a longer line is skipped, not parsed
FIELD_CHARS = 200  # what a request's text fields may put in the log
REJECTIONS_PER_WINDOW = 10  # rejection events a minute per channel; the rest are counted
_READ_BUDGET = 1 << 20  # bytes of control file read per loop turn: a flood costs ~1 ms a turn
_SOURCES = {"control file": "attach", "redis": "broker"}  # the receiver names the source, not the sender
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clip(value: object, limit: int = FIELD_CHARS) -> str:
    """`value` as one line of printable text, at most `limit` characters: control characters (terminal
    escapes) shown as `\\xNN`, the rest cut with `…`."""
    text = _CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


class RejectionBudget:
    """At most `limit` rejections written per `window_s`; the rest are counted, and the count rides on
    the next one written (`suppressed`), so a flood of bad requests can't flood the log."""

    def __init__(self, limit: int = REJECTIONS_PER_WINDOW, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.rejected = 0  # every rejection, written or not
        self.suppressed = 0  # not written since the last one that was
        self._window_start = clock()
        self._written = 0

    def take(self) -> int | None:
        """None when this rejection is to be counted only; else how many were suppressed before it."""
        self.rejected += 1
        now = self.clock()
        if now - self._window_start >= self.window_s:
            self._window_start, self._written = now, 0
        if self._written >= self.limit:
            self.suppressed += 1
            return None
        self._written += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


def rejection(name: str, reason: str, via: str, suppressed: int, *, request_id: str | None = None,
              requested_by: object = None) -> dict[str, Any]:
    """A `control.request_rejected` payload, every field the sender chose clipped."""
    data: dict[str, Any] = {"name": clip(name), "reason": clip(reason, 400), "via": via}
    if request_id is not None:
        data["request_id"] = clip(request_id)
    if requested_by is not None:
        data["requested_by"] = clip(requested_by)
    if suppressed:
        data["suppressed"] = suppressed
    return data


class ControlFile:
    """The run's end of control.jsonl: opened without following links, refused unless it is a regular
    file of ours that group and others can't write, then read in bounded chunks from where it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None  # why the file is not used (None: it is)
        self.oversize = 0  # lines skipped for being longer than MAX_REQUEST_BYTES
        self._fd: int | None = None
        self._offset = 0
        self._partial = bytearray()
        self._skipping = False  # inside an oversize line: drop bytes up to its newline

    def open(self, *, from_end: bool = True) -> str | None:
        """Open (create, mode 0600) the file; returns the problem that makes it unusable, if any."""
        flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as error:
            self.problem = self._refusal(error)
            return self.problem
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self.problem = f"{self.path} is not a regular file: control requests through it are off"
        elif st.st_uid != os.geteuid():
            self.problem = (f"{self.path} belongs to uid {st.st_uid}, not this run's user: control requests "
                            f"through it are off")
        elif st.st_mode & 0o022:
            self.problem = (f"{self.path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                            f"control requests through it are off (chmod 600 it before the run)")
        if self.problem is not None:
            os.close(fd)
            return self.problem
        self._fd = fd
        self._offset = st.st_size if from_end else 0
        return None

    def _refusal(self, error: OSError) -> str:
        if self.path.is_symlink():
            try:
                target = clip(os.readlink(self.path), 120)
            except OSError:
                target = "?"
            return f"{self.path} is a symbolic link (to {target}): control requests through it are off"
        return f"cannot open {self.path}: {error.strerror or error}: control requests through it are off"

    def read_lines(self) -> tuple[list[bytes], bool]:
        """The complete request lines added since the last call (at most ~1 MB read), and whether more waits."""
        if self._fd is None:
            return [], False
        size = os.fstat(self._fd).st_size
        if size < self._offset:  # truncated in place: what is there now is new
            self._offset, self._partial, self._skipping = 0, bytearray(), False
        budget = min(size - self._offset, _READ_BUDGET)
        if budget <= 0:
            return [], False
        chunk = os.pread(self._fd, budget, self._offset)
        self._offset += len(chunk)
        lines: list[bytes] = []
        for piece_index, piece in enumerate(chunk.split(b"\n")):
            ended = piece_index > 0  # a newline came before this piece: the previous one is complete
            if ended:
                if not self._skipping and self._partial.strip():
                    lines.append(bytes(self._partial).strip())
                self._partial, self._skipping = bytearray(), False
            if self._skipping:
                continue
            self._partial += piece
            if len(self._partial) > MAX_REQUEST_BYTES:
                self.oversize += 1
                self._partial, self._skipping = bytearray(), True
        return lines, self._offset < size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class RunInfo:
    """The contents of session.json."""

    run_id: str
    pid: int
    host: str
    events: str
    state: str = "running"  # running | completed | failed | stopped
    started_at: str = ""
    ended_at: str | None = None
    control: bool = True  # false when the run refused its control file: monitors offer no p / s

    @classmethod
    def read(cls, path: Path) -> RunInfo | None:
        """The info file at `path`, or None when it is missing or unreadable (a run without one is a log)."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(run_id=str(raw["run_id"]), pid=int(raw["pid"]), host=str(raw["host"]),
                       events=str(raw["events"]), state=str(raw.get("state", "running")),
                       started_at=str(raw.get("started_at", "")), ended_at=raw.get("ended_at"),
                       control=raw.get("control") is not False)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @property
    def ended(self) -> bool:
        return self.state != "running"

    def process_gone(self) -> bool:
        """True when the writer ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # exists, owned by someone else
        return False


def requester_name() -> str:
    """Who is asking, for the log: ``user@host pid N``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def control_line(name: str, data: dict[str, Any], *, source: str, run_id: str | None) -> tuple[str, bytes]:
    """A control request as an event line (the events file's format): (its id, the line without newline)."""
    if name not in CONTROL_REQUESTS:
        raise ValueError(f"not a control request: {name}")
    event = Event(name, dict(data), source=source, correlation_id=run_id)
    line = json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                       "source": event.source, "correlation_id": event.correlation_id, "data": event.data,
                       "metadata": {}}, separators=(",", ":")).encode()
    return event.id, line


def send_control(control_file: Path, name: str, data: dict[str, Any], *, source: str,
                 run_id: str | None) -> str:
    """Append one control request to `control_file`; returns the request's event id."""
    request_id, line = control_line(name, data, source=source, run_id=run_id)
    # never through a link: it could point the append at any file this user can write
    fd = os.open(control_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line + b"\n")  # one write: concurrent monitors never interleave inside a line
    finally:
        os.close(fd)
    return request_id


class LocalControlWatcher:
    """The running side: writes session.json, relays requests from control.jsonl onto the run's bus."""

    def __init__(self, bus: EventBus, run_id: str, events_path: Path, *, poll_s: float = 0.1) -> None:
        self.bus = bus
        self.run_id = run_id
        self.events_path = events_path
        self.info_path = events_path.parent / INFO_NAME
        self.control_path = events_path.parent / CONTROL_NAME
        self.poll_s = poll_s
        self.relayed = 0
        self.info = RunInfo(run_id=run_id, pid=os.getpid(), host=socket.gethostname(),
                            events=str(events_path), started_at=_now())
        self.rejections = RejectionBudget()
        self._control: ControlFile | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()  # request ids and line digests read (the newest 4096)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._control = ControlFile(self.control_path)
        problem = self._control.open(from_end=True)  # old requests are not replayed
        self.info.control = problem is None
        self.info.write(self.info_path)
        if problem is not None:
            await self.reject("", problem, via="control file")
            return
        self._task = asyncio.create_task(self._watch(), name=f"control-file:{self.run_id}")

    @property
    def problem(self) -> str | None:
        """Why the control file is not used (a link, someone else's, writable by others), for a warning."""
        return self._control.problem if self._control is not None else None

    async def close(self, outcome: str | None) -> None:
        """Stop watching and record how the run ended (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._control is not None:
            self._control.close()
            self._control = None
            self.info.state = outcome or "failed"
            self.info.ended_at = _now()
            try:
                self.info.write(self.info_path)
            except OSError:
                pass  # the run directory went away: nothing left to tell attached monitors

    async def _watch(self) -> None:
        control = self._control
        assert control is not None
        while True:
            lines, more = control.read_lines()
            oversize, control.oversize = control.oversize, 0
            for _ in range(oversize):
                await self.reject("", f"a line longer than {MAX_REQUEST_BYTES} bytes: skipped unread",
                                  via="control file")
            fresh = [line for line in lines if self._first_time(line)]
            for _ in range(len(lines) - len(fresh)):
                await self.reject("", "the same line again: acted on once", via="control file")
            if fresh:
                events, problems = decode_lines(fresh)
                for reason in dict(reversed(problems)).values():  # one per line (its first reason)
                    await self.reject("", f"not an event line: {reason}", via="control file")
                for request in events:
                    await self.relay(request, via="control file")
            await asyncio.sleep(0 if more else self.poll_s)

    def _first_time(self, line: bytes) -> bool:
        """False for a line already read (a request appended twice is acted on once, with or without an id)."""
        key = "line:" + hashlib.blake2b(line, digest_size=16).hexdigest()
        if key in self._seen:
            return False
        self._remember(key)
        return True

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        if len(self._seen) > 4096:
            self._seen.popitem(last=False)

    async def reject(self, name: str, reason: str, *, via: str, request_id: str | None = None,
                     requested_by: object = None) -> None:
        """`control.request_rejected`, its text clipped, unless this minute's budget is spent (then counted)."""
        suppressed = self.rejections.take()
        if suppressed is None or self.bus.is_closed:
            return
        data = rejection(name, reason, via, suppressed, request_id=request_id, requested_by=requested_by)
        await self.bus.emit(ev.CONTROL_REQUEST_REJECTED, data, source="control", correlation_id=self.run_id)

    async def relay(self, request: Event, *, via: str) -> bool:
        """Emit an attached monitor's request on the bus (True), or say why it was not taken (False)."""
        if request.correlation_id not in (None, self.run_id):
            return False  # meant for another run sharing the folder
        requested_by = request.data.get("requested_by")
        if request.name not in CONTROL_REQUESTS:
            await self.reject(request.name, "not a control request", via=via, request_id=request.id,
                              requested_by=requested_by)
            return False
        if len(request.id) > FIELD_CHARS:
            await self.reject(request.name, f"a request id longer than {FIELD_CHARS} characters", via=via,
                              request_id=request.id, requested_by=requested_by)
            return False
        if request.id in self._seen:
            await self.reject(request.name, "already acted on (the same request id again)", via=via,
                              request_id=request.id, requested_by=requested_by)
            return False
        self._remember(request.id)
        source = _SOURCES.get(via, "attach")
        data: dict[str, Any] = {"requested_by": clip(requested_by) if requested_by is not None else source,
                                "via": via, "request_id": request.id}
        if request.name == ev.CONTROL_STOP_REQUESTED and "reason" in request.data:
            data["reason"] = clip(request.data["reason"])
        await self.bus.emit(request.name, data, source=source, correlation_id=self.run_id)
        self.relayed += 1
        return True


# ------------------------------------------------------------------------------ finding a run


@dataclass(frozen=True)
class AttachTarget:
    """What `kbert-tui attach PATH` opens: the events file, and the run's info and control files if any."""

    events_path: Path
    info_path: Path
    control_path: Path

    def info(self) -> RunInfo | None:
        return RunInfo.read(self.info_path)


def resolve_run(path: str | os.PathLike[str] | None, *, runs_root: Path = Path("runs")) -> AttachTarget:
    """A run directory or an events file (or, with None, the newest run under `runs_root`).

    Raises FileNotFoundError / NotADirectoryError with a message naming what is missing.
    """
    if path is None:
        found = newest_run(runs_root)
        if found is None:
            raise FileNotFoundError(f"no run found under {runs_root.resolve()} (give a run directory or events file)")
        target = found
    else:
        target = Path(path).expanduser()
    if target.is_dir():
        info = RunInfo.read(target / INFO_NAME)
        events = target / "events.jsonl"
        if info is not None and not events.exists():
            events = Path(info.events)  # [events] path put the log elsewhere
        if not events.exists() and info is None:
            raise FileNotFoundError(f"{target} holds no events.jsonl or {INFO_NAME}: not a run directory")
    elif target.exists() or target.suffix == ".jsonl":
        events = target
        if not target.exists() and not (target.parent / INFO_NAME).exists():
            raise FileNotFoundError(f"no such events file: {target}")
    else:
        raise FileNotFoundError(f"no such run directory or events file: {target}")
    return AttachTarget(events, events.parent / INFO_NAME, events.parent / CONTROL_NAME)


def rank_logs(path: str | os.PathLike[str]) -> dict[int, Path]:
    """The active log of every rank of the run whose log is `path`: {0: events.jsonl, 1: events.rank1.jsonl,
    ...} (a multi-rank run's rank N writes beside rank 0); just {0: path} for a single process's run."""
    active = Path(path)
    logs = {0: active}
    pattern = re.compile(re.escape(active.stem) + r"\.rank(\d+)" + re.escape(active.suffix) + "$")
    try:
        entries = list(active.parent.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if (m := pattern.match(entry.name)) and int(m.group(1)) > 0:
            logs[int(m.group(1))] = entry
    return dict(sorted(logs.items()))


def newest_run(root: Path) -> Path | None:
    """The run directory under `root` whose log (or info file) changed last."""
    best: tuple[float, Path] | None = None
    try:
        entries = list(root.iterdir())
    except OSError:
        return None
    for entry in entries:
        for marker in (entry / "events.jsonl", entry / INFO_NAME):
            try:
                mtime = marker.stat().st_mtime
            except OSError:
                continue
            if best is None or mtime > best[0]:
                best = (mtime, entry)
    return None if best is None else best[1]


FINAL_TRAINING_EVENTS = frozenset({ev.TRAINING_COMPLETED, ev.TRAINING_FAILED, ev.TRAINING_STOPPED})  # a run's end


class AttachedRun:
    """Reads a run's log from the start and keeps up with it until the run is over.

    Over means: session.json says the run ended (its process writes that after the log is flushed,
    so one more read gets the last line), or the process that wrote it is gone, or, for a log
    without session.json, a final training event was seen and nothing was added for `quiet_s`.
    """

    idle_wait_s = 0.02  # how long a reader waits after an empty `read` (it does not block)

    def __init__(self, target: AttachTarget, *, info_every_s: float = 0.25, quiet_s: float = 1.0) -> None:
        self._clock = time.monotonic
        self.target = target
        self.events_path: Path | None = target.events_path
        self.label = f"{target.events_path.parent.name}/{target.events_path.name}"
        self.requester = f"attach {requester_name()}"
        self.follower = LogFollower(target.events_path)
        self.rank_followers: dict[int, LogFollower] = {}  # a multi-rank run's other ranks, found as they appear
        self._find_ranks()
        self.info = target.info()
        self.run_id = self.info.run_id if self.info is not None else None
        self.live = False  # the history has been read; what comes now is new
        self.ended = False
        self.outcome: str | None = None  # how the run ended (info state, or the last training status)
        self.note: str | None = None  # why it is considered over, for the user
        self.time_to_live: float | None = None  # seconds from opening to the end of the history
        self._opened = self._clock()
        self._final_seen: str | None = None
        self._last_growth = self._opened
        self._info_at = self._opened
        self._info_every_s = info_every_s
        self._quiet_s = quiet_s

    @property
    def controllable(self) -> bool:
        """A running process watches this run's control file."""
        return self.info is not None and self.info.control and not self.info.ended and not self.ended

    @property
    def malformed(self) -> int:
        return self.follower.malformed + sum(f.malformed for f in self.rank_followers.values())

    @property
    def first_error(self) -> str | None:
        return self.follower.first_error or next(
            (f"{f.path.name}: {f.first_error}" for f in self.rank_followers.values() if f.first_error), None)

    @property
    def position(self) -> int:
        return self.follower.position + sum(f.position for f in self.rank_followers.values())

    def _find_ranks(self) -> None:
        for rank, path in rank_logs(self.target.events_path).items():
            if rank and rank not in self.rank_followers:
                self.rank_followers[rank] = LogFollower(path)

    def _read_all(self, limit: int | None) -> list[Event]:
        """New events of every rank's log (at most `limit` from each), merged in time order."""
        events = self.follower.read_events(limit)
        if self.rank_followers:
            for follower in self.rank_followers.values():
                events += follower.read_events(limit)
            events.sort(key=lambda event: event.timestamp)
        return events

    def send_control(self, name: str, data: dict[str, Any]) -> None:
        """Ask the running process to pause / resume / stop, through its control file."""
        send_control(self.target.control_path, name, dict(data, requested_by=self.requester),
                     source="attach", run_id=self.run_id)

    def read(self, limit: int | None = None) -> list[Event]:
        """The next events (at most `limit`); [] when there is nothing new for now or the run is over."""
        if self.ended:
            return []
        events = self._read_all(limit)
        now = self._clock()
        if events:
            self._last_growth = now
            for event in events:
                if event.name in FINAL_TRAINING_EVENTS:
                    self._final_seen = event.name.partition(".")[2]
                if self.run_id is None and event.correlation_id:
                    self.run_id = event.correlation_id
            return events
        first_time = not self.live
        if first_time:
            self.live = True
            self.time_to_live = now - self._opened
        if first_time or now - self._info_at >= self._info_every_s or self.info is None:
            self._info_at = now
            self._find_ranks()
            self.info = self.target.info() or self.info
            if self._over(now):
                self.ended = True
                # The writer flushed the log before it said so: what is left on disk is the run's last.
                return self._read_all(None)
        return []

    def _over(self, now: float) -> bool:
        info = self.info
        if info is not None and info.ended:
            self.outcome, self.note = info.state, f"the run ended: {info.state}"
        elif info is not None and info.process_gone():
            self.outcome = self._final_seen or "failed"
            self.note = f"the run's process (pid {info.pid}) is gone without closing the run"
        elif info is None and self._final_seen and now - self._last_growth >= self._quiet_s:
            self.outcome, self.note = self._final_seen, f"the log ended with training.{self._final_seen}"
        else:
            return False
        return True

    def close(self) -> None:
        self.follower.close()
        for follower in self.rank_followers.values():
            follower.close()
