"""The charts' scaling holds for every float: huge constants (1e16, 1e308), NaN, ±inf, denormal spans.

`fraction` is checked against exact rational arithmetic; the braille chart, sparklines, bars and labels
against generated series: they always return their rows, never raise."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from rich.style import Style

from kbert_tui.state.chart import (
    ColumnRanges,
    LossCurve,
    bucket,
    column_index,
    column_ranges,
    fraction,
    padded_range,
)
from kbert_tui.tui.chart import AXIS_WIDTH, Line, braille_chart, x_axis
from kbert_tui.tui.render import axis_label, bar, duration, palette, sparkline

EDGES = [0.0, -0.0, 1e16, -1e16, 1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324, 1e-300, math.nan,
         math.inf, -math.inf]
any_float = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(EDGES)
finite = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([e for e in EDGES if math.isfinite(e)])


@given(finite, finite, finite)
def test_fraction_is_where_the_value_sits_exactly(a, b, c):
    low, value, high = sorted((a, b, c))
    got = fraction(value, low, high)
    assert 0.0 <= got <= 1.0
    if high == low or high / 2 - low / 2 == 0:
        assert got == 0.5
        return
    exact = (Fraction(value) - Fraction(low)) / (Fraction(high) - Fraction(low))
    assert abs(got - float(exact)) <= 1e-9
    assert fraction(low, low, high) == 0.0 and fraction(high, low, high) == 1.0


@given(finite, finite, finite, finite)
def test_fraction_is_monotonic(a, b, low, high):
    low, high = min(low, high), max(low, high)
    a, b = sorted((a, b))
    assert fraction(a, low, high) <= fraction(b, low, high)


@given(any_float, any_float, any_float)
def test_fraction_of_anything_not_finite_is_nan(value, low, high):
    assume(not all(math.isfinite(v) for v in (value, low, high)))
    assert math.isnan(fraction(value, low, high))


@given(finite)
def test_a_flat_range_is_widened_only_where_floats_allow(value):
    low, high = padded_range(value, value)
    assert low <= value <= high and math.isfinite(low) and math.isfinite(high)


series = st.lists(st.tuples(any_float, any_float), max_size=40)


@given(st.lists(series, min_size=1, max_size=3), st.integers(1, 60), st.integers(0, 8), st.booleans(),
       st.none() | any_float, st.booleans())
def test_the_braille_chart_draws_any_series(lines, width, height, log_y, cursor_x, points):
    pal = palette(True)
    drawn = [Line([x for x, _ in pts], [y for _, y in pts], pal.chart, points=points and i == 0)
             for i, pts in enumerate(lines)]
    rows = braille_chart(drawn, width, height, pal.muted, log_y=log_y, cursor_x=cursor_x, cursor_style=pal.cursor)
    if height < 1 or width <= AXIS_WIDTH:
        assert rows == []
        return
    assert len(rows) == height and all(row.cell_len == width for row in rows)


@given(st.lists(finite, min_size=1, max_size=30), st.integers(AXIS_WIDTH + 2, 60), st.integers(2, 6))
def test_a_finite_series_always_leaves_dots(ys, width, height):
    rows = braille_chart([Line(list(range(len(ys))), ys, Style())], width, height, Style())
    assert any(ch != "⠀" and 0x2800 <= ord(ch) <= 0x28FF for row in rows for ch in row.plain[AXIS_WIDTH:])


@pytest.mark.parametrize("loss", [1e16, 1e308, -1e308, 5e-324, 0.0])
def test_a_constant_loss_of_any_size_is_a_flat_line(loss):
    rows = braille_chart([Line([1.0, 2.0, 3.0], [loss] * 3, Style())], 30, 4, Style())  # 1e16: ZeroDivisionError
    dotted = [r for r, row in enumerate(rows) if any(0x2801 <= ord(ch) <= 0x28FF for ch in row.plain[AXIS_WIDTH:])]
    assert len(dotted) == 1


@given(st.lists(any_float, max_size=50), st.integers(1, 40), st.none() | finite, st.none() | finite)
def test_sparklines_bars_and_labels_take_any_float(values, width, lo, hi):
    pal = palette(False)
    assert sparkline(values, width, pal.chart, lo=lo, hi=hi).cell_len == width
    for value in values[:5]:
        assert len(axis_label(value)) == 7
        assert bar(value, width, pal).cell_len == width
        assert isinstance(duration(value), str)
        x_axis(value, value, width + AXIS_WIDTH, "time", pal.muted)


@given(st.lists(st.tuples(any_float, any_float), max_size=40), any_float, any_float, st.integers(1, 30))
def test_bucket_takes_any_float(points, x0, x1, columns):
    out = bucket([p[0] for p in points], [p[1] for p in points], x0, x1, columns)
    assert len(out) == columns


def test_bucket_of_huge_values_keeps_their_mean():
    assert bucket([0.0, 0.2, 1.0], [1.5e308, 1.7e308, 1.0], 0.0, 1.0, 2) == [pytest.approx(1.6e308), 1.0]


# The loss curve's blocks (issue 23: charts that keep every spike) against a plain reference that
# re-buckets the whole series: the same blocks, min, max, last step and NaN count, for any series.

losses = st.lists(any_float | st.sampled_from([1.0, 1.0, 1.0]), max_size=300)  # constants come up often


def reference_blocks(values: list[float], limit: int) -> tuple[int, list[list[float]]]:
    """The stride a curve of `limit` points has after len(values) steps (the least power of two that
    leaves fewer than `limit` whole blocks), and each block of that many consecutive steps, the newest partial."""
    stride = 1
    while len(values) // stride >= limit:
        stride *= 2
    return stride, [values[i:i + stride] for i in range(0, len(values), stride)]


@given(losses, st.integers(2, 17), st.integers(1, 64))
def test_the_curves_blocks_are_the_whole_series_rebucketed(values, limit, batch):
    curve = LossCurve(limit=limit)
    curve.started(100.0, batch)
    for step, loss in enumerate(values, 1):
        curve.add(step, loss, 100.0 + step * 0.5)
    stride, blocks = reference_blocks(values, limit)
    points = curve.points()
    assert curve.stride == stride and len(curve) == len(points) == len(blocks)
    first = 1
    for i, block in enumerate(blocks):
        last_step = first + len(block) - 1
        good = [v for v in block if math.isfinite(v)]
        assert (points.x["step"][i], points.x["samples"][i], points.x["time"][i]) == (
            last_step, last_step * batch, last_step * 0.5)
        assert points.steps[i] == len(block)
        assert points.final[i] == block[-1] or math.isnan(points.final[i]) and math.isnan(block[-1])
        assert points.bad[i] == len(block) - len(good) and points.finite[i] == len(good)
        if good:
            assert (points.low[i], points.high[i]) == (min(good), max(good))
            scale = max(abs(v) for v in good)
            assert abs(points.loss[i] - sum(v / len(good) for v in good)) <= 1e-9 * scale
        else:
            assert all(math.isnan(v) for v in (points.low[i], points.high[i], points.loss[i]))
        first = last_step + 1


def reference_columns(xs: list[float], ys: list[float], x0: float, x1: float, columns: int) -> ColumnRanges:
    """Each step on its own, looped: the column of its x, then min, max, newest and NaN/inf count."""
    low, high = [math.nan] * columns, [math.nan] * columns
    last, bad = [math.nan] * columns, [0.0] * columns
    for _x, y, c in zip(xs, ys, column_index(xs, x0, x1, columns), strict=True):
        if c < 0:
            continue
        last[c] = y
        if not math.isfinite(y):
            bad[c] += 1
            continue
        low[c] = y if math.isnan(low[c]) else min(low[c], y)
        high[c] = y if math.isnan(high[c]) else max(high[c], y)
    return ColumnRanges(low, high, last, bad)


def same(a: list[float], b: list[float]) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


@given(losses, st.integers(1, 40), st.data())
def test_columns_of_the_blocks_keep_every_step(values, columns, data):
    """Blocks into chart columns: every step's column (±1, where a block straddles two) holds its value
    in [min, max] or counts it as NaN/inf; exactly the reference where each step is its own block."""
    limit = data.draw(st.sampled_from([2 * columns, 4 * columns, 4096]))  # the chart keeps 2+ blocks a column
    curve = LossCurve(limit=max(2, limit))
    curve.started(0.0, 1)
    for step, loss in enumerate(values, 1):
        curve.add(step, loss, float(step))
    assume(values)
    points = curve.points()
    xs = [float(s) for s in range(1, len(values) + 1)]
    fast = column_ranges(points.x["step"], points.low, points.high, points.final, points.bad, 1.0, xs[-1], columns)
    ref = reference_columns(xs, values, 1.0, xs[-1], columns)
    if curve.stride == 1:
        assert same(fast.low, ref.low) and same(fast.high, ref.high) and same(fast.last, ref.last)
        assert fast.bad == ref.bad
    assert sum(fast.bad) == sum(ref.bad) == sum(not math.isfinite(v) for v in values)
    finite_values = [v for v in values if math.isfinite(v)]
    if finite_values:
        assert max(v for v in fast.high if not math.isnan(v)) == max(finite_values)
        assert min(v for v in fast.low if not math.isnan(v)) == min(finite_values)
    for c, (lo, hi, n) in enumerate(zip(ref.low, ref.high, ref.bad, strict=True)):
        near = range(max(0, c - 1), min(columns, c + 2))
        if n:
            assert any(fast.bad[k] for k in near)
        if not math.isnan(lo):
            assert any(fast.low[k] <= lo for k in near if not math.isnan(fast.low[k]))
            assert any(fast.high[k] >= hi for k in near if not math.isnan(fast.high[k]))
    newest = int(column_index(xs[-1:], 1.0, xs[-1], columns)[0])  # the last column, or 0 for a lone step
    assert same([fast.last[newest]], [values[-1]])  # the newest step's own loss, whatever its block
