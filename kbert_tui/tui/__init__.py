"""The Textual monitor. Only this package imports textual; only cli.py imports it (lazily)."""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import Any

from kbert_tui.state import RunState, format_number

from .app import MonitorApp, styles_path
from .sources import EventSource, LiveSource, ReplaySource, StaticSource

__all__ = ["MonitorApp", "EventSource", "LiveSource", "ReplaySource", "StaticSource", "styles_path",
           "open_replay", "run_replay", "replay_headless", "monitor_run"]


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
    t = state.training
    reader = source.reader
    if state.events_seen == 0 and reader.malformed:
        print(f"kbert-tui: error: {source.path} is not an events file: none of its {reader.malformed:,} lines "
              f"is an event (first problem: {reader.first_error})", file=sys.stderr)
        return 2
    print(f"{source.path}: {state.events_seen:,} events, {reader.malformed:,} malformed lines skipped")
    print(f"run {t.run_name or '?'} ({t.run_id or '?'}): {t.status}, epoch {t.epochs_done}/{t.total_epochs or '?'}, "
          f"step {t.step}/{t.total_steps or '?'}")
    if t.best_value is not None:
        print(f"best {t.best_metric} {format_number(t.best_value)} (epoch {t.best_epoch})")
    if t.error:
        print(f"error: {t.error}")
    return 0


def monitor_run(config: Any, *, output_dir: str | None = None,
                bad_input_errors: Collection[str] = ()) -> int:
    """`kbert-tui run` with the monitor: 0 completed or stopped, 1 failed, 2 failed on bad input."""
    source = LiveSource(config, output_dir=output_dir)
    app = MonitorApp(source)
    try:
        app.run()
    finally:
        source.abandon()  # a no-op after a clean quit; after a crash, training must not run on unseen
    if app.start_error:
        print(f"kbert-tui: error: {app.start_error}", file=sys.stderr)
        return 1
    outcome = source.outcome or app.state.training.status
    if source.events_path is not None:
        print(f"events: {source.events_path}")
    if outcome == "failed":
        failure = (source.session.failure if source.session is not None else None) or {}
        print(f"error: {failure.get('error') or app.state.training.error}", file=sys.stderr)
        return 2 if failure.get("error_type") in bad_input_errors else 1
    return 0
