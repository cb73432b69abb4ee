"""The math behind the charts: smoothing, log scale, x axes, bucketing, the cursor (no Textual here).

`debiased_ema` is TensorBoard's smoothing: an exponential moving average whose early points are
divided by (1 - w^n), so the curve starts at the data instead of being pulled toward zero.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_SMOOTHING",
    "SMOOTHING_STEPS",
    "X_AXES",
    "ChartSettings",
    "ColumnRanges",
    "CurvePoints",
    "LossCurve",
    "bucket",
    "column_index",
    "column_ranges",
    "debiased_ema",
    "finite_range",
    "fraction",
    "log_values",
    "loss_value",
    "padded_range",
    "power_of_ten",
    "readout",
    "smoothed",
]

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
                low = min(low, v)
                high = max(high, v)
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
        return float(10.0 ** exponent)
    except OverflowError:
        return math.inf


def bucket(xs: Sequence[float], ys: Sequence[float], x0: float, x1: float, columns: int) -> list[float]:
    """The mean finite y of the points in each of `columns` equal slices of [x0, x1] (NaN when empty).

    numpy over the arrays' buffers: ten runs of 43k steps each bucket in milliseconds, not a third of a second.
    """
    n = min(len(xs), len(ys))
    y = np.asarray(ys, dtype=np.float64)[:n]
    index = column_index(np.asarray(xs, dtype=np.float64)[:n], x0, x1, columns)
    inside = (index >= 0) & np.isfinite(y)
    index, y = index[inside], y[inside]
    counts = np.bincount(index, minlength=columns)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        means = np.bincount(index, weights=y, minlength=columns) / counts
        if np.any(overflowed := (counts > 0) & ~np.isfinite(means)):  # values near 1e308: sum value/count
            means[overflowed] = np.bincount(index, weights=y / counts[index], minlength=columns)[overflowed]
    out: list[float] = means.tolist()
    return out


DEFAULT_SMOOTHING = 0.6
"""On by default: a small batch's loss is noisy enough to hide the trend, and the raw series stays
drawn faintly underneath (TensorBoard's default weight)."""

_FIELDS = ("loss", "low", "high", "final", "bad", "finite")
"""What each point keeps of its block of steps, beside the last step's x's: the mean, min and max of the
finite losses (NaN when none), the last step's own loss, how many losses were NaN/±inf, how many finite."""


_LOGGED = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""How the event log spells the floats JSON has no word for (the live bus carries the floats)."""


def loss_value(value: object) -> float | None:
    """A step's loss, live or as logged: a number, or NaN/±inf spelled out in a read log; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # JSON integers have no bound; past float range they read as ±inf
            return math.inf if value > 0 else -math.inf
    return _LOGGED.get(value) if isinstance(value, str) else None


@dataclass
class CurvePoints:
    """The curve as drawn: its blocks of consecutive steps, the partial newest block last. Each block's
    x's are its last step's, `final` that step's own loss (what the cursor reads, not an average)."""

    x: dict[str, array[float]]
    loss: array[float]
    low: array[float]
    high: array[float]
    final: array[float]
    bad: array[float]
    finite: array[float]
    steps: list[int]  # steps in each block: the stride, fewer in the newest

    def __len__(self) -> int:
        return len(self.loss)


class LossCurve:
    """The training loss per step with three x's each (step, samples seen, seconds since
    training.started) and the validation loss at each epoch's end. Bounded: past `limit` points,
    neighbouring blocks merge (min of mins, max of maxes, the later one's last step), so it always spans
    the whole run at `stride` steps a point and a one-step spike or NaN is never averaged away."""

    def __init__(self, limit: int = 4096) -> None:
        if limit < 2:
            raise ValueError(f"a loss curve keeps at least 2 points, not {limit}")
        self.limit = limit
        self.x: dict[str, array[float]] = {axis: array("d") for axis in X_AXES}
        self.loss = array("d")
        self.low = array("d")
        self.high = array("d")
        self.final = array("d")
        self.bad = array("d")
        self.finite = array("d")
        self.stride = 1
        self.batch_size: int | None = None
        self.start: float | None = None  # epoch seconds of training.started
        self.last: tuple[float, float, float] | None = None  # (step, samples, seconds) of the newest step
        self.marks: list[tuple[float, float, float, float]] = []  # (step, samples, seconds, val_loss)
        # the newest block, not yet a point: step, samples, seconds, then _FIELDS (zeros with _acc_n 0)
        self._acc = [0.0] * (len(X_AXES) + len(_FIELDS))
        self._acc_n = 0
        self._view: tuple[tuple[object, ...], CurvePoints] | None = None

    def started(self, at: float, batch_size: int | None) -> None:
        self.start = at
        self.batch_size = batch_size if isinstance(batch_size, int) and batch_size > 0 else None

    def add(self, step: int, loss: float, at: float) -> None:
        """One training step; a NaN or infinite loss is counted in its block (drawn as a marker)."""
        if self.start is None:
            self.start = at
        point = (float(step), float(step * (self.batch_size or 1)), at - self.start)
        self.last = point
        loss = float(loss)
        good = math.isfinite(loss)
        acc = self._acc
        if self._acc_n == 0:
            acc[:] = [*point, loss if good else math.nan, loss if good else math.nan, loss if good else math.nan,
                      loss, 0.0 if good else 1.0, 1.0 if good else 0.0]
        else:
            acc[0], acc[1], acc[2], acc[6] = point[0], point[1], point[2], loss
            if good:
                n = acc[8] + 1.0
                # scaled parts, not a sum: the mean of ±1e308 never overflows
                acc[3] = loss if n == 1.0 else acc[3] * ((n - 1.0) / n) + loss / n
                acc[4] = loss if not loss >= acc[4] else acc[4]  # NaN (no finite yet) compares False
                acc[5] = loss if not loss <= acc[5] else acc[5]
                acc[8] = n
            else:
                acc[7] += 1.0
        self._acc_n += 1
        if self._acc_n < self.stride:
            return
        for axis, value in zip(X_AXES, acc, strict=False):
            self.x[axis].append(value)
        for name, value in zip(_FIELDS, acc[len(X_AXES):], strict=True):
            getattr(self, name).append(value)
        self._acc_n = 0
        if len(self.loss) >= self.limit:
            self._merge_pairs()

    def _merge_pairs(self) -> None:
        """Halve the points: each pair becomes one block of twice the stride (an odd last one goes back to
        being the newest, partial block)."""
        count = len(self.loss)
        pairs = count // 2
        if count % 2:
            self._acc = [*(self.x[axis].pop() for axis in X_AXES), *(getattr(self, name).pop() for name in _FIELDS)]
            self._acc_n = self.stride
        first, second = slice(0, 2 * pairs, 2), slice(1, 2 * pairs, 2)
        for axis in X_AXES:
            self.x[axis] = array("d", np.asarray(self.x[axis])[second].tobytes())
        low, high = np.asarray(self.low), np.asarray(self.high)
        finite, loss = np.asarray(self.finite), np.asarray(self.loss)
        n_a, n_b = finite[first], finite[second]
        total = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            # a side without finite losses has a NaN mean and weight 0: nan_to_num keeps it out
            merged = (np.nan_to_num(loss[first] * (n_a / total)) + np.nan_to_num(loss[second] * (n_b / total)))
        merged[total == 0] = math.nan
        self.loss = array("d", merged.tobytes())
        self.low = array("d", np.fmin(low[first], low[second]).tobytes())
        self.high = array("d", np.fmax(high[first], high[second]).tobytes())
        self.final = array("d", np.asarray(self.final)[second].tobytes())
        bad = np.asarray(self.bad)
        self.bad = array("d", (bad[first] + bad[second]).tobytes())
        self.finite = array("d", total.tobytes())
        self.stride *= 2

    def epoch_end(self, val_loss: float | None) -> None:
        """Mark the validation loss where the epoch ended (the newest step's x's)."""
        if val_loss is not None and math.isfinite(val_loss) and self.last is not None:
            self.marks.append((*self.last, val_loss))

    def points(self) -> CurvePoints:
        """The blocks with the newest, partial one (cached until the curve changes)."""
        key = (id(self.loss), len(self.loss), self._acc_n, self.last, self.stride)
        if self._view is not None and self._view[0] == key:
            return self._view[1]
        pending = self._acc_n > 0
        fields = {name: array("d", getattr(self, name)) for name in _FIELDS}
        x = {axis: array("d", self.x[axis]) for axis in X_AXES}
        if pending:
            for axis, value in zip(X_AXES, self._acc, strict=False):
                x[axis].append(value)
            for name, value in zip(_FIELDS, self._acc[len(X_AXES):], strict=True):
                fields[name].append(value)
        steps = [self.stride] * len(self.loss) + ([self._acc_n] if pending else [])
        view = CurvePoints(x=x, steps=steps, **fields)
        self._view = (key, view)
        return view

    def xs(self, axis: str) -> array[float]:
        return self.points().x[axis]

    def __len__(self) -> int:
        return len(self.loss) + (1 if self._acc_n else 0)


@dataclass
class ColumnRanges:
    """Each chart column's steps: min and max finite loss, the loss of its last step, NaN/inf count."""

    low: list[float]
    high: list[float]
    last: list[float]
    bad: list[float]


def column_index(xs: Sequence[float] | np.ndarray, x0: float, x1: float, columns: int) -> np.ndarray:
    """The column of each x among `columns` equal slices of [x0, x1]: -1 when outside or not finite."""
    x = np.asarray(xs, dtype=np.float64)
    span = x1 / 2 - x0 / 2  # halves: the span of ±1e308 stays finite
    with np.errstate(invalid="ignore", over="ignore"):
        where = (x / 2 - x0 / 2) / span * columns if span > 0 else np.zeros(len(x))
    index = np.nan_to_num(where, nan=-1.0, posinf=columns + 1, neginf=-1.0).clip(-1, columns + 1).astype(np.int64)
    index[index == columns] = columns - 1  # x1 itself belongs to the last slice
    index[(index < 0) | (index >= columns) | ~np.isfinite(x)] = -1
    return index


def column_ranges(xs: Sequence[float], low: Sequence[float], high: Sequence[float], final: Sequence[float],
                  bad: Sequence[float], x0: float, x1: float, columns: int) -> ColumnRanges:
    """Blocks (x ascending) into `columns` slices of [x0, x1]: a column's min of `low`, max of `high`, the
    `final` of its last block and the sum of `bad` (NaN min/max/last where a column has no block)."""
    n = min(len(xs), len(low), len(high), len(final), len(bad))
    index = column_index(np.asarray(xs, dtype=np.float64)[:n], x0, x1, columns)
    inside = index >= 0
    where = index[inside]
    lows = np.full(columns, np.inf)
    highs = np.full(columns, -np.inf)
    np.fmin.at(lows, where, np.asarray(low, dtype=np.float64)[:n][inside])
    np.fmax.at(highs, where, np.asarray(high, dtype=np.float64)[:n][inside])
    lows[~np.isfinite(lows)] = np.nan  # ±inf: no finite loss in the column (the fill values)
    highs[~np.isfinite(highs)] = np.nan
    newest = np.full(columns, -1)
    np.maximum.at(newest, where, np.nonzero(inside)[0])
    finals = np.asarray(final, dtype=np.float64)[:n]
    last = np.where(newest >= 0, finals[newest.clip(0)] if n else np.nan, np.nan)
    counts = np.bincount(where, weights=np.asarray(bad, dtype=np.float64)[:n][inside], minlength=columns)
    return ColumnRanges(lows.tolist(), highs.tolist(), last.tolist(), counts.tolist())


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
    return debiased_ema(curve.points().loss, weight ** curve.stride if weight > 0 else 0.0)


def readout(curve: LossCurve, settings: ChartSettings, smooth: Sequence[float], width: int | None = None) -> str:
    """What the cursor is on, the block's last step itself (its own loss, not an average), then the
    block's range: `step 120 · 3,840 samples · 0:42 · loss 0.4312 (smoothed 0.4450) · val_loss 0.40 (step 100)
    · 8 steps 0.41–0.47`. Within `width` cells the validation's step, the time, the samples (but not the x
    axis's), the smoothed value and the block's range go, in that order: the step, its loss and the
    validation loss stay."""
    i = settings.cursor
    points = curve.points()
    if i is None or not 0 <= i < len(points):
        return ""
    step, samples, seconds = (points.x[axis][i] for axis in X_AXES)
    extras: dict[str, str] = {"samples": f"{samples:,.0f} samples", "time": _clock(seconds)}
    if settings.smoothing > 0 and i < len(smooth):
        extras["smoothed"] = f" (smoothed {smooth[i]:.4g})"
    before = [mark for mark in curve.marks if mark[0] <= step]
    if before:
        extras["val_step"] = f" (step {before[-1][0]:,.0f})"
    if points.steps[i] > 1:
        block = f"{points.steps[i]} steps"
        if points.finite[i]:
            block += f" {points.low[i]:.4g}–{points.high[i]:.4g}"
        if points.bad[i]:
            block += f", {points.bad[i]:.0f} NaN/inf"
        extras["block"] = block

    def line(kept: dict[str, str]) -> str:
        parts = [f"step {step:,.0f}", kept.get("samples", ""), kept.get("time", ""),
                 f"loss {points.final[i]:.4g}{kept.get('smoothed', '')}"]
        if before:
            parts.append(f"val_loss {before[-1][3]:.4g}{kept.get('val_step', '')}")
        parts.append(kept.get("block", ""))
        return " · ".join(part for part in parts if part)

    text = line(extras)
    for dropped in ("val_step", "time", "samples", "smoothed", "block"):
        if width is None or len(text) <= width:
            break
        if dropped == settings.x_axis:  # the x axis's own value stays
            continue
        extras.pop(dropped, None)
        text = line(extras)
    return text


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
