"""`kbert-tui watch [--output-dir DIR] -- COMMAND…`: the monitor on any training script.

The watching process owns the run directory (events.jsonl, session.json, control.jsonl, metrics.csv)
through a `RunSession` whose worker is the child process. The child gets the run directory and id in
its environment, so `kbert_tui.init()` inside it appends its events to an outbox that is relayed onto
the run's bus, and reads control requests from an inbox the session writes. The child's stdout and
stderr lines become `process.output` events, its CPU and memory fill the System pane, and its exit
status is `watch`'s own. A stop (the monitor's `s`, `attach`, a rule, Ctrl-C) reaches a script that
logs through the client as `run.should_stop`; one that does not stop within `STOP_GRACE_S` (or never
called `init()`) gets SIGINT, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from kbert_tui.client import INBOX_NAME, OUTBOX_NAME, WATCH_DIR_ENV, WATCH_RUN_ID_ENV
from kbert_tui.control import Control
from kbert_tui.events import Event, EventBus, EventBusError
from kbert_tui.events import catalog as ev
from kbert_tui.lifecycle import EXIT_INTERRUPTED, signal_exit
from kbert_tui.remote import send_control
from kbert_tui.remote.local import FINAL_TRAINING_EVENTS
from kbert_tui.session import RunSession, make_run_id

__all__ = ["ChildWorker", "WatchSession", "exit_status_of", "watch_command"]

STOP_GRACE_S = 10.0  # a script that logs through the client gets this long to stop by itself
SIGNAL_GRACE_S = 5.0  # then each signal gets this long before the next, harder one
MAX_LINE = 4000  # characters of one output line kept in its event
_SOURCE = "watch"
# Terminal escape sequences (colours, cursor moves, titles) in a child's output: Rich and tqdm write them
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def exit_status_of(returncode: int) -> int:
    """A child's status as a shell reports it: killed by signal N (returncode -N) is 128 + N."""
    return signal_exit(-returncode) if returncode < 0 else returncode


def _how(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited {returncode}"


class _ForwardingControl(Control):
    """The session's requests for the child: kept here (for `stop_requested`) and written to its inbox."""

    def __init__(self, worker: ChildWorker) -> None:
        super().__init__()
        self._worker = worker

    def request_pause(self, requested_by: str = "user") -> None:
        super().request_pause(requested_by)
        self._worker.forward(ev.CONTROL_PAUSE_REQUESTED, {"requested_by": requested_by})

    def request_resume(self, requested_by: str = "user") -> None:
        super().request_resume(requested_by)
        self._worker.forward(ev.CONTROL_RESUME_REQUESTED, {"requested_by": requested_by})

    def request_stop(self, reason: str = "user", requested_by: str = "user") -> None:
        first = not self.stop_requested
        super().request_stop(reason, requested_by)
        if first:
            self._worker.forward(ev.CONTROL_STOP_REQUESTED, {"reason": reason, "requested_by": requested_by})
            self._worker.stop_soon()

    def request_checkpoint(self, requested_by: str = "user", request_id: str | None = None) -> None:
        self._worker.forward(ev.CONTROL_CHECKPOINT_REQUESTED, {"requested_by": requested_by})


class ChildWorker:
    """The watched command, as a `RunSession` worker: relays its outbox and output lines onto the bus."""

    POLL_S = 0.05

    def __init__(self, process: subprocess.Popen[bytes], bus: EventBus, *, run_id: str, run_dir: Path,
                 on_done: Any, echo: bool) -> None:
        self.process = process
        self.bus = bus
        self.run_id = run_id
        self.outbox = run_dir / OUTBOX_NAME
        self.inbox = run_dir / INBOX_NAME
        self.control = _ForwardingControl(self)
        self.outcome: str | None = None
        self.failure: dict[str, Any] | None = None
        self.final_metrics: dict[str, Any] | None = None
        self.returncode: int | None = None
        self.client_started = False  # the script called kbert_tui.init(): a stop can be asked, not forced
        self._last_error_line: str | None = None  # its last stderr line: what a failed command says last
        self._final: str | None = None  # the last final training event the script sent (completed, ...)
        self._on_done = on_done
        self._echo = echo
        self._started = time.monotonic()
        self._ended = threading.Event()
        self._stopping = False
        self._threads = [threading.Thread(target=self._read_output, args=(stream, name), daemon=True,
                                          name=f"kbert-watch-{name}")
                         for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
        self._relay_thread = threading.Thread(target=self._relay, daemon=True, name="kbert-watch-relay")
        self._waiter = threading.Thread(target=self._wait, daemon=True, name="kbert-watch-wait")

    def start(self) -> None:
        self._emit(ev.PROCESS_STARTED, {"command": list(map(str, self.process.args)),  # type: ignore[arg-type]
                                        "pid": self.process.pid, "cwd": os.getcwd()})
        for thread in (*self._threads, self._relay_thread, self._waiter):
            thread.start()

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    def join(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)

    def forward(self, name: str, data: dict[str, Any]) -> None:
        try:
            send_control(self.inbox, name, data, source=_SOURCE, run_id=self.run_id)
        except OSError:
            pass  # the run directory went away: the signals in stop_soon still reach the child

    def stop_soon(self) -> None:
        """Stop the child: politely through its client first, then with signals to its process group."""
        if self._stopping:
            return
        self._stopping = True
        threading.Thread(target=self._escalate, daemon=True, name="kbert-watch-stop").start()

    def _escalate(self) -> None:
        if self.client_started and self._ended.wait(STOP_GRACE_S):
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            if self._ended.wait(SIGNAL_GRACE_S):
                return

    # -- threads -----------------------------------------------------------------------------------
    def _emit(self, name: str, data: dict[str, Any], *, source: str = _SOURCE,
              metadata: dict[str, Any] | None = None) -> None:
        try:
            self.bus.emit_sync(name, data, source=source, correlation_id=self.run_id, metadata=metadata or None)
        except EventBusError:
            pass  # the session closed under a child that still talks

    def _read_output(self, stream: IO[bytes] | None, name: str) -> None:
        if stream is None:
            return
        echo = (sys.stdout if name == "stdout" else sys.stderr) if self._echo else None
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if echo is not None:
                print(text, file=echo, flush=True)
            text = _ESCAPES.sub("", text.rpartition("\r")[2])  # a bar redrawn in place: its last state, no colours
            if text.strip():
                self._emit(ev.PROCESS_OUTPUT, {"stream": name, "line": text[:MAX_LINE]})
                if name == "stderr":
                    self._last_error_line = text.strip()[:MAX_LINE]
        stream.close()

    def _relay(self) -> None:
        from kbert_tui.events.follow import LogFollower

        follower = LogFollower(self.outbox)
        try:
            while True:
                done = self._ended.is_set() or self.returncode is not None
                for event in follower.read_events():
                    self._take(event)
                if done:
                    return
                time.sleep(self.POLL_S)
        finally:
            follower.close()

    def _take(self, event: Event) -> None:
        if event.name == ev.TRAINING_STARTED:
            self.client_started = True
            self._final = None
        elif event.name in FINAL_TRAINING_EVENTS:
            self._final = event.name.partition(".")[2]
            if event.name == ev.TRAINING_FAILED:
                self.failure = dict(event.data)
            elif event.name == ev.TRAINING_COMPLETED:
                self.final_metrics = event.data.get("final_metrics")
        self._emit(event.name, event.data, source=event.source, metadata=event.metadata)

    def _wait(self) -> None:
        returncode = self.process.wait()
        for thread in self._threads:
            thread.join(5.0)  # the last lines it wrote
        self.returncode = returncode
        self._relay_thread.join()  # everything its client wrote, in order, before the exit
        asked_to_stop = self.control.stop_requested
        if self._final is None and (self.client_started or (returncode != 0 and not asked_to_stop)):
            # The run ends as failed, saying how: a script that died before finish(), or a command that failed
            what = f"the script {_how(returncode)} before run.finish()" if self.client_started else \
                f"{Path(str(self.process.args[0])).name} {_how(returncode)}"  # type: ignore[index]
            last = f": {self._last_error_line}" if self._last_error_line and returncode != 0 else ""
            self.failure = {"error": what + last, "error_type": "ScriptExited", "bad_input": False,
                            "traceback": "", "epoch": 0, "step": 0}
            self._emit(ev.TRAINING_FAILED, self.failure)
            self._final = "failed"
        self._emit(ev.PROCESS_EXITED, {"returncode": returncode, "how": _how(returncode),
                                       "seconds": round(time.monotonic() - self._started, 3),
                                       "pid": self.process.pid})
        self.outcome = self._final or ("completed" if returncode == 0 else
                                       "stopped" if self.control.stop_requested else "failed")
        self._ended.set()
        if self._on_done is not None:
            self._on_done(self.outcome)


def _run_name(command: list[str]) -> str:
    """The script's name: `python -u train.py` → train, `python -m pkg.train` → train, `./go.sh` → go."""
    words = command[1:] if Path(command[0]).name.startswith("python") else command
    for word, following in zip(words, [*words[1:], ""], strict=True):
        if word == "-m":
            return following.rpartition(".")[2]
        if word == "-c":
            return "python"
        if not word.startswith("-"):
            return Path(word).stem
    return Path(command[0]).stem


class WatchSession(RunSession):
    """A run whose training is a child process: everything `RunSession` hosts, the child as its worker."""

    def __init__(self, command: list[str], *, output_dir: str | Path | None = None, echo: bool = False) -> None:
        from kbert_tui.config import default_config

        base = default_config()
        name = _run_name(command)
        config = base.replace(run=replace(base.run, name=name or "watch"))
        super().__init__(config, output_dir=output_dir, run_id=make_run_id(name or "watch"))
        self.command = command
        self.echo = echo
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        from kbert_tui.events.store import segment_paths

        fresh = not self.output_dir.exists()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name in (OUTBOX_NAME, INBOX_NAME):  # an earlier watch's requests and events are not this run's
            for path in segment_paths(self.output_dir / name):
                path.unlink()
            (self.output_dir / name).write_bytes(b"")
        env = dict(os.environ, **{WATCH_DIR_ENV: str(self.output_dir), WATCH_RUN_ID_ENV: self.run_id,
                                  "PYTHONUNBUFFERED": "1"})
        # Its own process group: a terminal's Ctrl-C reaches this process, which stops the child in order.
        try:
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError:
            for name in (OUTBOX_NAME, INBOX_NAME):  # bad input writes nothing
                (self.output_dir / name).unlink(missing_ok=True)
            if fresh:
                self.output_dir.rmdir()
            raise
        self.sampled_pid = self.process.pid
        try:
            await super().start()
        except BaseException:
            self._kill()
            raise

    def _make_worker(self, on_done: Any) -> ChildWorker:
        assert self.process is not None and self.bus is not None  # the session starts its bus, then the worker
        return ChildWorker(self.process, self.bus, run_id=self.run_id, run_dir=self.output_dir, on_done=on_done,
                           echo=self.echo)

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def close(self) -> None:
        from kbert_tui.events.store import segment_paths

        await super().close()  # stops a child still running (request, then signals) and waits for it
        for name in (OUTBOX_NAME, INBOX_NAME):
            for path in segment_paths(self.output_dir / name):  # with the outbox's rotated segments
                try:
                    path.unlink()
                except OSError:
                    pass  # relayed into events.jsonl already; a leftover file is harmless

    @property
    def returncode(self) -> int | None:
        return self.worker.returncode if isinstance(self.worker, ChildWorker) else None


# ------------------------------------------------------------------------------------------ the command


def command_problem(command: list[str]) -> str | None:
    """Why COMMAND can't be started, found before any folder is made."""
    if not command:
        return "watch: no command given (kbert-tui watch -- python train.py)"
    program = command[0]
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(program)
        if not path.exists():
            return f"watch: {program}: no such file"
        if not os.access(path, os.X_OK) or path.is_dir():
            return f"watch: {program}: not an executable file"
        return None
    if shutil.which(program) is None:
        return f"watch: {program}: command not found"
    return None


def watch_command(args: argparse.Namespace) -> int:
    """`kbert-tui watch`: the monitor in a terminal, else headless like `run`; the child's status as its own."""
    from kbert_tui.cli import _error

    command = list(args.watched)
    if command[:1] == ["--"]:
        command = command[1:]
    if problem := command_problem(command):
        return _error(problem)
    if args.output_dir is not None:
        out = Path(args.output_dir).expanduser()
        if out.exists() and not out.is_dir():
            return _error(f"--output-dir: {out} exists and is not a directory")
    headless = args.headless or not sys.stdout.isatty()
    if headless and not args.headless:
        print("stdout is not a terminal: running headless", file=sys.stderr, flush=True)
    session = WatchSession(command, output_dir=args.output_dir, echo=headless)
    code = _watch_headless(session) if headless else _watch_tui(session)
    if code is not None:
        return code
    returncode = session.returncode
    return EXIT_INTERRUPTED if returncode is None else exit_status_of(returncode)


def _watch_headless(session: WatchSession) -> int | None:
    from kbert_tui.headless import drive_session
    from kbert_tui.lifecycle import ExitGuard

    ended_by: list[int] = []
    guard = ExitGuard(busy=lambda: session.bus.busy_handlers() if session.bus is not None else [])
    guard.watch(lambda: session.outcome is not None, lambda: exit_status_of(session.returncode or 0))

    async def drive() -> bool:
        await drive_session(session, ended_by)  # on Ctrl-C it stops the child and returns
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    try:
        cancelled = asyncio.run(drive())
    except KeyboardInterrupt:
        print("interrupted; the command was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        from kbert_tui.cli import _error

        return _error(f"{error.filename or session.output_dir}: {error.strerror or error}")
    finally:
        guard.disarm()
    if ended_by:  # a stop signal: 128 + its number, like `run`
        return ended_by[0]
    if cancelled:
        print("interrupted; the command was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{session.command[0]} {_how(session.returncode or 0)}", flush=True)
    return None


def _watch_tui(session: WatchSession) -> int | None:
    from kbert_tui.tui import monitor_run

    try:
        code = monitor_run(session.config, session_factory=lambda config, output_dir: session)
    except KeyboardInterrupt:
        print("interrupted; the command was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    if session.returncode is None:
        return code  # it never started (the monitor said why) or was not waited for
    print(f"{session.command[0]} {_how(session.returncode)}; events: {session.events_path}")
    return None
