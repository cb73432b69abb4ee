"""The monitor's own screen: it composes the panes and owns how they share the terminal.

Width classes on the screen drive the layout in monitor.tcss (`wide` from 120 columns: Plugins beside
the log; `-medium`; `-narrow` below 100: one top pane at a time, `1` / `2` switch, `t` swaps the log for
Plugins); `z` maximizes the focused pane. The loss chart's keys (smoothing, x axis, log y, cursor, a
baseline run) act on the Training pane here. The app keeps the source, ingest, control and quit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import ActiveBinding
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from kbert_tui.events import Event
from kbert_tui.state import EventLog, EventMatcher, FilterSyntaxError, count_of, parse_filter, printable
from kbert_tui.state.disk_log import DiskEventLog
from kbert_tui.state.log_index import search_older

from .keys import KEYS, bindings
from .log_view import LogView
from .render import middle_cut
from .panes import PluginsPane, SystemPane, TrainingPane
from .screens import DetailScreen, EventListScreen, TimelineScreen

if TYPE_CHECKING:
    from .app import MonitorApp

__all__ = ["NARROW", "WIDE", "MonitorScreen"]

WIDE = 120  # from here the plugins pane sits beside the log
NARROW = 100  # below this one top pane at a time (1 Training / 2 System) and t swaps the log for Plugins
FILTER_SLICE_S = 0.01  # a filter judges the window for about this long per tick: the loop never stalls on it
_ORDER = {key.action: i for i, key in reversed(list(enumerate(KEYS))) if key.action}


class MonitorScreen(Screen[None]):
    """Training, System, Plugins and the event log, laid out for the terminal's width; the filter, the
    log's navigation and the loss chart's keys."""

    BINDINGS = bindings("screen")

    # the filter in force (the log view's follow and frozen state are reactive on the view): watched, so the
    # status line follows it whoever sets it
    filter_query: reactive[str] = reactive("", always_update=True, init=False)

    def __init__(self) -> None:
        super().__init__()
        self.filter_error: str | None = None  # the bad filter's message while it shows
        self._last_status = ""
        self._filter_timer: Timer | None = None
        self._filter_keep: tuple[int | None, int | None] = (None, None)  # (the event to keep, where it was put)
        self._filter_chained = False  # a slice of the filter waits for the next frame

    def compose(self) -> ComposeResult:
        app: MonitorApp = self.app  # type: ignore[assignment]
        self.titlebar = Static(id="titlebar")
        self.training_pane = TrainingPane(app.state, id="training")
        self.system_pane = SystemPane(app.state, id="system")
        self.log_view = LogView(app.log_index, id="log")
        self.plugins_pane = PluginsPane(app.state, id="plugins")
        self.filter_box = Input(placeholder="filter: training.* loss<0.5 source:trainer !system.* text…  "
                                "(Esc clears)", id="filter")
        self.filter_error_line = Static(id="filter-error")
        self.statusbar = Static(id="statusbar")
        yield self.titlebar
        with Horizontal(id="top"):
            yield self.training_pane
            yield self.system_pane
        with Horizontal(id="bottom"):
            yield self.log_view
            yield self.plugins_pane
        yield self.filter_box
        yield self.filter_error_line
        yield self.statusbar
        self.footer = Footer(compact=True)
        yield self.footer

    def on_mount(self) -> None:
        self.plugins_pane.border_title = "Plugins"
        self.log_view.border_title = "Events"
        self.filter_box.cursor_blink = False
        self.filter_box.display = False
        self.filter_error_line.display = False
        app: MonitorApp = self.app  # type: ignore[assignment]
        app.monitor_ready()

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """Textual's, in the key table's order: the footer lists them so (the screen's before the app's otherwise)."""
        found = super().active_bindings
        return dict(sorted(found.items(), key=lambda item: _ORDER.get(item[1].binding.action, len(_ORDER))))

    def update_status(self) -> None:
        """The title (source, run, status) and the status line (counts, filter, follow, view paused)."""
        app = self._app
        log = app.log_index
        t = app.state.training
        width = self.size.width or 80
        title = self._title(printable(app.source.describe()), t.run_name or "", t.status, width)
        query = printable(log.matcher.query) if log.filtered else ""  # type: ignore[union-attr]
        path = printable(str(app.source.events_path)) if log.evicted and app.source.events_path else ""
        status = self._status(query, path)
        for _ in range(2):  # a long filter or path gives way (cut in the middle) before the counts do
            over = cell_len(status) - width
            if over <= 0:
                break
            if len(path) >= len(query):
                path = middle_cut(path, max(12, len(path) - over))
            else:
                query = middle_cut(query, max(12, len(query) - over))
            status = self._status(query, path)
        key = status + "\0" + title.plain
        if key != self._last_status:
            self._last_status = key
            # one fixed row each: no layout pass needed (a layout per frame costs more than the frame)
            self.statusbar.update(Text(status, no_wrap=True, overflow="ellipsis"), layout=False)
            self.titlebar.update(title, layout=False)

    @staticmethod
    def _title(source: str, run_name: str, status: str, width: int) -> Text:
        """` kbert-tui  live → …/events.jsonl · run name · running`: the run state always whole, at the end;
        the source (cut in the middle, keeping a file name) and the run name share what is left."""
        title = Text()
        title.append(" kbert-tui ", "bold reverse")
        tail = f" · {status}"
        room = width - title.cell_len - 1 - len(tail)
        name = f" · {run_name}" if run_name else ""
        if len(source) + len(name) > room:
            keep_name = min(len(name), max(room // 2, room - len(source)))
            source = middle_cut(source, max(1, room - keep_name))
            name = name if len(name) <= keep_name else name[: keep_name - 1] + "…" if keep_name >= 6 else ""
        title.append(f" {source}{name}{tail}")
        title.no_wrap = True
        title.overflow = "ellipsis"
        return title

    def _status(self, query: str, path: str) -> str:
        """The status line: counts, where older events are, the filter's matches, follow and view state."""
        app = self._app
        view = self.log_view
        log = app.log_index
        parts = [f"{log.total:,} events"]
        if not app.history_complete:
            parts.append("loading the history behind the end…")
        if log.evicted:
            parts.append(f"{log.evicted:,} older on disk" + (f" in {path}" if path else ""))
        if log.filtered:
            searching = ("" if getattr(log, "older_complete", True) else " so far, searching older events…") or (
                " so far, searching…" if log.filter_pending else "")
            parts.append(f"filter '{query}': {len(log):,} match{searching}")
        parts.append("FOLLOW" if view.follow else "follow off")
        if view.frozen_at is not None:
            parts.append(f"VIEW PAUSED +{log.total - view.frozen_at:,} new")
        if app.source.malformed:
            parts.append(f"{count_of(app.source.malformed, 'malformed line')} skipped")
        if app.state.errors_seen or app.state.warnings_seen:
            parts.append(f"{app.state.errors_seen} errors {app.state.warnings_seen} warnings")
        if app.start_error:
            parts.append(f"start failed: {app.start_error}")
        return " · ".join(parts)

    # -- width and narrow mode ----------------------------------------------------------------------
    def apply_width(self, width: int) -> None:
        """The layout for a terminal `width` columns wide (called on every resize, even under a modal)."""
        self.set_class(width >= WIDE, "wide")
        self.set_class(NARROW <= width < WIDE, "-medium")
        self.set_class(width < NARROW, "-narrow")
        self.footer.show_command_palette = width >= NARROW
        self.update_pane_titles()
        self.refresh_bindings()

    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    def update_pane_titles(self) -> None:
        """On narrow terminals the top pane's title is the switcher: the other pane's key, and warnings."""
        if not self.narrow:
            self.training_pane.border_title = "Training"
            self.system_pane.border_title = "System"
            return
        app: MonitorApp = self.app  # type: ignore[assignment]
        notices = len(app.state.system.active_notices())
        flag = f" ⚠{notices}" if notices else ""
        self.training_pane.border_title = f"Training │ 2 System{flag}"
        self.system_pane.border_title = f"System{flag} │ 1 Training"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Layout keys that do nothing at this width are neither offered in the footer nor run."""
        if action == "toggle_plugins":
            return not self.has_class("wide")
        if action == "show_top":
            if not self.narrow:
                return False
            shown = "system" if self.has_class("top-system") else "training"
            return parameters[0] != shown
        return True

    def action_show_top(self, which: str) -> None:
        """Narrow terminals: which pane fills the top (Training with the loss chart, or System)."""
        self.set_class(which == "system", "top-system")
        self.refresh_bindings()

    def action_toggle_plugins(self) -> None:
        """Show or hide the plugins pane (it's always shown on wide terminals)."""
        self.toggle_class("show-plugins")

    def action_maximize_pane(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        target: Any = self.focused
        while target is not None and target.id not in ("training", "system", "plugins", "log"):
            target = target.parent
        self.maximize(target if target is not None else self.log_view)

    # -- filter ------------------------------------------------------------------------------------
    def action_open_filter(self) -> None:
        box = self.filter_box
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.filter_box
        if box.value or self._app.log_index.filtered:
            box.value = ""
            self.apply_filter("")
        box.display = False
        self._show_filter_error(None)
        self.log_view.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value
        self._filter_timer = self.set_timer(0.12, lambda: self.apply_filter(value))

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        if self.apply_filter(event.value):
            self.log_view.focus()

    def apply_filter(self, query: str) -> bool:
        """Parse and apply `query` to the log; on bad syntax show the message and keep the old filter."""
        try:
            matcher = parse_filter(query)
        except FilterSyntaxError as exc:
            self._show_filter_error(exc)
            return False
        self._show_filter_error(None)
        view = self.log_view
        keep = view.selected_seq()
        self._app.log_index.set_filter(matcher, budget_s=FILTER_SLICE_S)  # the rest in `filter_more`, tick by tick
        self.filter_older(self._app.log_index)
        view.reset_filter(keep)
        self._filter_keep = (keep, view.selected_seq())
        self.filter_query = query
        return True

    def filter_more(self) -> None:
        """A tick: judge more of the window for a filter set in slices; once done, the event the cursor was
        on when it was set goes back under it (unless the cursor has moved since)."""
        log = self._app.log_index
        if not log.filter_pending:
            return
        view = self.log_view
        if not log.filter_more(FILTER_SLICE_S):
            view.sync()
            if not self._filter_chained:  # the next slice after this frame, not a whole tick later
                self._filter_chained = True
                self.call_after_refresh(self._filter_chain)
            return
        keep, placed = self._filter_keep
        if not view.follow and keep is not None and view.selected_seq() == placed:
            view.reset_filter(keep)
        else:
            view.sync()
        self.update_status()

    def _filter_chain(self) -> None:
        self._filter_chained = False
        self.filter_more()

    def filter_older(self, log: EventLog) -> None:
        """A whole recording's older events on disk: scan them for a filter the index can't answer."""
        self._filter_keep = (None, None)  # a new log or filter: nothing to put back under the cursor
        if isinstance(log, DiskEventLog) and log.matcher is not None and not log.older_complete:
            self._scan_older(log, log.matcher)

    @work(thread=True, exclusive=True, group="older-scan")
    def _scan_older(self, log: DiskEventLog, matcher: EventMatcher) -> None:
        worker = get_current_worker()
        for found, done in log.scan_older(matcher, cancelled=lambda: worker.is_cancelled):
            if worker.is_cancelled:
                return
            self.app.call_from_thread(self._older_found, log, matcher, found, done)

    def _older_found(self, log: DiskEventLog, matcher: EventMatcher, found: Any, done: bool) -> None:
        view = self.log_view
        if log is self._app.log_index and log.add_older(matcher, found, done):
            view.reset_filter(None if view.follow else view.selected_seq())
            self.update_status()

    def watch_filter_query(self) -> None:
        self.update_status()  # "filter 'q': N match", or nothing

    def _show_filter_error(self, exc: FilterSyntaxError | None) -> None:
        box = self.filter_error_line
        if exc is None:
            self.filter_error = None
            box.display = False
            return
        self.filter_error = exc.message
        box.display = True
        text = Text(" " * (exc.position + 1) + "^ ", "bold")  # under the column (the input pads by 1)
        text.append(printable(str(exc)), "bold")
        box.update(text)

    # -- log navigation ----------------------------------------------------------------------------
    @on(LogView.Moved, "#log")
    def _user_moved(self, message: LogView.Moved) -> None:
        view = message.view
        if view.follow and view.cursor < view.row_count - 1:
            view.follow = False

    @on(LogView.ViewChanged, "#log")
    def _view_changed(self, message: LogView.ViewChanged) -> None:
        self.update_status()  # FOLLOW / follow off, VIEW PAUSED

    @on(LogView.Opened, "#log")
    def _opened(self, message: LogView.Opened) -> None:
        self.app.push_screen(DetailScreen(self._app.log_index.get(message.seq)))

    def action_toggle_follow(self) -> None:
        view = self.log_view
        view.follow = not view.follow
        if view.follow:
            view.frozen_at = None
        view.sync()

    def action_toggle_view_pause(self) -> None:
        view = self.log_view
        if view.frozen_at is None:
            view.frozen_at = self._app.log_index.total
        else:
            view.frozen_at = None
        view.sync()

    def action_problem(self, direction: int) -> None:
        view = self.log_view
        seq = view.selected_seq()
        if seq is None:
            return
        found = self._app.log_index.problem_after(seq, forward=direction > 0, limit=view.frozen_at)
        if found is None:
            self.notify("no more errors or warnings " + ("below" if direction > 0 else "above"), timeout=2)
            return
        view.follow = False
        view.go_to_seq(found)

    def action_drill(self) -> None:
        event = self.log_view.selected_event()
        if event is None:
            return
        self.open_timeline(event)

    def open_timeline(self, event: Event) -> None:
        """The event's thread (causes and consequences), widening to its step, epoch and run."""
        log = self._app.log_index
        older = self.log_view.selected_seq() if isinstance(log, DiskEventLog) else None
        if older is not None and older < log.base and log.get(older) is event:  # read from disk: its neighbours
            around, local = log.neighbourhood(older)  # type: ignore[attr-defined]
            self.app.push_screen(TimelineScreen(around, local, older_on_disk=0))
            return
        seq = log.threads.seq_of(event.id)
        if seq is None or seq < log.base:
            self.notify("that event has left memory (o searches the events file)", timeout=3)
            return
        self.app.push_screen(TimelineScreen(self._app.log_index, seq, older_on_disk=self._app.log_index.evicted))

    def action_search_disk(self) -> None:
        """Search the events that left the in-memory window (they are in the events file) with the filter."""
        evicted = self._app.log_index.evicted
        path = self._app.source.events_path
        if not evicted:
            self.notify("every event of the log is already in the view: nothing older to search", timeout=3)
            return
        if path is None or not path.exists():
            self.notify("there is no events file to search", timeout=3)
            return
        what = f"filter '{self._app.log_index.matcher.query}'" if self._app.log_index.matcher else "no filter"
        self.notify(f"searching the {evicted:,} older events in {printable(path.name)} ({printable(what)})…", timeout=4,
                    markup=False)
        self._search_disk(path, evicted, self._app.log_index.matcher)

    @work(thread=True, exclusive=True, group="disk-search")
    def _search_disk(self, path: Path, count: int, matcher: EventMatcher | None) -> None:
        worker = get_current_worker()
        result = search_older(path, count, matcher, self._app.log_index.capacity, cancelled=lambda: worker.is_cancelled)
        if result is not None and not worker.is_cancelled:
            found, matched, _ = result
            self.app.call_from_thread(self._show_disk_results, found, matched, count, matcher)

    def _show_disk_results(self, found: EventLog, matched: int, searched: int, matcher: EventMatcher | None) -> None:
        where = f"filter '{printable(matcher.query)}'" if matcher else "no filter"
        title = f"older events on disk: {matched:,} of {searched:,} match ({where})"
        if found.evicted:
            title += f"; showing the newest {found.in_memory:,}"
        self.app.push_screen(EventListScreen(found, title=title, hint="Enter detail · Esc close"))

    # -- the loss chart: smoothing, x axis, log y and a cursor, kept for the session -----------------
    def action_smoothing(self, direction: int) -> None:
        self.training_pane.chart.smoother(direction)
        self._chart_changed(f"smoothing {self.training_pane.chart.smoothing:g}" if self.training_pane.chart.smoothing
                            else "smoothing off")

    def action_chart_x(self) -> None:
        self.training_pane.chart.next_x()
        self._chart_changed(f"loss by {self.training_pane.chart.x_axis}")

    def action_chart_log(self) -> None:
        chart = self.training_pane.chart
        chart.log_y = not chart.log_y
        self._chart_changed("log y" if chart.log_y else "linear y")

    def action_chart_cursor(self, direction: int) -> None:
        curve = self._app.state.training.curve
        # a press moves about one chart column (the pane's width less the axis labels)
        width = max(1, self.training_pane.content_region.width - 8)
        self.training_pane.chart.move_cursor(len(curve), direction * max(1, len(curve) // (2 * width)))
        self.training_pane.chart_changed()

    def action_baseline(self) -> None:
        """Ask for another run and draw its loss under this one's (Enter with nothing: no baseline)."""
        from .compare import BaselineScreen

        current = self.training_pane.baseline
        self.app.push_screen(BaselineScreen(current[0] if current else None), self._baseline_chosen)

    def _baseline_chosen(self, target: str | None) -> None:
        if target is None:
            return
        if not target:
            self.training_pane.baseline = None
            self._chart_changed("no baseline")
            return
        self._load_baseline(target)

    @work(thread=True, exclusive=True, group="baseline")
    def _load_baseline(self, target: str) -> None:
        from kbert_tui.remote import resolve_run
        from kbert_tui.state.compare import baseline_curve, label_runs, load_run

        try:
            record = load_run(resolve_run(target).events_path)
        except OSError as error:
            self.app.call_from_thread(self.notify, printable(f"baseline: {error}"), severity="error", timeout=5,
                                      markup=False)
            return
        if not record.steps:
            self.app.call_from_thread(self.notify, printable(f"baseline: {target} holds no training steps"),
                                  severity="error", timeout=5, markup=False)
            return
        label_runs([record])
        self.app.call_from_thread(self._set_baseline, record.label, baseline_curve(record))

    def _set_baseline(self, label: str, curve: Any) -> None:
        self.training_pane.baseline = (label, curve)
        self._chart_changed(f"baseline {label}: {len(curve):,} points")

    def _chart_changed(self, what: str) -> None:
        self.training_pane.chart_changed()
        self.notify(what, timeout=1.5, markup=False)

    @property
    def _app(self) -> MonitorApp:
        return self.app  # type: ignore[return-value]
