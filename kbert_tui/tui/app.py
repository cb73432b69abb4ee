"""MonitorApp: the Textual app that shows a run — live or replayed, through the same code.

Ingest: the source appends events to `inbox` (a deque); every `tick` seconds `_drain` moves what
arrived into RunState and the log index (within a time budget, so keys never lag) and repaints once.
"""

from __future__ import annotations

import gc
import importlib.resources
import os
import signal
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from kbert_tui.events import Event
from kbert_tui.state.replay_load import EndView
from kbert_tui.state import (
    DEFAULT_CAPACITY,
    EventLog,
    RunState,
    printable,
)
from kbert_tui.events import catalog as ev

from .keys import bindings, palette_commands
from .log_view import LogView
from .monitor_screen import FILTER_SLICE_S, MonitorScreen
from .panes import PluginsPane, SystemPane, TrainingPane
from .screens import ConfirmScreen, HelpScreen
from .sources import EventSource, ReplaySource

__all__ = ["MonitorApp", "crash_report", "styles_path"]

DRAIN_BUDGET_S = 0.040
PANE_INTERVAL_S = 0.25


def crash_report(error: BaseException) -> str:
    """`ZeroDivisionError: float division by zero (traceback: /tmp/kbert-tui-crash-123.txt)`: the error in
    one line, its traceback in a file for a bug report."""
    what = printable(f"{type(error).__name__}: {error}")[:300]
    path = Path(tempfile.gettempdir()) / f"kbert-tui-crash-{os.getpid()}.txt"
    try:
        path.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
    except (OSError, RecursionError):
        return what
    return f"{what} (traceback: {path})"


def styles_path() -> Path:
    """monitor.tcss from the installed package `kbert_tui.styles`, or from the source tree's styles/."""
    try:
        candidate = importlib.resources.files("kbert_tui.styles") / "monitor.tcss"
        if candidate.is_file():
            return Path(str(candidate))
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "styles" / "monitor.tcss"


class MonitorApp(App[str | None]):
    """Training, system, plugins and event-log panes over one event source."""

    CSS_PATH = styles_path()
    TITLE = "kbert-tui"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = bindings("app")  # one table: keys.KEYS (the screen's keys, the help and the palette come from it too)

    def __init__(self, source: EventSource, *, capacity: int = DEFAULT_CAPACITY, tick: float = 1 / 15) -> None:
        super().__init__()
        self.source = source
        self.state = RunState()
        self.log_index = EventLog(capacity)
        self.inbox: deque[Event] = deque()
        self.tick = tick
        self.ingested = 0
        self._notified = 0  # rule notifications already rung for
        self.start_error: str | None = None
        self.first_paint_at: float | None = None
        self._drain_timer: Timer | None = None
        self._quitting = False
        self._stopped_ingest = False
        self._panes_at = 0.0
        self._pane_versions = (-1, -1, -1)
        self._bindings_key: tuple[Any, ...] = ()
        self.history_complete = True  # False while a recording's history loads behind its end
        self.end_shown_s: float | None = None
        self.interrupted: tuple[int, str] | None = None  # (exit status, why) after Ctrl-C or a stop signal
        self.interrupted_live = False  # this process's run had not ended when it came: it was stopped
        self.crash: str | None = None  # a bug in the monitor, in one line (the traceback is in a file it names)

    # -- layout: the monitor's screen composes the panes; the app reaches them through it -----------
    def get_default_screen(self) -> Screen[Any]:
        self.monitor = MonitorScreen()
        return self.monitor

    @property
    def titlebar(self) -> Static:
        return self.monitor.titlebar

    @property
    def training_pane(self) -> TrainingPane:
        return self.monitor.training_pane

    @property
    def system_pane(self) -> SystemPane:
        return self.monitor.system_pane

    @property
    def plugins_pane(self) -> PluginsPane:
        return self.monitor.plugins_pane

    @property
    def log_view(self) -> LogView:
        return self.monitor.log_view

    @property
    def filter_box(self) -> Input:
        return self.monitor.filter_box

    @property
    def filter_error_line(self) -> Static:
        return self.monitor.filter_error_line

    @property
    def statusbar(self) -> Static:
        return self.monitor.statusbar

    def monitor_ready(self) -> None:
        """The monitor's screen is composed: lay it out, then start taking events in."""
        self.monitor.apply_width(self.size.width)
        self.log_view.focus()
        self._drain_timer = self.set_interval(self.tick, self._drain, name="drain")
        self._start_source()
        if self.interrupted is not None:  # a signal came while the app was starting
            self._begin_close()

    @work(exclusive=True, group="source")
    async def _start_source(self) -> None:
        source = self.source
        if source.end_first:
            self._load_end_first(source)  # type: ignore[arg-type]  # a whole recording: its end first, the history behind it
            return
        try:
            await self.source.start(self.inbox)
        except Exception as exc:  # e.g. the run could not start: show it, keep the app usable
            self.start_error = printable(f"{type(exc).__name__}: {exc}")
            self.notify(self.start_error, title="could not start", severity="error", timeout=10, markup=False)
            return
        if self.source.owns_run:
            await self.source.wait()  # the run ended by itself; the panes show how, until `q`
            self._drain()
        elif (outcome := await self.source.wait()) is not None:  # an attached run is over
            self._drain()
            self.notify(f"the run is over ({printable(str(outcome))}); still showing it, q quits", timeout=8,
                        markup=False)

    # -- a recording, end first ----------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="end-first")
    def _load_end_first(self, source: ReplaySource) -> None:
        """On a worker thread: the run's end (tail + milestones) onto the screen, then the whole history
        behind it (the loss curve, the counts, every event navigable), with progress in the title."""
        worker = get_current_worker()
        started = time.perf_counter()
        stages = source.end_first_stages(self.log_index.capacity, lambda: worker.is_cancelled)
        try:
            for stage, result in stages:
                if worker.is_cancelled:
                    return
                if stage == "history":
                    source.loaded()
                    self.call_from_thread(self._swap_in, *result, True)
                    continue
                if stage == "log":  # every event navigable before the panes' history is in
                    self.call_from_thread(lambda log=result: self._swap_in(self.state, log, False))
                    continue
                painted = threading.Event()
                self.call_from_thread(self._show_end, result, painted, stage == "end")
                painted.wait(2.0)  # the history's decoding holds the GIL: let the end reach the screen first
                if self.end_shown_s is None:
                    self.end_shown_s = time.perf_counter() - started
        except OSError as exc:
            source.error = f"{type(exc).__name__}: {exc}"
        source.loaded()

    def _show_end(self, end: EndView, painted: threading.Event, whole: bool = True) -> None:
        self._swap_in(end.state, end.log, False)
        self.call_after_refresh(painted.set)
        if whole and end.runs > 1:
            ids = ", ".join(printable(r) for r in end.run_ids[-4:])
            self.notify(f"this file holds {end.runs} runs ({ids}); the panes show the last one — "
                        f"filter corr:RUN_ID to see one run's events", title="several runs", timeout=12, markup=False)

    def _swap_in(self, state: RunState, log: EventLog, complete: bool) -> None:
        """Show another reduction of the same recording: the end first, then the whole history."""
        view = self.log_view
        keep = None if view.follow else view.selected_event()
        self.state = state
        for pane in (self.training_pane, self.system_pane, self.plugins_pane):
            pane.state = state
            pane.redraw_all()
        if log is not self.log_index:  # the same log again (its history came in): its filter stands
            matcher = self.log_index.matcher
            self.log_index = log
            log.set_filter(matcher, budget_s=FILTER_SLICE_S)  # the rest tick by tick (`_drain`)
            self.monitor.filter_older(log)
        view.events_log = log
        view.clear_caches()
        view.sync()
        if keep is not None and (seq := log.threads.seq_of(keep.id)) is not None:
            view.go_to_seq(seq)
        self.history_complete = complete
        self.refresh_panes()
        if self.first_paint_at is None:
            self.first_paint_at = time.perf_counter()

    def on_resize(self, event: Any) -> None:
        if self.monitor.is_mounted:
            # the event's size: this handler runs before Textual's own, so self.size is still the old one
            self.monitor.apply_width(event.size.width)  # under a modal too

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that do nothing in the current mode are neither offered in the footer nor run."""
        source = self.source
        if action in ("pause_training", "resume_training"):  # one key, named for what it does now
            status = self.state.training.status
            return source.controllable and status == ("paused" if action == "resume_training" else "running")
        if action in ("stop_training", "checkpoint_training"):
            return source.controllable and self.state.training.live
        if action in ("replay_pause", "replay_step", "replay_speed"):
            return source.paceable
        return True

    # -- ingest ------------------------------------------------------------------------------------
    def _ingest(self, budget_s: float | None) -> int:
        """Move events from the inbox into the state and the log, for at most `budget_s` seconds."""
        inbox = self.inbox
        moved = 0
        apply = self.state.apply
        append = self.log_index.append
        deadline = time.perf_counter() + (budget_s if budget_s is not None else float("inf"))
        popleft = inbox.popleft
        while inbox:
            event = popleft()
            apply(event)
            append(event)
            moved += 1
            if not moved & 511 and time.perf_counter() > deadline:
                break
        self.ingested += moved
        if moved >= 5000:
            # Events live long and hold no cycles: keep them out of the cyclic GC's scans, which
            # otherwise grow with the window and stall the UI (refcounting still frees evicted ones).
            gc.freeze()
        return moved

    def _rule_notification(self) -> None:
        """A rule with action notify fired: bell and a banner, live or attached (a replay only shows it)."""
        self._notified = self.state.notifications
        if not self.source.recording and self.state.last_notification:
            self.bell()
            self.notify(self.state.last_notification, title="rule", severity="warning", timeout=15, markup=False)

    def drain_all(self) -> int:
        """Ingest everything waiting now and repaint (tests and benchmarks use this)."""
        moved = self._ingest(None)
        self.refresh_panes()
        return moved

    def _drain(self) -> None:
        if self._stopped_ingest:
            return
        moved = self._ingest(DRAIN_BUDGET_S) if self.inbox else 0
        self.monitor.filter_more()  # a filter still judging the window: another slice
        if self.state.notifications != self._notified:
            self._rule_notification()
        if moved:
            self.refresh_panes(force=False)
        else:
            self.refresh_panes(force=False) if self._panes_stale() else self.monitor.update_status()
            self.log_index.warm_text(10_000)  # idle: prepare free-text search
        if moved and self.first_paint_at is None:
            self.first_paint_at = time.perf_counter()

    def refresh_panes(self, *, force: bool = True) -> None:
        """Repaint what changed: the log every time, the other panes at most every PANE_INTERVAL_S
        unless `force` (they are costlier to draw and a person can't read them faster anyway)."""
        now = time.perf_counter()
        if force or now - self._panes_at >= PANE_INTERVAL_S:
            self._panes_at = now
            for pane in (self.training_pane, self.system_pane, self.plugins_pane):
                pane.update_state()
            s = self.state
            self._pane_versions = (s.training_version, s.system_version, s.plugins.version)
            key = (s.training.status, len(s.system.active_notices()))
            if key != self._bindings_key:
                self._bindings_key = key
                self.monitor.update_pane_titles()
                self.refresh_bindings()
                self.monitor.refresh_bindings()
        self.log_view.sync()
        self.monitor.update_status()

    def _panes_stale(self) -> bool:
        s = self.state
        return (self._pane_versions != (s.training_version, s.system_version, s.plugins.version)
                and time.perf_counter() - self._panes_at >= PANE_INTERVAL_S)

    # -- what the monitor's screen is asked from outside it ------------------------------------------
    def apply_filter(self, query: str) -> bool:
        """Filter the log (see MonitorScreen.apply_filter)."""
        return self.monitor.apply_filter(query)

    def open_timeline(self, event: Event) -> None:
        """The event's thread (see MonitorScreen.open_timeline); the detail view's `c`."""
        self.monitor.open_timeline(event)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- training control --------------------------------------------------------------------------
    def action_replay_pause(self) -> None:
        if self.source.paceable:
            paused = self.source.toggle_pause()
            self.notify("replay paused (n steps)" if paused else "replay resumed", timeout=2)

    def action_pause_training(self) -> None:
        if not self.source.controllable:
            return
        status = self.state.training.status
        if status == "running":
            self._control(ev.CONTROL_PAUSE_REQUESTED, {"requested_by": "tui"})
            self.notify("pause requested", timeout=2)
        elif status == "paused":
            self._control(ev.CONTROL_RESUME_REQUESTED, {"requested_by": "tui"})
            self.notify("resume requested", timeout=2)
        else:
            self.notify(f"training is {status}", timeout=2)

    def action_resume_training(self) -> None:
        self.action_pause_training()

    def action_checkpoint_training(self) -> None:
        if not self.source.controllable or not self.state.training.live:
            self.notify("no live training to checkpoint", timeout=2)
            return
        self._control(ev.CONTROL_CHECKPOINT_REQUESTED, {"requested_by": "tui"})
        self.notify("checkpoint requested", timeout=2)

    def action_stop_training(self) -> None:
        if not self.source.controllable or not self.state.training.live:
            self.notify("no live training to stop", timeout=2)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._control(ev.CONTROL_STOP_REQUESTED, {"reason": "user", "requested_by": "tui"})
                self.notify("stop requested: saving a checkpoint", timeout=3)

        self.push_screen(ConfirmScreen("Stop training? A checkpoint is saved first.", "Stop", "Keep going"),
                         answered)

    def _control(self, name: str, data: dict[str, Any]) -> None:
        if self.source.controllable:
            self.run_worker(self.source.emit_control(name, data), group="control")

    def action_replay_step(self) -> None:
        if self.source.paceable:
            if not self.source.paused:
                self.source.toggle_pause()
            self.source.step(1)

    def action_replay_speed(self, factor: float) -> None:
        if self.source.paceable:
            current = self.source.speed or 64.0
            self.source.set_speed(min(1024.0, max(1 / 16, current * factor)))
            self.notify(f"replay speed {self.source.speed:g}×", timeout=1.5)

    # -- quitting ----------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        """Textual's own quit (ctrl+q) goes through the same flow as `q`."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        if self._quitting:
            return
        if self.source.owns_run and self.state.training.live:
            def answered(yes: bool | None) -> None:
                if yes:
                    self._begin_close()

            self.push_screen(ConfirmScreen("Training is running. Stop it and quit? (a checkpoint is saved)",
                                           "Stop & quit", "Stay"), answered)
            return
        self._begin_close()

    def action_interrupt(self) -> None:
        """Ctrl-C: stop as SIGINT does, without asking (a live run is stopped with a checkpoint), exit 130."""
        from kbert_tui.lifecycle import EXIT_INTERRUPTED, STOP_SIGNALS

        self.interrupt(EXIT_INTERRUPTED, STOP_SIGNALS[signal.SIGINT])

    def interrupt(self, status: int, why: str) -> None:
        """Ctrl-C or a stop signal (SIGINT, SIGTERM, SIGHUP): the quit flow without asking; the process
        then exits with `status`."""
        if self.interrupted is None:
            self.interrupted = (status, why)
            ended = self.state.training.status in ("completed", "failed", "stopped")
            self.interrupted_live = self.source.owns_run and not ended  # starting counts: the run is stopped
        if self.is_running:
            self._begin_close()

    def _begin_close(self) -> None:
        """Close once: a second q, Ctrl-C or signal must not cancel a close that is flushing the log."""
        if not self._quitting:
            self._quitting = True
            self.run_worker(self._close_and_exit(), group="quit")

    async def _close_and_exit(self) -> None:
        self.notify("closing: stopping the run and flushing the log…", timeout=5)
        try:
            await self.source.close()
        finally:
            self._drain()  # the last events (training.stopped…) into the state, for the exit code
            self._stopped_ingest = True
            if self._drain_timer is not None:
                self._drain_timer.stop()
            outcome = getattr(self.source, "outcome", None) or self.state.training.status
            self.exit(outcome)

    # -- a bug in the monitor ------------------------------------------------------------------------
    def _handle_exception(self, error: Exception) -> None:
        if self.crash is None:
            self.crash = crash_report(error)
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        """Textual would draw the traceback with every frame's locals on exit (for a deep RecursionError,
        minutes of work and a growing heap): `crash` says it in one line instead."""
        self.bell()
        self._close_messages_no_wait()

    # -- command palette ---------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, description, action, scope in palette_commands():
            where = self.monitor if scope == "screen" else self
            yield SystemCommand(title, description, partial(self.run_action, action, where))
