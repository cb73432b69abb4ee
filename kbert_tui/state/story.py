"""One run told as one story across the processes that trained it (`kbert-tui run --resume`).

A resumed process appends to its run's log; its `training.started` carries `resumed_at_step`. What the
earlier process logged past that step was done again (a killed run's steps after its last checkpoint),
so the readers cut their histories back to it before the new process's events arrive.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Any

from .chart import X_AXES, LossCurve

__all__ = ["cut_curve", "cut_rows", "resumed_at_step"]


def resumed_at_step(data: dict[str, Any]) -> int | None:
    """The step a `training.started` says its process went on from; None for a run that began afresh."""
    step = data.get("resumed_at_step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def cut_curve(curve: LossCurve, step: int) -> None:
    """Drop the curve's points (and validation marks) past `step`; its time axis then goes on from the
    last point kept, so the pause between the processes takes no room on the chart."""
    steps = curve.x["step"]
    keep = bisect.bisect_right(steps, float(step))
    length = len(curve.loss)
    for axis in X_AXES:
        curve.x[axis] = curve.x[axis][:keep]
    # every per-point array the curve keeps (the loss, and any min/max a chart adds) is cut alike
    for name, value in vars(curve).items():
        if isinstance(value, array) and len(value) == length:
            setattr(curve, name, value[:keep])
    curve.marks = [mark for mark in curve.marks if mark[0] <= step]
    curve._acc, curve._acc_n = [0.0] * len(curve._acc), 0  # a partial bucket is the newest steps: past the cut
    curve.last = (curve.x["step"][-1], curve.x["samples"][-1], curve.x["time"][-1]) if keep else None


def cut_rows(rows: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The rows (evaluations) whose `step` is at most `step` (rows without one are kept)."""
    return [row for row in rows if not isinstance(row.get("step"), int | float) or row["step"] <= step]
