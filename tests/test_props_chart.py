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

from kbert_tui.state.chart import bucket, fraction, padded_range
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
