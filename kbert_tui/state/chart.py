"""The math behind the charts: smoothing, log scale, x axes, bucketing, the cursor (no Textual here).

`debiased_ema` is TensorBoard's smoothing: an exponential moving average whose early points are
divided by (1 - w^n), so the curve starts at the data instead of being pulled toward zero.
"""

from __future__ import annotations

import math
from array import array

import numpy as np
from collections.abc import Sequence

__all__ = ["SMOOTHING_STEPS", "X_AXES", "DEFAULT_SMOOTHING", "ChartSettings", "LossCurve", "debiased_ema",
           "log_values", "bucket", "finite_range", "fraction", "padded_range", "power_of_ten", "readout", "smoothed"]

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


def padded_range(low: float, high: float) -> tuple[float, float]:
    """The range a flat series is drawn in: ±0.5 around its value when that is representable (at 1e16
    it is not: the range stays flat and `fraction` puts the series in the middle)."""
    if high == low and math.isfinite(low):
        wider = (low - 0.5, high + 0.5)
        if wider[1] > wider[0] and math.isfinite(wider[0]) and math.isfinite(wider[1]):
            return wider
    return low, high


def fraction(value: float, low: float, high: float) -> float:
    """Where `value` sits in [low, high], from 0 to 1 (clamped), for any finite floats: a flat or
    denormal range gives 0.5; halves are subtracted so 1e308 - -1e308 never overflows. NaN when
    `value` or the range is not finite."""
    if not (math.isfinite(value) and math.isfinite(low) and math.isfinite(high)):
        return math.nan
    half_span = high / 2 - low / 2
    if not half_span > 0:
        return 0.5
    position = (value / 2 - low / 2) / half_span  # ±inf past a denormal span: clamped like any value outside
    return min(1.0, max(0.0, position))


def power_of_ten(exponent: float) -> float:
    """10 ** exponent, infinite instead of OverflowError (a log-scale label near 1e308)."""
    try:
        return 10.0 ** exponent
    except OverflowError:
        return math.inf


def bucket(xs: Sequence[float], ys: Sequence[float], x0: float, x1: float, columns: int) -> list[float]:
    """The mean finite y of the points in each of `columns` equal slices of [x0, x1] (NaN when empty).

    numpy over the arrays' buffers: ten runs of 43k steps each bucket in milliseconds, not a third of a second.
    """
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    span = x1 / 2 - x0 / 2  # halves: the span of ±1e308 stays finite
    with np.errstate(invalid="ignore", over="ignore"):
        where = (x / 2 - x0 / 2) / span * columns if span > 0 else np.zeros(len(x))
    index = np.nan_to_num(where, nan=-1.0, posinf=columns + 1, neginf=-1.0).clip(-1, columns + 1).astype(np.int64)
    index[index == columns] = columns - 1  # x1 itself belongs to the last slice
    inside = (index >= 0) & (index < columns)
    index, y = index[inside], y[inside]
    counts = np.bincount(index, minlength=columns)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        means = np.bincount(index, weights=y, minlength=columns) / counts
        if np.any(overflowed := (counts > 0) & ~np.isfinite(means)):  # values near 1e308: sum value/count
            means[overflowed] = np.bincount(index, weights=y / counts[index], minlength=columns)[overflowed]
    return means.tolist()


DEFAULT_SMOOTHING = 0.6
"""On by default: a small batch's loss is noisy enough to hide the trend, and the raw series stays
drawn faintly underneath (TensorBoard's default weight)."""


class LossCurve:
    """The training loss per step with three x's each (step, samples seen, seconds since
    training.started) and the validation loss at each epoch's end. Bounded like `Series`: past
    `limit` points, pairs are averaged, so it always spans the whole run at `stride` steps a point."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.x: dict[str, array] = {axis: array("d") for axis in X_AXES}
        self.loss = array("d")
        self.stride = 1
        self.batch_size: int | None = None
        self.start: float | None = None  # epoch seconds of training.started
        self.last: tuple[float, float, float] | None = None  # (step, samples, seconds) of the newest step
        self.marks: list[tuple[float, float, float, float]] = []  # (step, samples, seconds, val_loss)
        self._acc = [0.0, 0.0, 0.0, 0.0]
        self._acc_n = 0

    def started(self, at: float, batch_size: int | None) -> None:
        self.start = at
        self.batch_size = batch_size if isinstance(batch_size, int) and batch_size > 0 else None

    def add(self, step: int, loss: float, at: float) -> None:
        """One training step (a non-finite loss is not drawn)."""
        if self.start is None:
            self.start = at
        point = (float(step), float(step * (self.batch_size or 1)), at - self.start)
        self.last = point
        if not math.isfinite(loss):
            return
        acc = self._acc
        acc[0] += point[0]
        acc[1] += point[1]
        acc[2] += point[2]
        acc[3] += loss
        self._acc_n += 1
        if self._acc_n < self.stride:
            return
        n = self._acc_n
        for axis, total in zip(X_AXES, acc, strict=False):
            self.x[axis].append(total / n)
        self.loss.append(acc[3] / n)
        self._acc, self._acc_n = [0.0, 0.0, 0.0, 0.0], 0
        if len(self.loss) >= self.limit:
            for key in X_AXES:
                self.x[key] = _halve(self.x[key])
            self.loss = _halve(self.loss)
            self.stride *= 2

    def epoch_end(self, val_loss: float | None) -> None:
        """Mark the validation loss where the epoch ended (the newest step's x's)."""
        if val_loss is not None and math.isfinite(val_loss) and self.last is not None:
            self.marks.append((*self.last, val_loss))

    def xs(self, axis: str) -> array:
        return self.x[axis]

    def __len__(self) -> int:
        return len(self.loss)


def _halve(values: array) -> array:
    return array("d", ((values[i] + values[i + 1]) / 2 for i in range(0, len(values) - 1, 2)))


class ChartSettings:
    """What the user chose for the loss chart (kept for the session): smoothing, log y, x axis, cursor."""

    def __init__(self) -> None:
        self.smoothing = DEFAULT_SMOOTHING
        self.log_y = False
        self.x_axis = "step"
        self.cursor: int | None = None  # a point of the curve, or None: no cursor

    def smoother(self, direction: int) -> None:
        """`direction` +1 / -1: the next / previous weight of SMOOTHING_STEPS."""
        steps = SMOOTHING_STEPS
        i = min(range(len(steps)), key=lambda k: abs(steps[k] - self.smoothing))
        self.smoothing = steps[max(0, min(len(steps) - 1, i + direction))]

    def next_x(self) -> None:
        self.x_axis = X_AXES[(X_AXES.index(self.x_axis) + 1) % len(X_AXES)]

    def move_cursor(self, points: int, by: int) -> None:
        """Move the cursor `by` points (it appears at the newest point; past it, it goes away)."""
        if points == 0:
            self.cursor = None
            return
        if self.cursor is None:
            self.cursor = points - 1 if by < 0 else None
            return
        target = self.cursor + by
        self.cursor = None if target >= points else max(0, target)


def smoothed(curve: LossCurve, weight: float) -> list[float]:
    """The curve's loss smoothed with `weight` per step: a point that averages `stride` steps gets
    weight**stride, so the smoothing spans the same steps however far the curve was halved."""
    return debiased_ema(curve.loss, weight ** curve.stride if weight > 0 else 0.0)


def readout(curve: LossCurve, settings: ChartSettings, smooth: Sequence[float]) -> str:
    """What the cursor is on: `step 120 · 3,840 samples · 0:42 · loss 0.4312 (smoothed 0.4450) · val 0.40`."""
    i = settings.cursor
    if i is None or not 0 <= i < len(curve):
        return ""
    step, samples, seconds = (curve.x[axis][i] for axis in X_AXES)
    parts = [f"step {step:,.0f}", f"{samples:,.0f} samples", _clock(seconds), f"loss {curve.loss[i]:.4g}"]
    if settings.smoothing > 0 and i < len(smooth):
        parts[-1] += f" (smoothed {smooth[i]:.4g})"
    before = [mark for mark in curve.marks if mark[0] <= step]
    if before:
        parts.append(f"val_loss {before[-1][3]:.4g} (step {before[-1][0]:,.0f})")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
