"""Line charts in braille dots (2x4 per cell): several series overlaid, each in its own style.

Returns `rich.text.Text` rows, built with `Text.append` (never markup). Where series cross in a cell,
the one drawn last colours it: callers draw faint series (raw loss) first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from kbert_tui.state.chart import bucket, finite_range, fraction, log_values, padded_range, power_of_ten

from .render import axis_label

__all__ = ["Line", "braille_chart", "AXIS_WIDTH"]

AXIS_WIDTH = 8  # the y labels' column: axis_label's 7 cells and a space
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row within cell][column within cell]


@dataclass
class Line:
    """One series: x ascending; `points`: marks at each value (per-epoch validation) instead of a line."""

    xs: Sequence[float]
    ys: Sequence[float]
    style: Style
    points: bool = False


def braille_chart(lines: Sequence[Line], width: int, height: int, label_style: Style, *, log_y: bool = False,
                  x_range: tuple[float, float] | None = None, cursor_x: float | None = None,
                  cursor_style: Style | None = None) -> list[Text]:
    """`height` rows of `width` cells: y labels (top = max, bottom = min) then the plot area."""
    cols = max(1, width - AXIS_WIDTH)
    if height < 1 or width <= AXIS_WIDTH:
        return []
    ys_all = [log_values(line.ys) if log_y else list(line.ys) for line in lines]
    xs_range = x_range or finite_range(*(line.xs for line in lines))
    y_range = finite_range(*ys_all)
    if xs_range is None or y_range is None:
        return [Text(" " * width) for _ in range(height)]
    x0, x1 = xs_range
    low, high = padded_range(*y_range)
    dots_x, dots_y = cols * 2, height * 4
    masks = [[0] * cols for _ in range(height)]
    owner = [[-1] * cols for _ in range(height)]

    def plot(i: int, dx: int, dy: int) -> None:
        if 0 <= dx < dots_x and 0 <= dy < dots_y:
            r, c = dy // 4, dx // 2
            masks[r][c] |= _DOTS[dy % 4][dx % 2]
            owner[r][c] = i

    def to_dy(y: float) -> int:
        return dots_y - 1 - int(round(fraction(y, low, high) * (dots_y - 1)))

    def to_dx(x: float) -> int:
        return int(round(fraction(x, x0, x1) * (dots_x - 1))) if x1 > x0 else dots_x - 1

    for i, (line, ys) in enumerate(zip(lines, ys_all, strict=True)):
        if line.points:
            for x, y in zip(line.xs, ys, strict=False):
                if math.isfinite(y) and math.isfinite(x):
                    if not x0 <= x <= x1:
                        continue  # outside the x range asked for
                    dx, dy = to_dx(x), to_dy(y)
                    for ddx in (0, 1):  # a 2x2 block stands out from the lines
                        plot(i, dx + ddx - (dx % 2), dy)
                        plot(i, dx + ddx - (dx % 2), dy + (1 if dy % 4 < 3 else -1))
            continue
        column_ys = bucket(line.xs, ys, x0, x1, dots_x)
        previous: tuple[int, int] | None = None
        for dx, y in enumerate(column_ys):
            if not math.isfinite(y):
                continue  # no point in this column: the line joins across it
            dy = to_dy(y)
            if previous is None:
                plot(i, dx, dy)
            else:  # a straight run to (dx, dy), filled vertically so steep drops stay visible
                px, py = previous
                last = py
                for x in range(px + 1, dx + 1):
                    target = int(round(py + (dy - py) * (x - px) / (dx - px)))
                    step = 1 if target >= last else -1
                    for yy in range(last + step if target != last else last, target + step, step):
                        plot(i, x, yy)
                    last = target
            previous = (dx, dy)
    cursor_col = None
    if cursor_x is not None and math.isfinite(cursor_x) and x1 > x0:
        cursor_col = to_dx(cursor_x) // 2
    top, bottom = (power_of_ten(high), power_of_ten(low)) if log_y else (high, low)
    rows = []
    for r in range(height):
        label = axis_label(top) + " " if r == 0 else (axis_label(bottom) + " " if r == height - 1 else " " * 8)
        row = Text(label, label_style, no_wrap=True)
        for c in range(cols):
            mask = masks[r][c]
            style = lines[owner[r][c]].style if mask else label_style
            if c == cursor_col and cursor_style is not None:
                style = style + cursor_style
                row.append(chr(0x2800 + mask) if mask else "│", style)
            else:
                row.append(chr(0x2800 + mask) if mask else " ", style)
        rows.append(row)
    return rows


def x_axis(x0: float, x1: float, width: int, unit: str, style: Style) -> Text:
    """The bottom row: the first and last x under the plot area, and the unit in between."""
    left, right = _short(x0, unit), _short(x1, unit)
    inner = max(0, width - AXIS_WIDTH - len(left) - len(right))
    middle = f" {unit} ".center(inner, "─") if inner >= len(unit) + 2 else "─" * inner
    return Text(" " * AXIS_WIDTH + left + middle + right, style, no_wrap=True)


def _short(value: float, unit: str) -> str:
    if unit == "time" and math.isfinite(value) and abs(value) < 1e9:
        seconds = int(round(value))
        h, rem = divmod(seconds, 3600)
        m, s = divmod(rem, 60)
        return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    if not math.isfinite(value) or abs(value) >= 1e7:
        return f"{value:.3g}"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:g}"
