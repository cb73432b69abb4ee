"""The monitor's loss chart: its keys (smoothing, x axis, log y, the cursor) and what it keeps of a long run:
a one-step spike or NaN among 100k steps, the cursor's exact step, resume markers."""

from __future__ import annotations

import asyncio
import math

import pytest
from simulate import simulate_run
from textual.geometry import Region

from kbert_tui.state.chart import LossCurve, smoothed
from kbert_tui.state.chart import readout as readout_text
from kbert_tui.tui import MonitorApp, StaticSource
from kbert_tui.tui.chart import NONFINITE_MARK, RESUME_MARK


def test_chart_keys_change_the_chart_and_the_cursor_reads_values(settle):
    async def scenario() -> None:
        app = MonitorApp(StaticSource(list(simulate_run(epochs=2, steps_per_epoch=60)), label="recorded run"))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            pane = app.training_pane
            chart = pane.chart

            def drawn() -> list[str]:
                return [line.plain for line in pane._chart(70, 10, pane.pal)]

            assert drawn()[0] == "loss by step (120) ema 0.6 ▪val" + " " * 28 + "[ ] x y , ."  # the keys
            await pilot.press("right_square_bracket", "x", "y")
            assert (chart.smoothing, chart.x_axis, chart.log_y) == (0.8, "samples", True)
            assert drawn()[0].startswith("loss by samples (120) ema 0.8 log ▪val ")
            for _ in range(4):
                await pilot.press("left_square_bracket")
            assert drawn()[0].startswith("loss by samples (120) raw")
            await pilot.press("comma")
            assert chart.cursor == 119  # on the newest step
            assert drawn()[1].startswith("step 120 · 3,840 samples · ")
            await pilot.press("comma", "comma")
            assert chart.cursor < 119 and any("│" in line for line in drawn())
            await pilot.press("full_stop", "full_stop", "full_stop", "full_stop")
            assert chart.cursor is None  # moved past the newest point: gone

    asyncio.run(scenario())


def test_b_draws_another_run_under_the_loss_chart(settle, tmp_path):
    from kbert_tui.events._codec import encode_event

    other = tmp_path / "baseline-run" / "events.jsonl"
    other.parent.mkdir()
    other.write_text("".join(encode_event(e) for e in simulate_run(epochs=2, steps_per_epoch=90, run_id="base")))

    async def scenario() -> None:
        app = MonitorApp(StaticSource(list(simulate_run(epochs=2, steps_per_epoch=60)), label="recorded run"))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            pane = app.training_pane

            async def choose(text: str) -> None:
                await pilot.press("b")
                await pilot.pause()
                field = app.screen.query_one("#baseline")
                field.value = text
                await pilot.press("enter")
                await app.workers.wait_for_complete()
                await pilot.pause()

            await choose(str(tmp_path / "nowhere"))
            assert pane.baseline is None
            await choose(str(other.parent))
            assert pane.baseline is not None and pane.baseline[0] == "baseline-run"
            assert len(pane.baseline[1]) == 180 and pane.baseline[1].xs("step")[-1] == 180
            assert " vs baseline-run" in pane._chart(100, 10, pane.pal)[0].plain
            await choose("")
            assert pane.baseline is None

    asyncio.run(scenario())


# Issue 23: a one-step spike or NaN among 100k steps is drawn at 80 and 120 columns, where each chart
# column holds hundreds of steps (an averaged chart, like TensorBoard's or W&B's sampled one, loses it).

STEPS = 100_000
ODD_STEP = 63_211


def long_run(odd_loss: float) -> LossCurve:
    """100k steps of a smoothly falling loss (2 -> 1) whose only odd step is ODD_STEP's `odd_loss`."""
    curve = LossCurve()
    curve.started(0.0, 32)
    for step in range(1, STEPS + 1):
        curve.add(step, odd_loss if step == ODD_STEP else 2.0 - step / STEPS, step * 0.1)
    return curve


async def training_pane_lines(app: MonitorApp, pilot, curve: LossCurve) -> list[str]:
    """The Training pane as drawn on screen (its strips, borders included) with `curve` as its loss."""
    app.state.training.curve = curve
    app.training_pane.chart_changed()
    await pilot.pause()
    pane = app.training_pane
    return [strip.text for strip in pane.render_lines(Region(0, 0, pane.outer_size.width, pane.outer_size.height))]


def braille(row: str) -> list[int]:
    return [i for i, ch in enumerate(row) if 0x2801 <= ord(ch) <= 0x28FF]


def plot_rows(lines: list[str]) -> tuple[list[str], float]:
    """The chart's rows (those with braille dots or marks) and where ODD_STEP falls on them: the curve
    spans the whole plot area, from its leftmost dot to its rightmost."""
    rows = [line for line in lines if braille(line) or NONFINITE_MARK in line]
    start = min(braille(row)[0] for row in rows if braille(row))
    end = max(braille(row)[-1] for row in rows if braille(row))
    return rows, start + (ODD_STEP - 1) / (STEPS - 1) * (end - start)


def on_a_monitor(settle, size: tuple[int, int], check, *, epochs: int = 1, steps_per_epoch: int = 10) -> None:
    """Run `await check(app, pilot)` on a monitor of a short recorded run at `size`."""

    async def scenario() -> None:
        run = simulate_run(epochs=epochs, steps_per_epoch=steps_per_epoch)
        app = MonitorApp(StaticSource(list(run), label="recorded run"))
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await check(app, pilot)

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_one_spike_among_100k_steps_is_drawn_in_its_column(settle, size):
    async def check(app: MonitorApp, pilot) -> None:
        rows, column = plot_rows(await training_pane_lines(app, pilot, long_run(50.0)))
        top = rows[0]
        assert top[:braille(top)[0]].rstrip().endswith(" 50")  # the axis reaches the spike
        assert len(braille(top)) == 1 and abs(braille(top)[0] - column) <= 1
        for row in rows[:-1]:  # above the curve itself (the bottom row), only the spike's column
            assert braille(row) == braille(top)

    on_a_monitor(settle, size, check)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_one_nan_among_100k_steps_is_marked_in_its_column(settle, size):
    async def check(app: MonitorApp, pilot) -> None:
        rows, column = plot_rows(await training_pane_lines(app, pilot, long_run(math.nan)))
        marked = [i for row in rows for i, ch in enumerate(row) if ch == NONFINITE_MARK]
        assert len(marked) == 1 and abs(marked[0] - column) <= 1
        assert NONFINITE_MARK in rows[0]  # in the top row

    on_a_monitor(settle, size, check)


def test_the_cursor_reads_the_step_under_it_not_an_average(settle):
    async def check(app: MonitorApp, pilot) -> None:
        curve = long_run(50.0)
        points = curve.points()
        pane = app.training_pane
        pane.chart.cursor = spike = next(i for i in range(len(points)) if points.high[i] == 50.0)
        last = int(points.x["step"][spike])  # the block's last step, its own loss exactly
        readout = next(line for line in await training_pane_lines(app, pilot, curve) if f"step {last:,} · " in line)
        assert f"loss {2.0 - last / STEPS:.4g} " in readout  # (the pane's width leaves out the samples and time)
        assert f"{curve.stride} steps {2.0 - last / STEPS:.4g}–50" in readout
        whole = readout_text(curve, pane.chart, smoothed(curve, pane.chart.smoothing))  # beyond the pane's width
        assert whole.endswith(f" · {curve.stride} steps {2.0 - last / STEPS:.4g}–50")  # the spike in its block

    on_a_monitor(settle, (120, 40), check)


def test_a_resumed_run_marks_where_the_process_changed(settle):
    async def check(app: MonitorApp, pilot) -> None:
        pane, t = app.training_pane, app.state.training
        assert not any(RESUME_MARK in line.plain for line in pane._chart(70, 10, pane.pal))
        points = t.curve.points()
        t.resume_marks.append((60.0, 60.0 * 32, points.x["time"][59]))  # a process took over after step 60
        for axis in ("step", "samples", "time"):
            pane.chart.x_axis = axis
            drawn = [line.plain for line in pane._chart(70, 10, pane.pal)]
            columns = {line.index(RESUME_MARK) for line in drawn if RESUME_MARK in line}
            xs = points.x[axis]
            where = 8 + (xs[59] - xs[0]) / (xs[-1] - xs[0]) * (70 - 8 - 1)  # the plot's 62 cells after the labels
            assert len(columns) == 1 and abs(columns.pop() - where) <= 1, axis

    on_a_monitor(settle, (120, 40), check, epochs=2, steps_per_epoch=60)
