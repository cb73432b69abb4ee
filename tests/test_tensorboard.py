"""TensorBoard logs in and out: a log directory written by tensorboardX round-trips through `kbert-tui import`
and `kbert-tui export`, every step kept (TensorBoard's own CSV download keeps 1,000, tensorboard#4047)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from kbert_tui.cli import main
from kbert_tui.events import catalog as ev
from kbert_tui.events.store import read_events
from kbert_tui.tboard import find_runs, read_scalars, run_scalars

tensorboardX = pytest.importorskip("tensorboardX")
pytest.importorskip("tensorboard")

STEPS = 1500  # more than TensorBoard's 1,000-point sampling of scalars


def write_logdir(root: Path) -> dict[str, dict[tuple[str, int], float]]:
    """Two runs (one per subdirectory), a loss every step and a validation accuracy every 100; what was written."""
    written: dict[str, dict[tuple[str, int], float]] = {}
    for run, scale in (("baseline", 1.0), ("bigger-lr/seed1", 0.5)):
        writer = tensorboardX.SummaryWriter(logdir=str(root / run))
        values: dict[tuple[str, int], float] = {}
        for step in range(STEPS):
            loss = float(np.float32(scale / (1 + step)))
            writer.add_scalar("train/loss", loss, global_step=step, walltime=1_700_000_000 + step * 0.5)
            values[("train/loss", step)] = loss
            if step % 100 == 99:
                accuracy = float(np.float32(0.5 + step / 4000))
                writer.add_scalar("val/accuracy", accuracy, global_step=step, walltime=1_700_000_000 + step * 0.5)
                values[("val/accuracy", step)] = accuracy
        writer.close()
        written[run] = values
    return written


def test_a_tensorboard_directory_round_trips_through_import_and_export(tmp_path: Path, capsys):
    written = write_logdir(tmp_path / "tb")
    assert main(["import", str(tmp_path / "tb"), "--output-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"{STEPS + STEPS // 100:,} scalars" in out
    runs = {name: tmp_path / "runs" / dirname for name, dirname in
            (("baseline", "baseline"), ("bigger-lr/seed1", "bigger-lr-seed1"))}
    for name, folder in runs.items():
        events = list(read_events(folder / "events.jsonl"))
        for event in events:
            assert ev.check_payload(event.name, event.data) == [], event.name
        batches = [e for e in events if e.name == ev.TRAINING_BATCH_COMPLETED]
        assert len(batches) == STEPS  # every step, the loss tag as the loss curve
        assert events[0].data["config"]["loss_tag"] == "train/loss" and events[0].data["run_name"] == name
        assert batches[10].timestamp.timestamp() == pytest.approx(1_700_000_005.0)  # the original wall times
        # export as tfevents, read back by TensorBoard's own loader: the same (tag, step, value) as written
        assert main(["export", str(folder), "--format", "tfevents", "--output", str(tmp_path / "out" / name)]) == 0
        exported = find_runs(tmp_path / "out" / name)
        assert len(exported) == 1
        again = read_scalars(next(iter(exported.values())))
        assert {(s.tag, s.step): s.value for s in again} == written[name]
        # csv: one row per value, nothing sampled
        assert main(["export", str(folder), "--output", str(tmp_path / f"{folder.name}.csv")]) == 0
        with open(tmp_path / f"{folder.name}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert {(r["metric"], int(r["step"])): float(r["value"]) for r in rows} == written[name]
    assert main(["replay", str(runs["baseline"] / "events.jsonl")]) == 0
    assert "completed" in capsys.readouterr().out
    assert main(["compare", str(runs["baseline"]), str(runs["bigger-lr/seed1"]), "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("completed") == 2


def test_export_to_parquet_keeps_every_value_of_a_script_run(tmp_path: Path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.delenv("KBERT_TUI_RUN_DIR", raising=False)
    import kbert_tui

    run = kbert_tui.init("parquet", dir=tmp_path)
    for step in range(1, 2001):
        run.log({"loss": 1.0 / step, "learning_rate": 0.01}, step=step)
    run.log({"val_loss": 0.5}, epoch=1)
    run.finish()
    assert main(["export", str(run.dir), "--format", "parquet"]) == 0
    table = pq.read_table(run.dir / "metrics-export.parquet").to_pylist()
    assert len(table) == 2000 * 2 + 1
    assert table[0] == {"step": 1, "epoch": 1, "kind": "batch", "metric": "loss", "value": 1.0,
                        "wall_time": table[0]["wall_time"]}
    assert table[-1]["metric"] == "val_loss" and table[-1]["step"] == 2000 and table[-1]["kind"] == "epoch"
    assert [s.tag for s in run_scalars(run.events_path)][:2] == ["loss", "learning_rate"]


def test_an_import_of_a_directory_without_tfevents_says_so_and_exits_2(tmp_path: Path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "notes.txt").write_text("hello")
    assert main(["import", str(tmp_path / "logs")]) == 2
    assert capsys.readouterr().err == (f"kbert-tui: error: import: {tmp_path / 'logs'}: no tfevents files in it "
                                       "(a TensorBoard log directory holds events.out.tfevents.* files)\n")
    assert main(["import", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_an_import_never_overwrites_a_run(tmp_path: Path, capsys):
    write_logdir(tmp_path / "tb")
    assert main(["import", str(tmp_path / "tb"), "--output-dir", str(tmp_path / "runs")]) == 0
    before = (tmp_path / "runs" / "baseline" / "events.jsonl").read_bytes()
    assert main(["import", str(tmp_path / "tb"), "--output-dir", str(tmp_path / "runs")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "runs" / "baseline" / "events.jsonl").read_bytes() == before


def test_export_of_something_that_is_not_a_run_exits_2(tmp_path: Path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "no such run directory or events file" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["export", str(tmp_path / "empty.jsonl")]) == 2
    assert "no metrics in this log" in capsys.readouterr().err
