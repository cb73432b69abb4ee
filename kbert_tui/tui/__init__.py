"""The Textual monitor. Only this package imports textual; only cli.py imports it (lazily)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from kbert_tui.events import Event

from kbert_tui.state import RunState, count_of, format_number

from .app import MonitorApp, styles_path
from .attach import AttachSource
from .sources import EventSource, LiveSource, ReplaySource, StaticSource

__all__ = ["MonitorApp", "EventSource", "LiveSource", "ReplaySource", "StaticSource", "AttachSource", "styles_path",
           "open_replay", "run_replay", "replay_headless", "monitor_run", "run_attached", "attach_headless"]


def open_replay(path: str, *, speed: float | None = None) -> ReplaySource:
    """Open an events file for replay; raises OSError (FileNotFoundError, PermissionError, …) if it can't."""
    return ReplaySource(path, speed=speed)


def run_replay(source: ReplaySource) -> int:
    """`kbert-tui replay PATH`: show the recording in the monitor until the user quits."""
    MonitorApp(source).run()
    return 0


def replay_headless(source: ReplaySource) -> int:
    """Without a terminal: reduce the whole recording and print where the run ended."""
    state = RunState()
    for event in source.reader:
        state.apply(event)
    return _print_summary(source.path, state, source.reader.malformed, source.reader.first_error, recording=True)


def _print_summary(path: Any, state: RunState, malformed: int, first_error: str | None, *,
                   recording: bool = False) -> int:
    """Where the run ended; `recording`: the file is all there is (a replay), so a run still 'running'
    at its end stopped without a final event (killed, or its machine went down)."""
    t = state.training
    if state.events_seen == 0 and malformed:
        print(f"kbert-tui: error: {path}: not an events file: none of its {count_of(malformed, 'line')} "
              f"is an event (first problem: {first_error})", file=sys.stderr)
        return 2
    print(f"{path}: {count_of(state.events_seen, 'event')}, {count_of(malformed, 'malformed line')} skipped")
    if malformed and first_error:
        print(f"first skipped line: {first_error}")
    status = t.status
    if recording and t.live:
        last = t.last_at.strftime("%Y-%m-%d %H:%M:%S UTC") if t.last_at else "?"
        status = f"ended without a final event (last event at {last}; killed?)"
    print(f"run {t.run_name or '?'} ({t.run_id or '?'}): {status}, epoch {t.epochs_done}/{t.total_epochs or '?'}, "
          f"step {t.step}/{t.total_steps or '?'}")
    if lanes := state.ranks.summary():
        print(lanes)
    if t.best_value is not None:
        print(f"best {t.best_metric} {format_number(t.best_value)} (epoch {t.best_epoch})")
    if t.versus_baseline:
        print(t.versus_baseline)
    if t.error:
        print(f"error: {t.error}")
    return 0


def monitor_run(config: Any, *, output_dir: str | None = None,
                stopped_status: int = 3) -> int:
    """`kbert-tui run` with the monitor: 0 completed, 1 failed, 2 failed on bad input, `stopped_status`
    when the user stopped the run (`s`, or `q` then yes)."""
    from kbert_tui.lifecycle import EXIT_TERMINATED, ExitGuard, on_sigterm

    source = LiveSource(config, output_dir=output_dir)
    app = MonitorApp(source)
    terminated: list[bool] = []

    def on_term() -> None:  # SIGTERM: the quit flow without asking (stop, checkpoint, flush), then 143
        terminated.append(True)
        app.run_worker(app._close_and_exit(), group="quit", exclusive=True)

    # A loop blocked for good by a handler would never run on_term: the guard ends the process then.
    guard = ExitGuard(grace=10.0, busy=lambda: source.bus.busy_handlers() if source.bus is not None else [])
    def at_once() -> None:  # thread-safe: the worker checkpoints and stops between steps
        guard.arm(EXIT_TERMINATED)
        session = source.session
        if session is not None and session.worker is not None:
            session.worker.control.request_stop("SIGTERM", "signal")

    undo_sigterm = on_sigterm(on_term, at_once=at_once)
    try:
        app.run()
    finally:
        guard.disarm()
        undo_sigterm()
        source.abandon()  # a no-op after a clean quit; after a crash, training must not run on unseen
    if terminated:
        print("terminated (SIGTERM): the run was stopped with a checkpoint", file=sys.stderr)
        return EXIT_TERMINATED
    if app.start_error:
        print(f"kbert-tui: error: {app.start_error}", file=sys.stderr)
        return 1
    outcome = source.outcome or app.state.training.status
    if source.events_path is not None:
        print(f"events: {source.events_path}")
    if outcome == "failed":
        failure = (source.session.failure if source.session is not None else None) or {}
        print(f"error: {failure.get('error') or app.state.training.error}", file=sys.stderr)
        return 2 if failure.get("bad_input") else 1
    return stopped_status if outcome == "stopped" else 0


def run_attached(source: EventSource) -> int:
    """`kbert-tui attach …`: the monitor on a run another process writes; quitting leaves the run alone."""
    MonitorApp(source).run()
    return 0


def attach_headless(source: AttachSource, progress: Callable[[Event], None]) -> int:
    """Without a terminal: what `replay` prints for the history, then `progress` for each new event,
    until the run is over."""
    run = source.run
    state = RunState()
    while batch := run.read(AttachSource.BATCH):
        state.apply_all(batch)
    code = _print_summary(run.events_path or run.label, state, run.malformed, run.first_error)
    if code or run.ended:
        if run.note:
            print(run.note)
        run.close()
        return code
    print(f"following {run.events_path or run.label} until the run ends (Ctrl-C detaches; the run goes on)",
          flush=True)
    try:
        while not run.ended:
            batch = run.read(AttachSource.BATCH)
            for event in batch:
                progress(event)
            if not batch:
                time.sleep(run.idle_wait_s)
    finally:
        run.close()
    print(run.note, flush=True)
    return 0
