"""The loss chart's math: debiased EMA against a direct weighted sum, the bounded curve, the settings."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from kbert_tui.state.chart import (
    DEFAULT_SMOOTHING,
    SMOOTHING_STEPS,
    ChartSettings,
    LossCurve,
    bucket,
    debiased_ema,
    log_values,
    loss_value,
    readout,
    smoothed,
)


def reference_ema(values: list[float], weight: float) -> list[float]:
    """Point n is the weighted mean of points 1..n with weights w^(n-i): the definition, not a recurrence."""
    out = []
    for n in range(1, len(values) + 1):
        weights = np.array([weight ** (n - i) for i in range(1, n + 1)])
        out.append(float(np.sum(weights * np.array(values[:n])) / np.sum(weights)))
    return out


@pytest.mark.parametrize("weight", [0.6, 0.9, 0.99])
def test_debiased_ema_matches_the_weighted_mean_it_stands_for(weight):
    rng = random.Random(3)
    values = [2.0 * math.exp(-i / 40) + rng.gauss(0, 0.2) for i in range(200)]
    assert debiased_ema(values, weight) == pytest.approx(reference_ema(values, weight), rel=1e-9)


def test_the_first_point_is_the_data_not_pulled_to_zero():
    assert debiased_ema([5.0, 5.0, 5.0], 0.99) == pytest.approx([5.0, 5.0, 5.0])
    assert debiased_ema([1.0, 2.0], 0.0) == [1.0, 2.0]


def test_non_finite_points_pass_through_without_poisoning_the_average():
    out = debiased_ema([1.0, math.nan, 3.0], 0.5)
    assert out[0] == 1.0 and math.isnan(out[1])
    assert out[2] == pytest.approx(reference_ema([1.0, 3.0], 0.5)[1])


def test_log_values_and_bucket():
    assert log_values([100.0, 0.0, -1.0])[0] == 2.0
    assert all(math.isnan(v) for v in log_values([0.0, -1.0]))
    assert bucket([0, 1, 2, 3], [1.0, 3.0, 5.0, math.nan], 0, 3, 2) == [2.0, 5.0]
    assert math.isnan(bucket([0.0], [1.0], 0, 10, 3)[1])


def test_the_curve_keeps_three_xs_and_merges_blocks_past_its_limit():
    curve = LossCurve(limit=16)
    curve.started(1000.0, 32)
    for step in range(1, 101):
        curve.add(step, 10.0 / step, 1000.0 + step * 0.5)
        if step % 25 == 0:
            curve.epoch_end(1.0 / step)
    assert curve.stride == 8 and len(curve) == 13  # 12 blocks of 8 steps and the newest 4
    points = curve.points()
    assert points.x["step"][0] == 8.0  # a block's x's are its last step's, exactly
    assert points.x["samples"][0] == 8.0 * 32 and points.x["time"][0] == 4.0
    assert points.final[0] == 10.0 / 8 and points.high[0] == 10.0 and points.low[0] == 10.0 / 8
    assert points.loss[0] == pytest.approx(sum(10.0 / s for s in range(1, 9)) / 8)
    assert points.x["step"][-1] == 100.0 and points.steps[-2:] == [8, 4]  # steps 97..100: the partial block
    assert [m[0] for m in curve.marks] == [25, 50, 75, 100] and curve.marks[1][1:] == (1600.0, 25.0, 0.02)
    curve.add(101, math.nan, 1051.0)  # counted in its block, drawn as a marker
    assert curve.last == (101.0, 3232.0, 51.0)
    points = curve.points()
    assert points.bad[-1] == 1.0 and math.isnan(points.final[-1]) and points.high[-1] == 10.0 / 97


def test_limit_below_two_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        LossCurve(limit=1)


def test_smoothing_spans_the_same_steps_after_halving():
    values = [float(i % 7) for i in range(64)]
    curve = LossCurve(limit=1000)
    halved = LossCurve(limit=33)  # halves once at 33 points: stride 2
    for curve_ in (curve, halved):
        curve_.started(0.0, 1)
        for step, value in enumerate(values, 1):
            curve_.add(step, value, float(step))
    assert halved.stride == 2
    assert smoothed(halved, 0.9) == pytest.approx(debiased_ema(list(halved.loss), 0.81))
    assert smoothed(curve, 0.0) == values


def test_settings_step_through_smoothing_axes_and_the_cursor():
    settings = ChartSettings()
    assert settings.smoothing == DEFAULT_SMOOTHING > 0
    settings.smoother(+1)
    assert settings.smoothing == 0.8
    for _ in range(10):
        settings.smoother(-1)
    assert settings.smoothing == SMOOTHING_STEPS[0] == 0.0
    settings.next_x()
    settings.next_x()
    assert settings.x_axis == "time"
    settings.next_x()
    assert settings.x_axis == "step"
    settings.move_cursor(10, -1)
    assert settings.cursor == 9  # appears on the newest point
    settings.move_cursor(10, -20)
    assert settings.cursor == 0
    settings.move_cursor(10, +20)
    assert settings.cursor is None  # past the newest: gone


def test_the_readout_says_what_is_under_the_cursor():
    curve = LossCurve()
    curve.started(0.0, 16)
    for step in range(1, 41):
        curve.add(step, 1.0, step * 1.5)
    curve.epoch_end(0.75)
    settings = ChartSettings()
    assert readout(curve, settings, []) == ""
    settings.cursor = 39
    text = readout(curve, settings, smoothed(curve, settings.smoothing))
    assert text == "step 40 · 640 samples · 1:00 · loss 1 (smoothed 1) · val_loss 0.75 (step 40)"


def test_the_readout_of_a_merged_curve_is_the_step_under_the_cursor_and_its_block():
    curve = LossCurve(limit=16)
    curve.started(0.0, 1)
    for step in range(1, 101):
        curve.add(step, 9.0 if step == 37 else (math.nan if step == 90 else step / 100), float(step))
    settings = ChartSettings()
    settings.smoothing = 0.0
    points = curve.points()
    settings.cursor = 4  # the block of steps 33..40: its last step's own loss, then the block's range
    assert readout(curve, settings, []) == "step 40 · 40 samples · 0:40 · loss 0.4 · 8 steps 0.33–9"
    settings.cursor = 11  # steps 89..96 hold the NaN
    assert readout(curve, settings, []).endswith("loss 0.96 · 8 steps 0.89–0.96, 1 NaN/inf")
    assert points.bad[11] == 1 and points.high[4] == 9.0


def test_a_nan_loss_read_from_a_log_reaches_the_chart(tmp_path):
    """The log spells NaN "NaN" (JSON has none): replayed or attached, the step is still counted and marked."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from simulate import simulate_run

    from kbert_tui.events._codec import encode_event
    from kbert_tui.events.store import read_events
    from kbert_tui.state import RunState

    events = []
    for event in simulate_run(epochs=1, steps_per_epoch=20):
        if event.name == "training.batch_completed" and event.data.get("step") in (7, 9):
            event.data["loss"] = math.nan if event.data["step"] == 7 else math.inf
        events.append(event)
    log = tmp_path / "events.jsonl"
    log.write_text("".join(encode_event(e) for e in events))
    state = RunState()
    for event in read_events(log):
        state.apply(event)
    points = state.training.curve.points()
    assert len(points) == 20 and points.bad[6] == 1 and points.bad[8] == 1 and math.isnan(points.final[6])
    assert [loss_value(v) for v in ("NaN", "Infinity", "-Infinity", 2, True, "x", None)][1:] == [
        math.inf, -math.inf, 2.0, None, None, None]


def test_a_logged_number_past_float_range_reads_as_infinity_everywhere(tmp_path):
    # a log may hold any JSON integer: 10**400 as a loss or metric must not crash replay, compare or export
    from kbert_tui.events import Event
    from kbert_tui.state import RunState
    from kbert_tui.state.chart import loss_value
    from kbert_tui.state.compare import _num

    assert loss_value(10**400) == math.inf and loss_value(-(10**400)) == -math.inf
    assert _num(10**400) == math.inf and _num("Infinity") == math.inf and math.isnan(_num("NaN"))
    state = RunState()
    state.apply(Event(name="training.batch_completed", data={"step": 1, "epoch": 1, "batch": 1, "loss": 10**400}))
