"""The monitor's loss chart keys: smoothing, x axis, log y and the cursor, kept while the app runs."""

from __future__ import annotations

import asyncio

from kbert_tui.state.simulate import simulate_run
from kbert_tui.tui import MonitorApp, StaticSource


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
