"""The monitor's loss chart keys: smoothing, x axis, log y and the cursor, kept while the app runs."""

from __future__ import annotations

import asyncio

from simulate import simulate_run
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
