"""kbert-tui compare: two real demo runs with different learning rates, side by side."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kbert_tui.config import parse_config
from kbert_tui.events._codec import encode_event
from kbert_tui.events.store import segment_paths
from kbert_tui.session import RunSession
from kbert_tui.state.compare import compare_table, config_differences, label_runs, load_run, render_table
from simulate import simulate_run
from kbert_tui.training.testing import tiny_document


def _train(folder: Path, learning_rate: float, data: dict | None = None, **events: object) -> Path:
    document = tiny_document(folder, training={"epochs": 2, "learning_rate": learning_rate})
    document["events"] = {**document["events"], **events}
    if data is not None:  # the same CSV files: only what the test varies differs
        document["data"] = data
    config = parse_config(document, origin=str(folder / "run.toml"), base_dir=folder)

    async def run() -> Path:
        session = RunSession(config, output_dir=folder / "out")
        await session.start()
        assert await session.wait() == "completed"
        await session.close()
        return session.output_dir

    return asyncio.run(run())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two real runs of the tiny demo model, at lr 0.003 and 0.01; the second's log rotates (10 kB)."""
    first = tmp_path_factory.mktemp("lr-slow")
    slow = _train(first, 0.003)
    data = tiny_document(first)["data"]
    fast = _train(tmp_path_factory.mktemp("lr-fast"), 0.01, data, max_file_size_mb=0.01)
    return slow, fast


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kbert_tui", "compare", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_the_table_shows_the_differing_key_and_each_runs_metrics(two_runs):
    records = [load_run(run / "events.jsonl") for run in two_runs]
    label_runs(records)
    # output_dir differs too, and says nothing; the second run's log rotates at 10 kB
    assert config_differences(records) == ["events.max_file_size_mb", "training.learning_rate"]
    table = compare_table(records)
    assert table.header[-1] == "training.learning_rate"
    assert [row[-1] for row in table.rows] == ["0.003", "0.01"]
    for record, row in zip(records, table.data, strict=True):
        assert row["status"] == "completed" and row["epochs"] == 2
        assert set(row["final"]) == {"train_loss", "val_loss", "val_accuracy", "val_f1"}
        # final is the last epoch's, even when training.restore_best went back to a better one (issue 19)
        assert row["final"]["val_loss"] == record.epochs[-1]["val_loss"]
        best_loss = min(e["val_loss"] for e in record.epochs)
        assert row["best"]["val_loss"]["value"] == best_loss
        assert row["wall_s"] > 0 and row["samples_per_sec"] > 0
        assert record.steps[-1] == row["steps"] == 12  # 96 rows / batch 16 x 2 epochs
    # the chart holds two series, one per run, a loss per step
    from kbert_tui.tui.compare import loss_lines, metric_lines

    lines = loss_lines(records, "step")
    assert len(lines) == 2 and [len(line.ys) for line in lines] == [12, 12]
    assert lines[0].style != lines[1].style
    assert [list(line.xs) for line in metric_lines(records, "val_loss") if line.points] == [[1.0, 2.0]] * 2


def test_a_rotated_log_is_read_whole(two_runs):
    events = two_runs[1] / "events.jsonl"
    files = segment_paths(events)
    assert len(files) >= 2  # a rotated set: events.1.jsonl, then the active file
    lines = sum(1 for f in files for line in f.read_bytes().splitlines() if line.strip())
    record = load_run(events)
    assert record.events == lines and record.status == "completed"
    assert list(record.steps) == list(range(1, 13))


def test_reading_lines_twice_changes_nothing(two_runs):
    record = load_run(two_runs[0] / "events.jsonl")
    steps, epochs = list(record.steps), list(record.epochs)
    for line in (two_runs[0] / "events.jsonl").read_bytes().splitlines():
        record.feed_line(line)
    assert list(record.steps) == steps and record.epochs == epochs


def test_headless_formats(two_runs):
    a, b = (str(run) for run in two_runs)
    rows = json.loads(_cli(a, b, "--format", "json").stdout)
    assert [r["config"]["training.learning_rate"] for r in rows] == [0.003, 0.01]
    parsed = list(csv.reader(io.StringIO(_cli(a, b, "--format", "csv").stdout)))
    assert parsed[0][0] == "run" and parsed[0][-1] == "training.learning_rate" and len(parsed) == 3
    markdown = _cli(a, b, "--format", "markdown").stdout.splitlines()
    assert markdown[0].startswith("| run | status |") and markdown[1].startswith("|---|")
    plain = _cli(a, str(two_runs[1] / "events.jsonl"))  # stdout is a pipe: the plain table
    assert plain.returncode == 0 and plain.stdout.splitlines()[0].split()[:2] == ["run", "status"]
    assert "completed" in plain.stdout and "0.01" in plain.stdout


def test_bad_runs_are_one_line_and_exit_2(tmp_path, two_runs):
    missing = _cli(str(two_runs[0]), str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        f"kbert-tui: error: no such run directory or events file: {tmp_path / 'nope'}"]
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"hello": 1}\n')
    bad = _cli(str(two_runs[0]), str(notes))
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [f"kbert-tui: error: {notes}: not a run's events log (no training.started "
                                       "in its 1 lines)"]
    one = _cli(str(two_runs[0]))
    assert one.returncode == 2 and "two or more runs" in one.stderr


def test_final_is_the_last_epoch_and_best_the_best_when_the_best_weights_were_restored(tmp_path):
    path = tmp_path / "events.jsonl"
    events = list(simulate_run(epochs=6, steps_per_epoch=5))
    val_losses = [0.9, 0.5, 0.3, 0.35, 0.4, 0.45]  # best at epoch 3, then worse
    epochs = [e for e in events if e.name == "training.epoch_completed"]
    for event, value in zip(epochs, val_losses, strict=True):
        event.data["metrics"]["val_loss"] = value
    for event in events:
        if event.name == "training.completed":  # restore_best: the final metrics are epoch 3's
            event.data["final_metrics"] = {**epochs[2].data["metrics"]}
    path.write_text("".join(encode_event(e) for e in events))
    record = load_run(path)
    label_runs([record])
    [row] = json.loads(render_table(compare_table([record]), "json"))
    assert row["final"]["val_loss"] == 0.45  # was 0.3: the best epoch's under "final"
    assert row["final"]["train_loss"] == epochs[-1].data["metrics"]["train_loss"]
    assert row["best"]["val_loss"] == {"value": 0.3, "epoch": 3}


def test_without_epoch_events_final_comes_from_training_completed(tmp_path):
    path = tmp_path / "events.jsonl"
    events = [e for e in simulate_run(epochs=2, steps_per_epoch=5) if e.name != "training.epoch_completed"]
    path.write_text("".join(encode_event(e) for e in events))
    [row] = compare_table([load_run(path)]).data
    completed = next(e for e in events if e.name == "training.completed")
    assert row["final"]["val_loss"] == completed.data["final_metrics"]["val_loss"]


def test_nan_metrics_are_null_in_json(tmp_path):
    path = tmp_path / "events.jsonl"
    events = list(simulate_run(epochs=1, steps_per_epoch=5))
    for event in events:
        if event.name == "training.epoch_completed":
            event.data["metrics"]["val_loss"] = math.nan
        if event.name == "training.completed":
            event.data["final_metrics"]["val_loss"] = math.nan
    path.write_text("".join(encode_event(e) for e in events))
    record = load_run(path)
    label_runs([record])
    [row] = json.loads(render_table(compare_table([record]), "json"))
    assert row["final"]["val_loss"] is None


# ------------------------------------------------------------------ the view


def _simulated(folder: Path, runs: int = 2) -> list:
    records = []
    for i in range(runs):
        run_dir = folder / f"lr-{i + 1}e-4"
        run_dir.mkdir()
        lines = []
        for event in simulate_run(epochs=4, steps_per_epoch=60, run_id=f"run-{i}", run_name="demo"):
            if event.name == "training.started":
                event.data["config"]["training"]["learning_rate"] = (i + 1) * 1e-4
            if event.name == "training.batch_completed":  # a second run that learns faster
                event.data["loss"] = event.data["loss"] * (1.0 - 0.3 * i)
            if event.name == "training.epoch_completed":
                event.data["metrics"]["val_loss"] = event.data["metrics"]["val_loss"] * (1.0 - 0.3 * i)
            if event.name == "training.completed":
                event.data["final_metrics"]["val_loss"] = event.data["final_metrics"]["val_loss"] * (1.0 - 0.3 * i)
            lines.append(encode_event(event))
        (run_dir / "events.jsonl").write_text("".join(lines))
        records.append(load_run(run_dir / "events.jsonl"))
    label_runs(records)
    return records


def test_the_view_overlays_both_runs_and_its_keys_switch_charts(two_runs):
    from kbert_tui.tui.compare import ChartView, CompareApp

    records = [load_run(run / "events.jsonl") for run in two_runs]
    label_runs(records)

    async def scenario() -> None:
        app = CompareApp(records)
        async with app.run_test(size=(120, 40)) as pilot:
            loss = app.query_one("#loss", ChartView)
            assert len(loss.lines) == 2 and loss.title == "training loss by step"
            await pilot.press("x")
            assert loss.title == "training loss by samples" and loss.unit == "samples"
            await pilot.press("l")
            assert loss.title.endswith("log y")
            metric = app.query_one("#metric", ChartView)
            assert metric.title.startswith("val_loss")
            await pilot.press("m")
            assert metric.title.startswith("val_accuracy")
            assert app.followers == {}  # both runs are finished: nothing to follow
            await pilot.press("ctrl+c")  # leaves, as in the monitor (was Textual's "press ctrl+q" toast)
            await pilot.pause()
            assert not app.is_running

    asyncio.run(scenario())


def test_the_view_follows_a_run_being_written(tmp_path):
    from kbert_tui.tui.compare import CompareApp

    records = _simulated(tmp_path)
    growing = tmp_path / "live" / "events.jsonl"
    growing.parent.mkdir()
    events = list(simulate_run(epochs=2, steps_per_epoch=20, run_id="live"))
    half = next(i for i, e in enumerate(events) if e.name == "training.epoch_completed")
    growing.write_text("".join(encode_event(e) for e in events[:half]))
    live = load_run(growing)
    assert live.status == "running"

    async def scenario() -> None:
        app = CompareApp([*records, live])
        async with app.run_test(size=(100, 30)) as pilot:
            assert list(app.followers) == [2]
            with growing.open("a") as handle:
                handle.write("".join(encode_event(e) for e in events[half:]))
            app.follow()
            await pilot.pause()
            assert live.status == "completed" and live.steps[-1] == 40 and len(live.epochs) == 2
            assert app.followers == {}

    asyncio.run(scenario())


def test_snapshot_compare_120x40(snap_compare, tmp_path):
    from kbert_tui.tui.compare import CompareApp

    assert snap_compare(CompareApp(_simulated(tmp_path, 3), follow=False), terminal_size=(120, 40))


def test_snapshot_compare_80x24(snap_compare, tmp_path):
    from kbert_tui.tui.compare import CompareApp

    assert snap_compare(CompareApp(_simulated(tmp_path), follow=False), terminal_size=(80, 24))
