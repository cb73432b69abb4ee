"""The training, system and plugins panes: each draws a slice of `RunState` and nothing else."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static

from kbert_tui.state import PluginInfo, RunState, format_number, printable

from kbert_tui.state.chart import ChartSettings, LossCurve, readout, smoothed

from .chart import Line, braille_chart, raw_line
from .render import Palette, bar, duration, fit_pairs, middle_cut, palette, sparkline

__all__ = ["TrainingPane", "SystemPane", "PluginsPane"]


class StatePane(Widget):
    """A pane that redraws from the shared RunState when told the state moved on."""

    DEFAULT_CSS = "StatePane { height: 1fr; }"

    def __init__(self, state: RunState, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        self._drawn_version = -1

    @property
    def pal(self) -> Palette:
        return palette(self.app.current_theme.dark)

    def version(self) -> int:
        """A number that changes whenever what this pane shows may have changed."""
        return self.state.events_seen

    def redraw_all(self) -> None:
        """The state object was replaced: draw it at the next update."""
        self._drawn_version = -1

    def update_state(self) -> None:
        version = self.version()
        if version != self._drawn_version:
            self._drawn_version = version
            self.refresh()


def _pair(text: Text, label: str, value: str, pal: Palette, style: Any = None) -> None:
    text.append(label, pal.label)
    text.append(value, style or pal.value)
    text.append("  ")


class TrainingPane(StatePane):
    """Run identity, progress bars with ETA, current metrics, best metric, the loss chart, the state."""

    def __init__(self, state: RunState, **kwargs: Any) -> None:
        super().__init__(state, **kwargs)
        self.chart = ChartSettings()  # smoothing, log y, x axis, cursor: kept for the session
        self.baseline: tuple[str, LossCurve] | None = None  # another run's loss, drawn for reference (b)

    def chart_changed(self) -> None:
        self.redraw_all()
        self.update_state()

    def version(self) -> int:
        return self.state.training_version

    def render(self) -> RenderableType:
        pal = self.pal
        width = max(20, self.content_region.width or 60)
        height = max(1, self.content_region.height or 12)
        rows = self._rows(width, pal)
        # The loss chart goes below when at least CHART_MIN_ROWS rows (and the cursor's) are left for it,
        # else beside the text (80x24); in a narrow pane it goes below, the least important rows giving way.
        want = CHART_MIN_ROWS + (self.chart.cursor is not None)
        below = height - len(rows)
        if below >= want or width < 60:
            self._keys_on_edge(False)
            if below < want:
                rows = _by_priority(rows, max(height - want, sum(1 for p, _ in rows if p <= 2)))
                below = height - len(rows)
            lines = [line for _, line in rows]
            if below >= 1:
                lines.extend(self._chart(width, below, pal))
            return _group(_clip(lines, height, pal))
        # Beside the text the chart's caption has no room for its keys: they sit on the pane's bottom edge,
        # and the cursor's readout takes the pane's last row, whole width.
        self._keys_on_edge(True)
        readout_line = self._readout(pal)
        text_h = height - (readout_line is not None)
        chart_w = max(24, width // 3)
        left_w = width - chart_w - SIDE_GAP
        left = [line for _, line in _by_priority(self._rows(left_w, pal), text_h)]
        right = self._chart(chart_w, text_h, pal, with_readout=False)
        lines = []
        for i in range(max(len(left), len(right))):
            row = left[i].copy() if i < len(left) else Text()
            row.truncate(left_w, overflow="ellipsis", pad=True)
            row.append(" " * SIDE_GAP)
            if i < len(right):
                row.append_text(right[i])
            lines.append(row)
        if readout_line is not None:
            lines.append(readout_line)
        return _group(lines)

    def _keys_on_edge(self, on: bool) -> None:
        wanted = CHART_KEYS if on else ""
        if self.border_subtitle != wanted:
            self.border_subtitle = wanted

    def _readout(self, pal: Palette, width: int | None = None) -> Text | None:
        """The values under the chart's cursor, or None when there is no cursor."""
        t, chart = self.state.training, self.chart
        if chart.cursor is None:
            return None
        width = width if width is not None else max(20, self.content_region.width or 60)
        text = readout(t.curve, chart, smoothed(t.curve, chart.smoothing), width)
        return Text(text, pal.value, no_wrap=True, overflow="ellipsis")

    def _rows(self, width: int, pal: Palette) -> list[tuple[int, Text]]:
        """The text rows, each with its priority (0 = kept longest) for when the pane is short."""
        t = self.state.training
        rows: list[tuple[int, Text]] = []

        head = Text()
        head.append(t.run_name or "—", pal.value)
        head.append(f"  {t.run_id or ''}", pal.muted)
        status = t.status.upper()
        head.truncate(max(1, width - len(status) - 1), overflow="ellipsis")
        head.append(" " * max(1, width - head.cell_len - len(status)))
        head.append(status, pal.status.get(t.status, pal.value))
        rows.append((0, head))

        ident = Text()
        if t.model_type:
            ident.append(t.model_type, pal.label)
        if t.num_parameters:
            ident.append(f" {t.num_parameters / 1e6:.2f}M params", pal.label)
        if t.frozen_parameters:
            ident.append(f" (+{t.frozen_parameters / 1e6:.2f}M frozen: {t.frozen})", pal.muted)
        if t.device:
            ident.append(f" · {t.device}", pal.label)
        if t.blas:
            ident.append(f" ({t.blas})", pal.muted)
        if t.batch_size:
            ident.append(f" · batch {t.batch_size}", pal.label)
        rows.append((8, ident))

        label_w = max(14, len(f"Batch {t.batch}/{t.steps_per_epoch or '?'}") + 1)
        tail_w = 15
        bar_w = max(4, width - label_w - tail_w)
        total_epochs = t.total_epochs or 0
        spe = t.steps_per_epoch or 0
        row = Text(f"Epoch {t.epoch}/{total_epochs or '?'}".ljust(label_w), pal.label)
        row.append_text(bar(t.epoch_fraction, bar_w, pal))
        row.append(f" {t.epoch_fraction:4.0%} ETA {duration(t.eta_seconds)}", pal.value)
        rows.append((1, row))
        if t.features_total and (t.features_done < t.features_total or not t.step):
            frac = t.features_done / t.features_total
            row = Text("Features".ljust(label_w), pal.label)
            row.append_text(bar(frac, bar_w, pal))
            eta = t.features_eta if frac < 1 else None
            row.append(f" {frac:4.0%} ETA {duration(eta)}" if frac < 1 else f" done {duration(t.features_seconds)}",
                       pal.value)
            rows.append((2, row))
        batch_frac = t.batch / spe if spe else 0.0
        row = Text(f"Batch {t.batch}/{spe or '?'}".ljust(label_w)[:label_w], pal.label)
        row.append_text(bar(batch_frac, bar_w, pal))
        row.append(f" {batch_frac:4.0%} ETA {duration(t.epoch_eta_seconds)}", pal.value)
        rows.append((2 if t.live else 7, row))  # a run that is over: its epoch bar says enough

        def num(value: float | None) -> str:
            return format_number(value) if value is not None else "—"

        rate = t.samples_per_sec
        sps = "—" if rate is None else f"{rate:,.0f}" if rate >= 1000 else f"{rate:,.1f}"  # 4 digits: no tenths
        rows.append((1, fit_pairs([("loss", "loss", num(t.loss)), ("lr", "lr", num(t.learning_rate)),
                                   ("gnorm", "gn", num(t.grad_norm)), ("samples/s", "sps", sps)],
                                  width, pal.label, pal.value)))

        for long, of_total in ((True, True), (False, True), (False, False)):
            best = Text()
            if t.best_value is not None:
                where = f" (epoch {t.best_epoch})" if long else f"@{t.best_epoch}"
                _pair(best, f"best {t.best_metric} ", f"{format_number(t.best_value)}{where}", pal,
                      pal.kind["success"])
            else:
                best.append("best —  ", pal.muted)
            _pair(best, "step ", f"{t.step}/{t.total_steps or '?'}" if of_total else str(t.step), pal)
            best.append(f"{'elapsed ' if long else ''}{duration(t.elapsed_seconds)}", pal.muted)
            if best.cell_len <= width:
                break
        rows.append((3, best))
        if lanes := self.state.ranks.summary():
            row = Text(lanes, pal.label)
            row.truncate(width, overflow="ellipsis")
            rows.append((3, row))
        if t.epoch_metrics:
            last = t.epoch_metrics[-1]
            pairs = [(f"epoch {last.get('epoch')}", f"ep{last.get('epoch')}", "")]
            for key, short in (("train_loss", "train"), ("val_loss", "val"), ("val_accuracy", "acc"),
                               ("val_f1", "f1")):
                if key in last:
                    pairs.append((key, short, format_number(last[key])))
            metrics = fit_pairs(pairs, width, pal.label, pal.value)
            if metrics.cell_len > width:  # the validation scores matter more than the training loss
                metrics = fit_pairs([p for p in pairs if p[0] != "train_loss"], width, pal.label, pal.value)
            rows.append((3, metrics))
        if versus := t.versus_baseline:
            if len(versus) > width:  # shorter words before any figure is cut (and then with an ellipsis)
                versus = versus.replace("(encoder ", "(enc ").replace(" · ", " vs ")
            row = Text(versus, pal.value)
            row.truncate(max(1, width), overflow="ellipsis")
            rows.append((3, row))

        if t.status == "failed":
            err = Text("✖ ", pal.kind["error"])
            err.append(t.error or "failed", pal.kind["error"])
            rows.append((0, err))
        elif t.status == "stopped":
            where = t.checkpoint_path or "—"
            lead = f"■ stopped ({t.stop_reason or 'user'}) " + ("checkpoint " if len(where) < width - 40 else "")
            where = middle_cut(where, max(12, width - len(lead)))  # keeps the checkpoint folder's name
            rows.append((2, Text(lead + where, pal.kind["warning"])))
        elif t.status == "completed":
            note = "✔ completed" + (" (stopped early)" if t.stopped_early else "")
            if t.restored_epoch is not None:
                note += f" · weights of epoch {t.restored_epoch}"
            rows.append((2, Text(note, pal.kind["success"])))
        elif t.status == "paused":
            rows.append((2, Text("❚❚ paused — press p to resume", pal.kind["warning"])))
        if self.state.rules:
            text = Text("rules ", pal.label)
            for name, seen in self.state.rules.items():
                style = pal.kind["warning"] if "notify" in seen.actions else pal.kind["control"]
                text.append(f"{name} ×{seen.count} {'+'.join(seen.actions)}", style)
                text.append("  ")
            text.append(f"(last: {seen.reason})", pal.muted)
            text.truncate(width, overflow="ellipsis")
            rows.append((3, text))
        if self.state.pending_control and t.live:
            rows.append((5, Text(f"… {self.state.pending_control} requested", pal.kind["control"])))
        return rows

    def _caption(self, width: int, pal: Palette, *, keys: bool) -> Text:
        """`loss by step (1,234, 2/pt) ema 0.6 ▪val` and, with `keys` and room, the chart's keys at the right;
        the count goes first when the row is short."""
        t, chart = self.state.training, self.chart
        curve = t.curve
        for counted in (True, False):
            caption = Text(f"loss by {chart.x_axis}", pal.label)
            if counted:
                caption.append(f" ({t.loss_history.count:,}" + (f", {curve.stride}/pt" if curve.stride > 1 else "")
                               + ")", pal.label)
            caption.append(f" ema {chart.smoothing:g}" if chart.smoothing else " raw", pal.muted)
            if chart.log_y:
                caption.append(" log", pal.muted)
            if curve.marks:
                caption.append(" ▪val", pal.chart2)
            if self.baseline is not None:
                caption.append(f" vs {printable(self.baseline[0])}", pal.kind["control"])
            if caption.cell_len + (len(CHART_KEYS) + 1 if keys else 0) <= width:
                break
        if keys and caption.cell_len + len(CHART_KEYS) < width:  # the 80-column footer has no room for these
            caption.append(" " * (width - caption.cell_len - len(CHART_KEYS)) + CHART_KEYS, pal.muted)
        return caption

    def _chart(self, width: int, height: int, pal: Palette, *, with_readout: bool = True) -> list[Text]:
        """The caption, the cursor's readout (when `with_readout`) and the loss chart (raw faint, smoothed,
        validation per epoch), `height` rows in all."""
        t, chart = self.state.training, self.chart
        curve = t.curve
        smooth = smoothed(curve, chart.smoothing)
        lines = [self._caption(width, pal, keys=with_readout)]
        if with_readout and (line := self._readout(pal, width)) is not None:
            lines.append(line)
        rows = min(height - len(lines), 8)
        if rows < 1:
            return lines[:height]
        points = curve.points()
        xs = points.x[chart.x_axis]
        # the raw steps (each column's min to max, NaN marked), faint under the smoothed line
        series = [raw_line(points, chart.x_axis, pal.muted if chart.smoothing else pal.chart, pal.kind["error"])]
        if chart.smoothing:
            series.append(Line(xs, smooth, pal.chart))
        if self.baseline is not None:  # smoothed alike, so the two curves compare fairly
            base = self.baseline[1]
            series.insert(0, Line(base.xs(chart.x_axis), smoothed(base, chart.smoothing), pal.kind["control"]))
        axis = ("step", "samples", "time").index(chart.x_axis)
        series.append(Line([m[axis] for m in curve.marks], [m[3] for m in curve.marks], pal.chart2, points=True))
        cursor_x = xs[chart.cursor] if chart.cursor is not None and chart.cursor < len(xs) else None
        lines.extend(braille_chart(series, width, rows, pal.muted, log_y=chart.log_y, cursor_x=cursor_x,
                                   cursor_style=pal.cursor, marks_x=[m[axis] for m in t.resume_marks]))
        return lines


CHART_MIN_ROWS = 4
SIDE_GAP = 2  # cells between the text and a chart beside it, so the y axis's label never runs into a value
CHART_KEYS = "[ ] x y , ."  # smoothing, x axis, log y, cursor (the help says more)


class SystemPane(StatePane):
    """CPU, memory, disk, MLX and GPU with history sparklines; active warnings stand out."""

    def version(self) -> int:
        return self.state.system_version

    def render(self) -> RenderableType:
        s = self.state.system
        pal = self.pal
        width = max(20, self.content_region.width or 40)
        spark_w = max(4, width - 26)
        lines: list[Text] = []

        def metric(label: str, value: float | None, key: str, extra: str = "", hi: float | None = 100.0) -> None:
            row = Text(label.ljust(5), pal.label)
            row.append(f"{value:5.1f}%" if value is not None else "    —", pal.value)
            row.append(" ")
            row.append_text(_history(s.history.get(key, ()), spark_w, pal, hi))
            if extra:
                row.append(" " + extra, pal.muted)
            lines.append(row)

        metric("CPU", s.cpu_percent, "cpu")
        rss = f"rss {s.process_rss_mb:,.0f}M" if s.process_rss_mb is not None else ""
        metric("Mem", s.memory_percent, "memory", rss)
        free = f"{s.disk_available_gb:,.0f}G free" if s.disk_available_gb is not None else ""
        metric("Disk", s.disk_percent, "disk", free)
        if s.mlx_active_mb is not None:
            row = Text("MLX  ".ljust(5), pal.label)
            row.append(f"{s.mlx_active_mb:,.0f} MB active", pal.value)
            if s.mlx_peak_mb is not None:
                row.append(f" peak {s.mlx_peak_mb:,.0f} MB", pal.muted)
            lines.append(row)
        if s.gpus:
            for key, gpu in sorted(s.gpus.items()):
                util = gpu.get("utilization")
                row = Text(f"GPU{key}".ljust(5), pal.label)
                row.append(f"{util:5.1f}%" if isinstance(util, (int, float)) else "    —", pal.value)
                row.append(" ")
                row.append_text(_history(s.history.get(f"gpu{key}", ()), spark_w, pal, 100.0))
                mem = gpu.get("memory_percent")
                temp = gpu.get("temperature")
                extra = []
                if isinstance(mem, (int, float)):
                    extra.append(f"mem {mem:.0f}%")
                if isinstance(temp, (int, float)):
                    extra.append(f"{temp:.0f}°C")
                row.append(" " + " ".join(extra), pal.muted)
                lines.append(row)
        else:
            row = Text("GPU  ", pal.label)
            row.append("no GPU", pal.value)
            lines.append(row)
            if s.gpu_unavailable:  # the reason is the useful part: wrapped, never cut
                lines.extend(_wrapped(s.gpu_unavailable, width, "     ", pal.muted))
        notices = s.active_notices()
        if not notices:
            lines.append(Text("no active warnings", pal.muted))
        for notice in notices:
            style = pal.kind["error"] if notice.kind == "error" else pal.kind["warning"]
            icon = {"warning": "⚠ ", "bottleneck": "⧗ ", "error": "✖ "}.get(notice.kind, "! ")
            lines.extend(_wrapped(f"{notice.component}: {notice.text}", width, "  ", style, first=icon, limit=4))
            for suggestion in notice.suggestions[:2]:
                lines.extend(_wrapped(suggestion, width, "     ", pal.muted, first="   → ", limit=3))
        height = max(1, self.content_region.height or len(lines))
        return _group(_clip(lines, height, pal))


class PluginsPane(Vertical):
    """A table of plugins (version, state, events handled, errors) and the selected one's details."""

    DEFAULT_CSS = """
    PluginsPane { height: 1fr; }
    PluginsPane > DataTable { height: 1fr; min-height: 3; }
    PluginsPane > #plugin-details { height: auto; max-height: 8; }
    """

    def __init__(self, state: RunState, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        self._seen_version = -1
        self._names: list[str] = []

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=False, id="plugin-table")
        for label, width in (("plugin", 18), ("state", 11), ("events", 6), ("errors", 6)):
            table.add_column(label, width=width, key=label)
        yield table
        yield Static("", id="plugin-details")

    def redraw_all(self) -> None:
        self._seen_version = -1
        self._names = []

    def update_state(self) -> None:
        plugins = self.state.plugins
        if plugins.version == self._seen_version:
            return
        self._seen_version = plugins.version
        table = self.query_one(DataTable)
        names = sorted(plugins.plugins)
        cursor = table.cursor_row
        pal = palette(self.app.current_theme.dark)
        if names != self._names:
            table.clear()
            for name in names:
                table.add_row(*self._cells(plugins.plugins[name], pal), key=name)
            self._names = names
            if names:
                table.move_cursor(row=min(max(cursor, 0), len(names) - 1))
        else:
            for name in names:
                for col, cell in zip(table.columns, self._cells(plugins.plugins[name], pal), strict=True):
                    table.update_cell(name, col, cell)
        self._show_details()

    def _cells(self, info: PluginInfo, pal: Palette) -> list[Text]:
        state_style = (pal.kind["error"] if info.state in ("failed", "set aside", "error")
                       else pal.kind["success"] if info.state == "active" else pal.muted)
        return [
            Text(info.name, no_wrap=True, overflow="ellipsis"), Text(info.state, state_style),
            Text(str(info.events_handled) if info.events_handled is not None else str(info.events_emitted),
                 justify="right"),
            Text(str(info.errors), pal.kind["error"] if info.errors else pal.muted, justify="right"),
        ]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_details()

    def selected(self) -> PluginInfo | None:
        table = self.query_one(DataTable)
        if not self._names or table.cursor_row < 0 or table.cursor_row >= len(self._names):
            return None
        return self.state.plugins.plugins.get(self._names[table.cursor_row])

    def _show_details(self) -> None:
        details = self.query_one("#plugin-details", Static)
        info = self.selected()
        pal = palette(self.app.current_theme.dark)
        if info is None:
            details.update(Text("no plugins yet", pal.muted))
            return
        text = Text()
        text.append(info.name, pal.value)
        text.append(f" {info.version or ''} · {info.state}", pal.label)
        handled = "—" if info.events_handled is None else str(info.events_handled)
        text.append(f"\nhandled {handled} · emitted {info.events_emitted} · errors {info.errors}", pal.label)
        if info.capabilities:
            text.append(" · " + ", ".join(info.capabilities), pal.muted)
        if info.config:
            text.append("\nconfig " + printable(_short_json(info.config)), pal.muted)
        if info.last_error:
            text.append("\nerror " + info.last_error, pal.kind["error"])
        for message in list(info.messages)[-4:]:
            text.append("\n· " + message[:200], pal.label)
        details.update(text)


def _wrapped(text: str, width: int, indent: str, style: Any, *, first: str | None = None,
             limit: int = 3) -> list[Text]:
    """`text` wrapped to `width` cells in at most `limit` rows (the first led by `first`, the others by
    `indent`); what is still left over after that is cut with an ellipsis."""
    import textwrap

    lead = indent if first is None else first
    chunks = textwrap.wrap(text, width=max(8, width - len(indent)), initial_indent=lead,
                           subsequent_indent=indent, break_on_hyphens=False) or [lead]
    if len(chunks) > limit:
        chunks = chunks[:limit]
        chunks[-1] = chunks[-1][: max(1, width - 1)] + "…"
    return [Text(chunk, style) for chunk in chunks]


def _history(values: Any, width: int, pal: Palette, hi: float | None) -> Text:
    """A reading's sparkline, as wide as its history up to `width`: what follows it sits right after it."""
    values = list(values)
    return sparkline(values, max(1, min(width, len(values))), pal.chart, lo=0.0, hi=hi)


def _by_priority(rows: list[tuple[int, Text]], count: int) -> list[tuple[int, Text]]:
    """The `count` most important rows (lowest priority number first), in their order."""
    keep = sorted(sorted(range(len(rows)), key=lambda i: rows[i][0])[: max(0, count)])
    return [rows[i] for i in keep]


def _clip(lines: list[Text], height: int, pal: Palette) -> list[Text]:
    """At most `height` rows; when some are left out the last row says so (z shows the pane whole)."""
    if len(lines) <= height:
        return lines
    kept = lines[: max(0, height - 1)]
    kept.append(Text(f"… {len(lines) - len(kept)} more (z zooms)", pal.muted))
    return kept


def _group(lines: list[Text]) -> Group:
    for line in lines:  # one row each: a long value is cut with an ellipsis, never wrapped
        line.no_wrap = True
        line.overflow = "ellipsis"
    return Group(*lines)


def _short_json(value: Any) -> str:
    import json

    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:119] + "…"
