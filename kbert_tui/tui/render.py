"""Drawing helpers shared by the panes: palettes for dark and light themes, bars, sparklines, charts.

Everything returns `rich.text.Text` built with `Text.append` (never parsed as markup), so event data
is always shown literally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.style import Style
from rich.text import Text

from kbert_tui.state.chart import finite_range, fraction

__all__ = ["Palette", "palette", "bar", "sparkline", "axis_label", "fit_pairs", "duration", "middle_cut"]

_BLOCKS = " ▁▂▃▄▅▆▇█"


class Palette:
    """Rich styles for each event kind and pane element, tuned for a dark or a light background."""

    def __init__(self, dark: bool) -> None:
        c = _DARK if dark else _LIGHT
        self.dark = dark
        self.kind: dict[str, Style] = {k: Style.parse(v) for k, v in c["kinds"].items()}
        self.time = Style.parse(c["time"])
        self.source = Style.parse(c["source"])
        self.muted = Style.parse(c["muted"])
        self.label = Style.parse(c["label"])
        self.value = Style.parse(c["value"])
        self.bar_done = Style.parse(c["bar_done"])
        self.bar_todo = Style.parse(c["bar_todo"])
        self.chart = Style.parse(c["chart"])
        self.chart2 = Style.parse(c["chart2"])
        self.cursor = Style.parse(c["cursor"])
        self.status = {k: Style.parse(v) for k, v in c["status"].items()}


_DARK: dict[str, Any] = {
    "kinds": {
        "error": "bold #ff7a7a on #3b1a1a", "warning": "bold #ffc857", "success": "bold #7bd88f",
        "control": "#d6a5ff", "training": "#e6e6e6", "system": "#7fb8e6", "plugin": "#c6a0f6",
        "data": "#9fd3c7", "model": "#a7b0c0", "other": "#b8b8b8",
    },
    "time": "#8a8a8a", "source": "#8fa3b8", "muted": "#8a8a8a", "label": "#9aa5b1", "value": "bold #f0f0f0",
    "bar_done": "#4fb3ff", "bar_todo": "#3a3f45", "chart": "#4fb3ff", "chart2": "#ffc857",
    "cursor": "on #2f4f6f",
    "status": {"running": "bold #7bd88f", "paused": "bold #ffc857", "stopped": "bold #ffc857",
               "failed": "bold #ff7a7a", "completed": "bold #4fb3ff", "waiting": "#8a8a8a"},
}

_LIGHT: dict[str, Any] = {
    "kinds": {
        "error": "bold #a0001c on #fde2e2", "warning": "bold #8a5200", "success": "bold #17692d",
        "control": "#6a1b9a", "training": "#1f1f1f", "system": "#0b5394", "plugin": "#5b2c91",
        "data": "#00695c", "model": "#455a64", "other": "#4a4a4a",
    },
    "time": "#6b6b6b", "source": "#3f5366", "muted": "#6b6b6b", "label": "#4a5866", "value": "bold #111111",
    "bar_done": "#0b62c4", "bar_todo": "#d4dae0", "chart": "#0b62c4", "chart2": "#a35f00",
    "cursor": "on #c8dcf5",
    "status": {"running": "bold #17692d", "paused": "bold #8a5200", "stopped": "bold #8a5200",
               "failed": "bold #a0001c", "completed": "bold #0b62c4", "waiting": "#6b6b6b"},
}

_PALETTES: dict[bool, Palette] = {}


def palette(dark: bool) -> Palette:
    p = _PALETTES.get(dark)
    if p is None:
        p = _PALETTES[dark] = Palette(dark)
    return p


def bar(fraction: float, width: int, pal: Palette) -> Text:
    """A horizontal progress bar in eighth blocks."""
    width = max(1, width)
    fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    done = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
    text = Text()
    text.append(done, pal.bar_done)
    text.append("━" * (width - len(done)) if width > len(done) else "", pal.bar_todo)
    return text


def _resample(values: Sequence[float], width: int) -> list[float]:
    n = len(values)
    if n <= width:
        return list(values)
    out = []
    for i in range(width):
        lo, hi = i * n // width, (i + 1) * n // width
        chunk = values[lo:max(hi, lo + 1)]
        out.append(sum(chunk) / len(chunk))
    return out


def sparkline(values: Sequence[float], width: int, style: Style, *, lo: float | None = None,
              hi: float | None = None) -> Text:
    """One row of block characters, oldest first, scaled to [lo, hi] or the data's range; fewer values than
    `width` fill it from the left, so the line starts beside the value it follows."""
    pts = _resample(values, width)
    data_range = finite_range(pts)
    if data_range is None:
        return Text(" " * width)
    low = data_range[0] if lo is None else lo
    high = data_range[1] if hi is None else hi
    chars = []
    flat = not high > low
    for v in pts:
        where = fraction(v, low, high)  # clamped to [lo, hi]; NaN for NaN and ±inf, drawn as a gap
        chars.append(" " if math.isnan(where) else _BLOCKS[4 if flat else int(round(where * 7)) + 1])
    return Text("".join(chars).ljust(width), style)


def axis_label(value: float) -> str:
    """`value` in exactly 7 cells (fewer significant digits before it would grow), so chart rows align."""
    for digits in (4, 3, 2, 1):
        text = f"{value:.{digits}g}"
        if len(text) <= 7:
            return text.rjust(7)
    return f"{value:.0e}"[:7].rjust(7)


def fit_pairs(pairs: list[tuple[str, str, str]], width: int, label: Style, value: Style) -> Text:
    """`label value` pairs in one row: the long labels if they fit in `width`, else the short ones
    closer together."""
    for which, gap in ((0, "  "), (1, " ")):
        text = Text(no_wrap=True, overflow="ellipsis")
        for pair in pairs:
            text.append(pair[which], label)
            if pair[2]:
                text.append(" ")
                text.append(pair[2], value)
            text.append(gap)
        text.rstrip()
        if text.cell_len <= width:
            return text
    return text


def duration(seconds: float | None) -> str:
    """`1:02:03` / `2:03` / `—`."""
    if seconds is None or not math.isfinite(seconds) or abs(seconds) >= 1e9:  # 1e9 s: 31 years, not a duration
        return "—"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def middle_cut(text: str, width: int) -> str:
    """`text` in at most `width` cells, its middle replaced by `…` (a path keeps its last name whole where it
    can: `/home/…/checkpoints/stopped-step-350`)."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:max(0, width)]
    tail = (width - 1) // 2
    if "/" in text:
        tail = max(tail, min(width - 2, cell_len(text.rsplit("/", 1)[-1]) + 1))
    head = width - 1 - tail
    return set_cell_size(text, head) + "…" + _last_cells(text, tail)


def _last_cells(text: str, width: int) -> str:
    out = ""
    for ch in reversed(text):
        if cell_len(out) + cell_len(ch) > width:
            break
        out = ch + out
    return out
