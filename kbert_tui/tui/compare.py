"""`kbert-tui compare RUN RUN …` in a terminal: loss per step and a validation metric per epoch overlaid,
one colour per run with a legend, and the runs' table (final and best metrics, wall time, samples/s,
the config keys that differ). Live runs are followed: their new lines are read every second.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, Static

from kbert_tui.events.follow import LogFollower
from kbert_tui.state.chart import X_AXES
from kbert_tui.state.compare import METRICS, RunRecord, compare_table, config_cell

from .chart import Line, braille_chart, x_axis
from .render import duration, palette

__all__ = ["BaselineScreen", "CompareApp", "RUN_COLOURS"]

RUN_COLOURS = ("#4fb3ff", "#ffc857", "#7bd88f", "#ff7a7a", "#c6a0f6", "#4dd0c8", "#f78c6c", "#ff9cce",
               "#b5e48c", "#d0d0d0")
"""One colour per run, in order; past ten they repeat (the legend still tells runs apart by name)."""

FOLLOW_S = 1.0
WIDE_TABLE = 110  # from this width each metric also shows its best epoch value: "final (best@epoch)"
RUN_LABEL_MAX = 24  # the run column (always in view) at most; the legend above has the whole name
GAP = 2  # columns between two table columns
_SHORT = {"train_loss": "loss", "val_loss": "val_loss", "val_accuracy": "val_acc", "val_f1": "val_f1"}


def _short_key(key: str, keys: Sequence[str]) -> str:
    """`training.learning_rate` → `learning_rate`, unless another differing key ends the same way."""
    last = key.rpartition(".")[2]
    return last if sum(k.rpartition(".")[2] == last for k in keys) == 1 else key


def run_style(index: int) -> Style:
    return Style.parse(RUN_COLOURS[index % len(RUN_COLOURS)])


def loss_lines(records: Sequence[RunRecord], x_axis_name: str) -> list[Line]:
    """Each run's training loss against the chosen x (step, samples seen, wall seconds)."""
    out = []
    for i, r in enumerate(records):
        axes: dict[str, Sequence[float]] = {"step": r.steps, "samples": r.samples, "time": r.times}
        xs = axes[x_axis_name]
        out.append(Line(xs, r.losses, run_style(i)))
    return out


def metric_lines(records: Sequence[RunRecord], metric: str) -> list[Line]:
    """Each run's `metric` per epoch, as marked points joined by a line."""
    out = []
    for i, r in enumerate(records):
        xs, ys = r.epoch_series(metric)
        out.append(Line(xs, ys, run_style(i)))
        out.append(Line(xs, ys, run_style(i), points=True))
    return out


class ChartView(Widget):
    """A titled braille chart that redraws to its own size."""

    DEFAULT_CSS = "ChartView { height: 1fr; }"

    def __init__(self, title: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.title = title
        self.lines: list[Line] = []
        self.unit = "step"
        self.log_y = False

    def show(self, title: str, lines: list[Line], unit: str, log_y: bool = False) -> None:
        self.title, self.lines, self.unit, self.log_y = title, lines, unit, log_y
        self.refresh()

    def render(self) -> Text:
        pal = palette(self.app.current_theme.dark if hasattr(self.app, "current_theme") else True)
        width, height = self.size.width, self.size.height
        out = Text(no_wrap=True)
        out.append(self.title[:width], pal.label)
        xs = [x for line in self.lines for x in line.xs]
        rows = braille_chart(self.lines, width, max(1, height - 2), pal.muted, log_y=self.log_y)
        for row in rows:
            out.append("\n")
            out.append_text(row)
        if xs:
            out.append("\n")
            out.append_text(x_axis(min(xs), max(xs), width, self.unit, pal.muted))
        return out


class CompareApp(App[None]):
    """The comparison view over already-loaded `records` (from `state.compare.load_run`)."""

    TITLE = "kbert-tui compare"
    CSS = """
    #legend { height: auto; padding: 0 1; }
    #charts { height: 1fr; }
    #loss { height: 3fr; padding: 0 1; }
    #metric { height: 2fr; padding: 0 1; }
    #table { height: auto; max-height: 12; padding: 0 1; }
    """
    BINDINGS = [
        Binding("m", "next_metric", "Metric"),
        Binding("x", "next_x", "X axis"),
        Binding("l", "toggle_log", "Log y"),
        Binding("left", "table_columns(-1)", "Columns", key_display="←→"),
        Binding("right", "table_columns(1)", "Columns", show=False),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),  # as in the monitor: Ctrl-C leaves
    ]

    def __init__(self, records: Sequence[RunRecord], *, follow: bool = True) -> None:
        super().__init__()
        self.records = list(records)
        self.metric_index = 1 if len(METRICS) > 1 else 0  # val_loss first: train_loss is on the loss chart
        self.x_name = "step"
        self.log_y = False
        self.first_column = 0  # the table's first column in view after the run's (← → move it)
        self.hidden_columns = (0, 0)  # columns out of view to the left, to the right
        # live runs keep growing: follow from the end of what was loaded (lines read twice are ignored)
        self.followers = {i: LogFollower(r.path, from_end=True) for i, r in enumerate(self.records)
                          if follow and not r.finished}

    def compose(self) -> ComposeResult:
        yield Static(id="legend")
        yield ChartView("", id="loss")
        yield ChartView("", id="metric")
        yield Static(id="table")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        if self.followers:
            self.set_interval(FOLLOW_S, self.follow)

    def on_unmount(self) -> None:
        for follower in self.followers.values():
            follower.close()

    @property
    def metric(self) -> str:
        return METRICS[self.metric_index]

    def follow(self) -> None:
        moved = False
        for i, follower in list(self.followers.items()):
            lines = follower.read_lines(limit=50_000)
            for line in lines:
                self.records[i].feed_line(line)
            moved = moved or bool(lines)
            if self.records[i].finished and follower.caught_up:
                follower.close()
                del self.followers[i]
        if moved:
            self.redraw()

    def redraw(self) -> None:
        legend = Text(no_wrap=False)
        for i, r in enumerate(self.records):
            legend.append("━━ ", run_style(i))
            legend.append(r.label, run_style(i))
            legend.append(f" ({r.status})   ", palette(True).muted)
        self.query_one("#legend", Static).update(legend)
        scale = ", log y" if self.log_y else ""
        self.query_one("#loss", ChartView).show(f"training loss by {self.x_name}{scale}",
                                                loss_lines(self.records, self.x_name), self.x_name, self.log_y)
        self.query_one("#metric", ChartView).show(f"{self.metric} per epoch (m: next metric)",
                                                  metric_lines(self.records, self.metric), "epoch")
        self.query_one("#table", Static).update(self._table())

    def _table(self) -> Table:
        """The runs' table, its columns whole: the run's, then as many as fit from `first_column` on (the rest a
        ← → away, said in its caption). Most telling first: below WIDE_TABLE columns no status (the legend
        says it) and finals only; the differing config keys last."""
        headers, rows = self._columns()
        width = max(20, self.size.width - 2)  # the #table's padding
        run_width = max(len(headers[0]), min(RUN_LABEL_MAX, max((len(r[0]) for r in rows), default=0)))
        widths = [max([len(headers[c])] + [len(r[c]) for r in rows]) for c in range(1, len(headers))]
        self.first_column = max(0, min(self.first_column, len(widths) - 1))
        shown: list[int] = []
        used = run_width
        for c in range(self.first_column, len(widths)):
            if shown and used + GAP + widths[c] > width:
                break
            shown.append(c + 1)
            used += GAP + widths[c]
        before, after = self.first_column, len(widths) - self.first_column - len(shown)
        self.hidden_columns = (before, after)
        caption = None
        if before or after:
            caption = (f"columns {before + 1}–{before + len(shown)} of {len(widths)}"
                       + (f" · ← {before} more" if before else "") + (f" · {after} more →" if after else ""))
        table = Table(box=None, padding=(0, GAP // 2), pad_edge=False, header_style="bold", expand=False,
                      caption=caption, caption_justify="left", caption_style=palette(True).muted)
        table.add_column(headers[0], no_wrap=True, overflow="ellipsis", width=run_width)
        for c in shown:
            table.add_column(headers[c], no_wrap=True, overflow="ellipsis", min_width=widths[c - 1])
        for i, row in enumerate(rows):
            table.add_row(Text(row[0], run_style(i)), *(row[c] for c in shown))
        return table

    def _columns(self) -> tuple[list[str], list[list[str]]]:
        """The table's headers and its rows of cells, every column."""
        data = compare_table(self.records).data
        wide = self.size.width >= WIDE_TABLE
        differing = list(data[0]["config"]) if data else []
        headers = ["run"] + (["status"] if wide else []) + ["steps"] + [_SHORT[m] for m in METRICS] + ["wall", "smp/s"]
        headers += [_short_key(key, differing) for key in differing]
        rows = []
        for row in data:
            label = row["run"] if len(row["run"]) <= RUN_LABEL_MAX else row["run"][: RUN_LABEL_MAX - 1] + "…"
            cells = [label] + ([row["status"]] if wide else []) + [str(row["steps"])]
            for metric in METRICS:
                value = row["final"].get(metric)
                cell = "—" if value is None else f"{value:.4f}"
                best = row["best"].get(metric)
                if wide and best is not None:
                    cell += f" ({best['value']:.4f}@{best['epoch']})"
                cells.append(cell)
            wall, speed = row["wall_s"], row["samples_per_sec"]
            cells += [duration(wall), "—" if speed is None else f"{speed:.0f}"]
            cells += [config_cell(row["config"][key]) for key in differing]
            rows.append(cells)
        return headers, rows

    def action_table_columns(self, by: int) -> None:
        """Bring the table's columns out of view on the right (1) or left (-1) into it."""
        before, after = self.hidden_columns
        if (by > 0 and after) or (by < 0 and before):
            self.first_column += by
            self.query_one("#table", Static).update(self._table())

    def on_resize(self) -> None:
        self.query_one("#table", Static).update(self._table())

    def action_next_metric(self) -> None:
        self.metric_index = (self.metric_index + 1) % len(METRICS)
        self.redraw()

    def action_next_x(self) -> None:
        self.x_name = X_AXES[(X_AXES.index(self.x_name) + 1) % len(X_AXES)]
        self.redraw()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.redraw()


class BaselineScreen(ModalScreen[str | None]):
    """Asks for a run to draw under the monitor's loss chart; Enter with nothing clears the baseline."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str | None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Label(Text("Baseline run: a run directory or events file (empty: none)"), classes="modal-title")
            yield Input(value=self.current or "", placeholder="runs/demo-20261128-101500-ab12", id="baseline")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
