"""The Textual monitor. Only this package imports textual; only cli.py imports it (lazily)."""

from __future__ import annotations

import sys
from typing import Any

from kbert_tui.headless import attach_headless, replay_headless

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


def monitor_run(config: Any, *, output_dir: str | None = None,
                stopped_status: int = 3, session_factory: Any = None) -> int:
    """`kbert-tui run` with the monitor: 0 completed, 1 failed, 2 failed on bad input, `stopped_status`
    when the user stopped the run (`s`, or `q` then yes)."""
    from kbert_tui.lifecycle import EXIT_TERMINATED, ExitGuard, on_sigterm

    source = LiveSource(config, output_dir=output_dir, session_factory=session_factory)
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
