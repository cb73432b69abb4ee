"""A run seen from outside its process on the same machine: its info file and its control file.

Beside a run's events file (for the default layout, in the run directory) the running process keeps:

- ``session.json``: who writes the log (run id, pid, host), where, and the run's state (``running``
  until the process closes the run, then its outcome); rewritten atomically.
- ``control.jsonl``: requests from attached monitors, one event line each (the events file's format),
  appended with a single ``O_APPEND`` write so several monitors can write at once. The run reads the
  lines added since it started and re-emits each accepted request on its bus, naming where it came
  from; nothing else ever reads the file.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kbert_tui.events import Event, EventBus
from kbert_tui.events import catalog as ev
from kbert_tui.events.follow import LogFollower

__all__ = ["INFO_NAME", "CONTROL_NAME", "CONTROL_REQUESTS", "RunInfo", "LocalControlWatcher", "send_control",
           "control_line",
           "requester_name", "resolve_run", "newest_run", "rank_logs", "AttachTarget", "AttachedRun"]

INFO_NAME = "session.json"
CONTROL_NAME = "control.jsonl"
CONTROL_REQUESTS = (ev.CONTROL_PAUSE_REQUESTED, ev.CONTROL_RESUME_REQUESTED, ev.CONTROL_STOP_REQUESTED,
                    ev.CONTROL_CHECKPOINT_REQUESTED)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


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

    @classmethod
    def read(cls, path: Path) -> RunInfo | None:
        """The info file at `path`, or None when it is missing or unreadable (a run without one is a log)."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(run_id=str(raw["run_id"]), pid=int(raw["pid"]), host=str(raw["host"]),
                       events=str(raw["events"]), state=str(raw.get("state", "running")),
                       started_at=str(raw.get("started_at", "")), ended_at=raw.get("ended_at"))
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
    fd = os.open(control_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
        self._follower: LogFollower | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.control_path.touch(mode=0o600, exist_ok=True)
        self._follower = LogFollower(self.control_path, from_end=True)  # old requests are not replayed
        self.info.write(self.info_path)
        self._task = asyncio.create_task(self._watch(), name=f"control-file:{self.run_id}")

    async def close(self, outcome: str | None) -> None:
        """Stop watching and record how the run ended (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._follower is not None:
            self._follower.close()
            self._follower = None
            self.info.state = outcome or "failed"
            self.info.ended_at = _now()
            try:
                self.info.write(self.info_path)
            except OSError:
                pass  # the run directory went away: nothing left to tell attached monitors

    async def _watch(self) -> None:
        assert self._follower is not None
        while True:
            for request in self._follower.read_events():
                await self.relay(request, via="control file")
            await asyncio.sleep(self.poll_s)

    async def relay(self, request: Event, *, via: str) -> bool:
        """Emit an attached monitor's request on the bus (True), or say why it was not taken (False)."""
        if request.correlation_id not in (None, self.run_id):
            return False  # meant for another run sharing the folder
        if request.name not in CONTROL_REQUESTS:
            await self.bus.emit(ev.CONTROL_REQUEST_REJECTED, {
                "name": request.name, "reason": "not a control request", "via": via, "request_id": request.id,
            }, source="control", correlation_id=self.run_id)
            return False
        data = {k: v for k, v in request.data.items() if isinstance(k, str)}
        data.setdefault("requested_by", request.source)
        data.update(via=via, request_id=request.id)
        await self.bus.emit(request.name, data, source=request.source or "attach", correlation_id=self.run_id)
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
        return self.info is not None and not self.info.ended and not self.ended

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
