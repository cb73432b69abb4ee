"""Line charts in braille dots (2x4 per cell): several series overlaid, each in its own style.

Returns `rich.text.Text` rows, built with `Text.append` (never markup). Where series cross in a cell,
the one drawn last colours it: callers draw faint series (raw loss) first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from kbert_tui.state.chart import (
    X_AXES,
    CurvePoints,
    bucket,
    column_ranges,
    finite_range,
    fraction,
    log_values,
    padded_range,
    power_of_ten,
)

from .render import axis_label

__all__ = ["AXIS_WIDTH", "NONFINITE_MARK", "RESUME_MARK", "Line", "braille_chart", "raw_line"]

AXIS_WIDTH = 8  # the y labels' column: axis_label's 7 cells and a space
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row within cell][column within cell]
NONFINITE_MARK = "×"  # top row of a column whose steps include a NaN or infinite loss
RESUME_MARK = "┊"  # a column where another process took the run over (run --resume)


@dataclass
class Line:
    """One series: x ascending; `points`: marks at each value (per-epoch validation) instead of a line.

    With `low` and `high` (blocks of steps, `ys` each block's last value) every column spans the min to
    the max of its blocks, so a one-step spike is drawn however many steps share the column; a column
    whose blocks count `bad` (NaN/inf) steps gets NONFINITE_MARK in `bad_style`. `under`: in a cell a later
    series also draws in, only the later one's dots show (the smoothed loss stays crisp over the raw)."""

    xs: Sequence[float]
    ys: Sequence[float]
    style: Style
    points: bool = False
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    bad: Sequence[float] | None = None
    bad_style: Style | None = None
    under: bool = False


def raw_line(points: CurvePoints, axis: str, style: Style, bad_style: Style) -> Line:
    """The loss curve's raw steps as a range per column (min, max, last) with its NaN/inf markers."""
    if axis not in X_AXES:
        raise ValueError(f"no such x axis: {axis!r}")
    return Line(points.x[axis], points.final, style, low=points.low, high=points.high, bad=points.bad,
                bad_style=bad_style, under=True)


def braille_chart(lines: Sequence[Line], width: int, height: int, label_style: Style, *, log_y: bool = False,
                  x_range: tuple[float, float] | None = None, cursor_x: float | None = None,
                  cursor_style: Style | None = None, marks_x: Sequence[float] = ()) -> list[Text]:
    """`height` rows of `width` cells: y labels (top = max, bottom = min) then the plot area; a
    RESUME_MARK in each empty cell of the columns at `marks_x`."""
    cols = max(1, width - AXIS_WIDTH)
    if height < 1 or width <= AXIS_WIDTH:
        return []
    scale = log_values if log_y else list
    ys_all = [scale(line.ys) for line in lines]
    bands = [(scale(line.low), scale(line.high)) if line.low is not None and line.high is not None else None
             for line in lines]
    xs_range = x_range or finite_range(*(line.xs for line in lines))
    y_range = finite_range(*ys_all, *(side for band in bands if band for side in band))
    if xs_range is None or (y_range is None and not any(line.bad for line in lines)):
        return [Text(" " * width) for _ in range(height)]
    x0, x1 = xs_range
    low, high = padded_range(*(y_range or (0.0, 1.0)))
    dots_x, dots_y = cols * 2, height * 4
    masks = [[0] * cols for _ in range(height)]
    owner = [[-1] * cols for _ in range(height)]
    flagged: dict[int, Style] = {}  # cell column -> the style of its NONFINITE_MARK

    def plot(i: int, dx: int, dy: int) -> None:
        if 0 <= dx < dots_x and 0 <= dy < dots_y:
            r, c = dy // 4, dx // 2
            previous = owner[r][c]
            if previous != i and previous >= 0 and lines[previous].under:
                masks[r][c] = 0  # a cell has one colour: a series drawn over the raw one shows its own dots
            masks[r][c] |= _DOTS[dy % 4][dx % 2]
            owner[r][c] = i

    def to_dy(y: float) -> int:
        return dots_y - 1 - int(round(fraction(y, low, high) * (dots_y - 1)))

    def to_dx(x: float) -> int:
        return int(round(fraction(x, x0, x1) * (dots_x - 1))) if x1 > x0 else dots_x - 1

    def run(i: int, dx: int, dy_from: int, dy_to: int) -> None:
        for dy in range(min(dy_from, dy_to), max(dy_from, dy_to) + 1):
            plot(i, dx, dy)

    for i, (line, ys, band) in enumerate(zip(lines, ys_all, bands, strict=True)):
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
        if band is not None:
            _draw_band(i, line, ys, band, x0, x1, dots_x, to_dy, run, flagged, log_y, low)
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
    resumed = {to_dx(x) // 2 for x in marks_x if math.isfinite(x) and x0 <= x <= x1 and x1 > x0}
    top, bottom = (power_of_ten(high), power_of_ten(low)) if log_y else (high, low)
    rows = []
    for r in range(height):
        label = axis_label(top) + " " if r == 0 else (axis_label(bottom) + " " if r == height - 1 else " " * 8)
        row = Text(label, label_style, no_wrap=True)
        for c in range(cols):
            mask = masks[r][c]
            style = lines[owner[r][c]].style if mask else label_style
            char = chr(0x2800 + mask) if mask else (RESUME_MARK if c in resumed else " ")
            if r == 0 and c in flagged:
                char, style = NONFINITE_MARK, flagged[c]
            if c == cursor_col and cursor_style is not None:
                style = style + cursor_style
                char = "│" if char in (" ", RESUME_MARK) else char
            row.append(char, style)
        rows.append(row)
    return rows


def _draw_band(i: int, line: Line, ys: Sequence[float], band: tuple[Sequence[float], Sequence[float]],
               x0: float, x1: float, dots_x: int, to_dy: Callable[[float], int],
               run: Callable[[int, int, int, int], None], flagged: dict[int, Style], log_y: bool,
               bottom: float) -> None:
    """Each dot column from its blocks' min to max, joined to the previous column's last value."""
    bad = line.bad if line.bad is not None else [0.0] * len(line.xs)
    columns = column_ranges(line.xs, band[0], band[1], ys, bad, x0, x1, dots_x)
    previous: int | None = None
    for dx in range(dots_x):
        if columns.bad[dx] > 0:
            flagged.setdefault(dx // 2, line.bad_style or line.style)
        lo, hi, last = columns.low[dx], columns.high[dx], columns.last[dx]
        if log_y and math.isfinite(hi) and not math.isfinite(lo):
            lo = bottom  # a loss of 0 or less: off a log scale's bottom
        if not math.isfinite(hi):
            continue  # no finite loss in this column: the line joins across it
        top_dy, bottom_dy = to_dy(hi), to_dy(lo)
        if previous is not None:  # reach back to where the line was, so steep moves stay joined
            top_dy, bottom_dy = min(top_dy, previous), max(bottom_dy, previous)
        run(i, dx, top_dy, bottom_dy)
        previous = to_dy(last) if math.isfinite(last) else to_dy(hi)


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
