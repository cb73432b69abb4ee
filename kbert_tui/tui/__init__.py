"""The Textual monitor. Only this package imports textual; only cli.py imports it (lazily)."""

from .app import MonitorApp, styles_path
from .sources import EventSource, LiveSource, ReplaySource, StaticSource

__all__ = ["MonitorApp", "EventSource", "LiveSource", "ReplaySource", "StaticSource", "styles_path",
           "replay", "monitor_run"]


def replay(path: str, *, speed: float | None = None) -> int:
    """`kbert-tui replay PATH [--speed X]`: show a recorded run. Raises OSError for a missing/unreadable file."""
    source = ReplaySource(path, speed=speed)
    MonitorApp(source).run()
    return 0


def monitor_run(config: object, *, output_dir: str | None = None) -> int:
    """`kbert-tui run` with the TUI: train while showing it; 0 completed/stopped, 1 failed."""
    source = LiveSource(config, output_dir=output_dir)
    app = MonitorApp(source)
    app.run()
    outcome = source.outcome or app.state.training.status
    if source.events_path is not None:
        print(f"events: {source.events_path}")
    return 1 if outcome == "failed" else 0
