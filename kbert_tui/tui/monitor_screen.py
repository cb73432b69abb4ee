"""The monitor's own screen: it composes the panes and owns how they share the terminal.

Width classes on the screen drive the layout in monitor.tcss (`wide` from 120 columns: Plugins beside
the log; `-medium`; `-narrow` below 100: one top pane at a time, `1` / `2` switch, `t` swaps the log for
Plugins); `z` maximizes the focused pane. The loss chart's keys (smoothing, x axis, log y, cursor, a
baseline run) act on the Training pane here. The app keeps the source, ingest, control and quit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import ComposeResult
from textual.binding import ActiveBinding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from kbert_tui.state import printable

from .keys import KEYS, bindings
from .log_view import LogView
from .panes import PluginsPane, SystemPane, TrainingPane

if TYPE_CHECKING:
    from .app import MonitorApp

__all__ = ["NARROW", "WIDE", "MonitorScreen"]

WIDE = 120  # from here the plugins pane sits beside the log
NARROW = 100  # below this one top pane at a time (1 Training / 2 System) and t swaps the log for Plugins
_ORDER = {key.action: i for i, key in reversed(list(enumerate(KEYS))) if key.action}


class MonitorScreen(Screen[None]):
    """Training, System, Plugins and the event log, laid out for the terminal's width."""

    BINDINGS = bindings("screen")

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
