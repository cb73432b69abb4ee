"""The Textual monitor. Only this package imports textual; only cli.py imports it (lazily)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from kbert_tui.headless import attach_headless, replay_headless
from kbert_tui.lifecycle import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_STOPPED
from kbert_tui.state import printable

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
    return _run_viewer(MonitorApp(source)) or EXIT_OK


def _run_viewer(app: MonitorApp) -> int | None:
    """`_run_app` for a monitor that only reads (replay, attach): a stop signal also arms an exit guard, since
    after SIGHUP Textual can block for good writing to the terminal that went away (its writer thread's
    queue is full): the process then ends by itself 3 s later instead of being left behind."""
    from kbert_tui.lifecycle import ExitGuard, signal_exit

    guard = ExitGuard(grace=3.0, what="asked to stop")
    try:
        return _run_app(app, lambda signum: guard.arm(signal_exit(signum)))
    finally:
        guard.disarm()


def _run_app(app: MonitorApp, at_once: Callable[[int], Any] | None = None) -> int | None:
    """Run the monitor with Ctrl-C, SIGTERM and SIGHUP taking its quit flow without asking; the exit
    status a crash (1, in one line) or a signal (128 + its number) calls for, else None."""
    from kbert_tui.lifecycle import STOP_SIGNALS, on_stop_signals, signal_exit

    undo = on_stop_signals(lambda signum: app.interrupt(signal_exit(signum), STOP_SIGNALS[signum]), at_once=at_once)
    try:
        app.run()
    finally:
        undo()
    if app.crash is not None:
        print(f"kbert-tui: error: the monitor failed: {app.crash}", file=sys.stderr)
        return EXIT_FAILED
    return app.interrupted[0] if app.interrupted is not None else None


def monitor_run(config: Any, *, output_dir: str | None = None,
                stopped_status: int = EXIT_STOPPED, session_factory: Any = None) -> int:
    """`kbert-tui run` with the monitor: 0 completed, 1 failed, 2 failed on bad input, `stopped_status`
    when the user stopped the run (`s`, or `q` then yes), 128 + N when signal N (Ctrl-C: SIGINT, 130)
    stopped it."""
    from kbert_tui.lifecycle import ExitGuard, signal_exit

    source = LiveSource(config, output_dir=output_dir, session_factory=session_factory)
    app = MonitorApp(source)
    # A loop blocked for good by a handler would never run the quit flow: the guard ends the process then.
    guard = ExitGuard(grace=10.0, busy=lambda: source.bus.busy_handlers() if source.bus is not None else [],
                      last_words=lambda: source.session.record_end() if source.session is not None else None)

    def at_once(signum: int) -> None:  # thread-safe: the worker checkpoints and stops between steps
        guard.arm(signal_exit(signum))
        session = source.session
        if session is not None and session.worker is not None:
            session.worker.control.request_stop(signal.Signals(signum).name, "signal")

    try:
        code = _run_app(app, at_once)
    finally:
        guard.disarm()
        source.abandon()  # a no-op after a clean quit; after a crash, training must not run on unseen
    if app.crash is not None:
        return EXIT_FAILED
    if app.interrupted is not None and app.interrupted_live and code is not None:
        print(f"{app.interrupted[1]}: the run was stopped with a checkpoint", file=sys.stderr)
        if source.events_path is not None:
            print(f"events: {source.events_path}")
        return code
    if app.start_error:
        print(f"kbert-tui: error: {app.start_error}", file=sys.stderr)
        return EXIT_FAILED
    outcome = source.outcome or app.state.training.status
    if source.events_path is not None:
        print(f"events: {source.events_path}")
    if outcome == "failed":
        failure = (source.session.failure if source.session is not None else None) or {}
        print(f"error: {printable(str(failure.get('error') or app.state.training.error))}", file=sys.stderr)
        return EXIT_BAD_INPUT if failure.get("bad_input") else EXIT_FAILED
    return stopped_status if outcome == "stopped" else EXIT_OK


def run_attached(source: EventSource) -> int:
    """`kbert-tui attach …`: the monitor on a run another process writes; quitting (Ctrl-C too) leaves
    the run alone."""
    return _run_viewer(MonitorApp(source)) or EXIT_OK
