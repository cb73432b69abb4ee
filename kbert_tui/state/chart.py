"""The math behind the charts: smoothing, log scale, x axes, bucketing, the cursor (no Textual here).

`debiased_ema` is TensorBoard's smoothing: an exponential moving average whose early points are
divided by (1 - w^n), so the curve starts at the data instead of being pulled toward zero.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["SMOOTHING_STEPS", "X_AXES", "debiased_ema", "log_values", "bucket", "nearest", "finite_range"]

SMOOTHING_STEPS = (0.0, 0.6, 0.8, 0.9, 0.95, 0.99)
"""The weights `[` / `]` step through (0: off)."""

X_AXES = ("step", "samples", "time")
"""What the loss chart's x axis can be: optimizer steps, samples seen, wall seconds since the start."""


def debiased_ema(values: Sequence[float], weight: float) -> list[float]:
    """`weight` in [0, 1): 0 returns the values; NaN and infinities are passed through, not averaged in."""
    if weight <= 0.0:
        return list(values)
    out: list[float] = []
    last = 0.0
    n = 0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        n += 1
        last = last * weight + (1.0 - weight) * value
        out.append(last / (1.0 - weight ** n))
    return out


def log_values(values: Sequence[float]) -> list[float]:
    """log10 of each value; non-positive ones become NaN (not drawn)."""
    return [math.log10(v) if v > 0 and math.isfinite(v) else math.nan for v in values]


def finite_range(*series: Sequence[float]) -> tuple[float, float] | None:
    """(lowest, highest) finite value over all `series`, or None when there is none."""
    low, high = math.inf, -math.inf
    for values in series:
        for v in values:
            if math.isfinite(v):
                if v < low:
                    low = v
                if v > high:
                    high = v
    return None if low == math.inf else (low, high)


def bucket(xs: Sequence[float], ys: Sequence[float], x0: float, x1: float, columns: int) -> list[float]:
    """The mean finite y of the points in each of `columns` equal slices of [x0, x1] (NaN when empty)."""
    sums = [0.0] * columns
    counts = [0] * columns
    span = x1 - x0
    for x, y in zip(xs, ys, strict=False):
        if not math.isfinite(y) or not math.isfinite(x):
            continue
        i = int((x - x0) / span * columns) if span > 0 else 0
        if 0 <= i < columns:
            sums[i] += y
            counts[i] += 1
        elif i == columns:
            sums[-1] += y
            counts[-1] += 1
    return [s / c if c else math.nan for s, c in zip(sums, counts, strict=True)]


def nearest(xs: Sequence[float], x: float) -> int | None:
    """The index of the point of `xs` (ascending) nearest to `x`; None when `xs` is empty."""
    if not xs:
        return None
    i = bisect_left(xs, x)
    if i == 0:
        return 0
    if i >= len(xs):
        return len(xs) - 1
    return i if xs[i] - x < x - xs[i - 1] else i - 1
