"""Nothing cut off or spilled: the monitor at 80x24, 100x30, 120x40 and 200x50, live and replayed, with
long values (a long run name and log path, a long filter typed with `/`, 8-digit steps, NaN losses).

Each screen is read back cell by cell as drawn: every pane's border cell is a border character (a row
that spills over a pane's edge replaces one), and what the monitor promises is on screen — the run state
in the title, the key hints, the chart's key hint, the validation loss at the chart cursor, the
completion line of a finished run, the status line's follow state past a long filter."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from rich.cells import cell_len
from textual.widget import Widget

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.tui import MonitorApp, ReplaySource, StaticSource
from simulate import simulate_run
from test_tui_app import FakeLive, write_log

SIZES = [(80, 24), (100, 30), (120, 40), (200, 50)]
RUN_NAME = "sentiment-bert-large-uncased-finetune-on-tweets-with-a-long-name"
LIVE_LOG = Path("/home/someone/experiments/2026-01-01/sentiment-bert-large-uncased/events.jsonl")
FIRST_STEP = 12_340_000  # 8-digit step numbers
FILTER = "loss>0.5 source:trainer !system.* training.batch_completed"
PANES = ("#training", "#system", "#log", "#plugins")


def long_run(*, finished: bool) -> list[Event]:
    """A 3-epoch run at 8-digit steps, named long, with a NaN loss every 17 steps, a bag-of-words baseline
    and a rule that fired; `finished`: it stopped early (best weights restored), else it is in epoch 3."""
    events = []
    for event in simulate_run(epochs=3, steps_per_epoch=60, run_name=RUN_NAME, system_every=3):
        data = dict(event.data)
        if isinstance(data.get("step"), int):
            data["step"] += FIRST_STEP
        if event.name == ev.TRAINING_STARTED:
            data["total_steps"] += FIRST_STEP
        if event.name == ev.TRAINING_BATCH_COMPLETED and data["step"] % 17 == 0:
            data["loss"] = float("nan")
        if event.name == ev.TRAINING_COMPLETED:
            data.update(stopped_early=True, restored_epoch=2)
        events.append(dataclasses.replace(event, data=data))
        if event.name == ev.DATA_PREPROCESSING_COMPLETED:
            events.append(dataclasses.replace(event, name=ev.DATA_BASELINE_COMPUTED, id="sim-baseline", data={
                "model": "bag-of-words logistic regression", "val_accuracy": 0.75, "val_f1": 0.74,
                "features": 20000, "seconds": 1.5}))
        if event.name == ev.TRAINING_EPOCH_COMPLETED and data["epoch"] == 2:
            events.append(dataclasses.replace(event, name=ev.RULE_FIRED, id="sim-rule", data={
                "rule": "loss-spike", "action": "notify", "caused_by": event.id, "trigger": event.id,
                "reason": "loss 0.9 > 2 x its running mean", "when": "loss > 2 * mean", "count": 1}))
    if finished:
        return events
    cut = next(i for i, e in enumerate(events) if e.name == ev.TRAINING_EPOCH_STARTED and e.data["epoch"] == 3)
    return events[: cut + 40]


def live_app() -> MonitorApp:
    source = FakeLive(long_run(finished=False))
    source.events_path = LIVE_LOG
    return MonitorApp(source)


def replay_app(tmp_path: Path) -> MonitorApp:
    path = tmp_path / "experiments" / "a-long-directory-name-for-the-replayed-run" / RUN_NAME / "events.jsonl"
    path.parent.mkdir(parents=True)
    write_log(path, long_run(finished=True))
    return MonitorApp(ReplaySource(path))


async def settled(pilot) -> None:
    """Everything the source has delivered is on screen (a replay: the whole file)."""
    app = pilot.app
    for _ in range(500):
        await pilot.pause(0.01)
        if (app.source.finished and app.history_complete) if app.source.recording else (app.ingested and not app.inbox):
            break  # a recording: its whole history swapped in (it is not ingested event by event)
    app.drain_all()
    await pilot.pause()


async def typed_filter_and_cursor(pilot) -> None:
    """The long filter typed with `/` and Enter, then the chart cursor put on the newest point."""
    await settled(pilot)
    await pilot.press("slash", *[_key(ch) for ch in FILTER], "enter")
    await pilot.pause(0.2)
    await pilot.press("comma")
    await pilot.pause()


def _key(ch: str) -> str:
    return {" ": "space", ">": "greater_than_sign", ".": "full_stop", ":": "colon", "!": "exclamation_mark",
            "*": "asterisk", "_": "underscore"}.get(ch, ch)


def screen_cells(app: MonitorApp) -> list[list[str]]:
    """The terminal as drawn, one string per cell (a wide character's second cell is empty)."""
    rows = []
    for strip in app.screen._compositor.render_strips():
        cells: list[str] = []
        for segment in strip:
            for ch in segment.text:
                cells.append(ch)
                cells.extend([""] * (cell_len(ch) - 1))
        rows.append(cells)
    return rows


def region_text(cells: list[list[str]], widget: Widget) -> str:
    r = widget.region
    return "\n".join("".join(row[r.x:r.right]) for row in cells[r.y:r.bottom])


def border_problems(cells: list[list[str]], widget: Widget) -> list[str]:
    """Each cell of the pane's frame that is not a frame character (its top row may hold a title)."""
    r = widget.region
    found = []
    for y in range(r.y + 1, r.bottom - 1):
        for x in (r.x, r.right - 1):
            if cells[y][x] != "│":
                found.append(f"{widget.id} row {y} col {x}: {cells[y][x]!r} in {''.join(cells[y])!r}")
    corners = {(r.x, r.y): "╭", (r.right - 1, r.y): "╮", (r.x, r.bottom - 1): "╰", (r.right - 1, r.bottom - 1): "╯"}
    found += [f"{widget.id} corner {x},{y}: {cells[y][x]!r}" for (x, y), ch in corners.items() if cells[y][x] != ch]
    return found


def check_screen(app: MonitorApp, size: tuple[int, int], status: str) -> list[str]:
    """What is wrong on the screen, in words (empty: nothing)."""
    width, height = size
    cells = screen_cells(app)
    lines = ["".join(row) for row in cells]
    problems = [f"row {y} is {len(row)} cells" for y, row in enumerate(cells) if len(row) != width]
    if len(cells) != height:
        problems.append(f"{len(cells)} rows")
    for pane in (app.screen.query_one(selector) for selector in PANES):
        if pane.display and pane.region.area:
            problems += border_problems(cells, pane)
    if not lines[0].rstrip().endswith(f"· {status}"):
        problems.append(f"the title does not end with the run state {status!r}: {lines[0]!r}")
    footer = re.sub(r"\s+", " ", lines[-1])
    problems += [f"no {hint!r} in the footer {lines[-1]!r}" for hint in ("/ Filter", "? Help", "q Quit")
                 if hint not in footer]
    statusbar = lines[-2]
    problems += [f"no {part!r} in the status line {statusbar!r}" for part in ("match", "FOLLOW", "warnings")
                 if part not in statusbar]
    training = region_text(cells, app.training_pane)
    if "[ ] x y , ." not in training:
        problems.append(f"no chart key hint in the training pane:\n{training}")
    if not re.search(r"val_loss \d\.\d+", training.split("loss by")[-1] if "loss by" in training else ""):
        problems.append(f"no validation loss at the chart cursor:\n{training}")
    if "RUNNING" not in training and "COMPLETED" not in training:
        problems.append(f"no run state in the training pane:\n{training}")
    if status == "completed" and "✔ completed (stopped early)" not in training:
        problems.append(f"no completion line in the training pane:\n{training}")
    log_rows = [line for line in region_text(cells, app.log_view).splitlines() if "training.batch_completed" in line]
    if not log_rows or not all(re.search(r"loss=(\d\.\d+|nan)", row) for row in log_rows):
        problems.append(f"filtered log rows without their loss: {log_rows[:3]}")
    return problems


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_live_run_with_long_values_fits_every_pane(size):
    app = live_app()
    async with app.run_test(size=size) as pilot:
        await typed_filter_and_cursor(pilot)
        problems = check_screen(app, size, "running")
        app.source._ended.set()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_a_replayed_run_with_long_values_fits_every_pane(size, tmp_path):
    app = replay_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await typed_filter_and_cursor(pilot)
        problems = check_screen(app, size, "completed")
    assert not problems, "\n".join(problems)


# -- one snapshot a size: what the assertions above read, for a person to look at ---------------------------

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_live_long_values(snap_compare, size):
    assert snap_compare(live_app(), terminal_size=size, run_before=typed_filter_and_cursor)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_replay_long_values(snap_compare, size, tmp_path):
    assert snap_compare(replay_app(tmp_path), terminal_size=size, run_before=typed_filter_and_cursor)


async def test_the_system_panes_sparklines_start_beside_their_value():
    app = live_app()  # 45 readings: fewer than the 80-column pane's 50 sparkline cells
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        await pilot.press("2")
        await pilot.pause()
        rows = region_text(screen_cells(app), app.system_pane).splitlines()
        for label in ("CPU", "Mem", "Disk"):
            row = next(r for r in rows if r.startswith(f"│ {label}"))
            assert re.match(rf"│ {label} +\d+\.\d% [▁▂▃▄▅▆▇█]+( (rss|\d+G)|  +│)", row), row  # then what follows
        app.source._ended.set()


def test_the_screenshots_in_docs_tui_md_are_this_tests_snapshots():
    from urllib.parse import unquote

    docs = Path(__file__).resolve().parents[1] / "docs" / "tui.md"
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.svg)\)", docs.read_text(encoding="utf-8"))
    assert len(images) >= 3
    for image in images:
        path = (docs.parent / unquote(image)).resolve()
        assert path.is_file() and path.parent.name == "test_tui_layout", image


async def test_a_terminal_resized_from_120x40_to_80x24_takes_the_narrow_layout_at_once():
    app = live_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await typed_filter_and_cursor(pilot)
        assert app.system_pane.display and app.plugins_pane.display
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.2)
        assert app.monitor.narrow and not app.system_pane.display and not app.plugins_pane.display
        problems = check_screen(app, (80, 24), "running")
        app.source._ended.set()
    assert not problems, "\n".join(problems)


async def test_the_model_versus_baseline_row_is_shortened_never_silently_cut(settle):
    events = long_run(finished=True)
    for event in events:
        if event.name == ev.TRAINING_COMPLETED:
            event.data["final_metrics"]["encoder_val_accuracy"] = 0.998
    app = MonitorApp(StaticSource(events))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pane = app.training_pane
        for width in (49, 40, 30):
            row = next(line.plain for _, line in pane._rows(width, pane.pal) if line.plain.startswith("val_acc "))
            assert len(row) <= width and (row.endswith("bag-of-words 0.750") or row.endswith("…")), row
            assert width < 49 or row.endswith("0.750")  # 80x24's text column: shorter words, every figure whole


async def test_a_stopped_runs_checkpoint_keeps_its_folder_name_at_80x24(settle):
    events = long_run(finished=False)
    last = events[-1]
    path = "/home/someone/experiments/2026-01-01/a-long-run-directory/checkpoints/stopped-step-12340136"
    stopped = dataclasses.replace(last, name=ev.TRAINING_STOPPED, id="sim-stopped", data={
        "epoch": 3, "step": FIRST_STEP + 136, "reason": "user", "checkpoint_path": path})
    app = MonitorApp(StaticSource([*events, stopped]))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        training = region_text(screen_cells(app), app.training_pane)
        assert "■ stopped (user) /" in training and "…/stopped-step-12340136" in training, training


async def test_the_loss_row_keeps_every_figure_whole_beside_the_chart(settle):
    events = list(simulate_run(epochs=1, steps_per_epoch=20))
    for event in events:  # the demo's figures, resumed at 80x24: tiny loss, four-digit samples/s
        if event.name == ev.TRAINING_BATCH_COMPLETED:
            event.data.update(loss=9.708e-04)
            event.data["metrics"].update(learning_rate=2.531e-04, grad_norm=0.01852, samples_per_sec=1018.4)
    app = MonitorApp(StaticSource(events))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pane = app.training_pane
        row = next(line.plain for _, line in pane._rows(49, pane.pal) if "sps" in line.plain)
        assert "…" not in row and row.endswith("sps 1,018"), row


async def test_a_filtered_row_leads_with_the_compared_field_and_does_not_repeat_it():
    app = live_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await typed_filter_and_cursor(pilot)
        rows = [r for r in region_text(screen_cells(app), app.log_view).splitlines() if "batch_completed" in r]
        assert rows and all(row.count("loss=") == 1 and " step 1234" in row for row in rows), rows[:3]
        app.source._ended.set()
