"""`kbert-tui run --resume RUN_DIR`, end to end: a run stopped (or killed), resumed, then one story in the
log (one run id), in RunState replayed from it, in metrics.csv and in compare."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import write_toml

from kbert_tui.cli import main
from kbert_tui.events.store import read_events, segment_paths
from kbert_tui.remote.local import send_control
from kbert_tui.state import RunState
from kbert_tui.state.compare import compare_table, load_run
from kbert_tui.state.replay_load import load_end
from kbert_tui.tboard import run_scalars
from kbert_tui.training.testing import tiny_document

STEPS_PER_EPOCH = 6  # the tiny dataset: 96 rows in batches of 16


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


def write_config(tmp_path: Path, *, epochs: int, rule: str, action: str) -> Path:
    """A tiny run of `epochs` that a rule pauses or stops at a step, with metrics.csv and a checkpoint a epoch."""
    document = tiny_document(tmp_path, training={"epochs": epochs, "checkpoint": {"policy": "last"}})
    del document["run"]["output_dir"]
    path = write_toml(tmp_path / "tiny.toml", document)
    with path.open("a") as handle:
        handle.write(f'\n[plugins.csv]\nplugin = "metrics_csv"\n\n[[rules]]\nname = "halt"\nwhen = "{rule}"\n'
                     f'action = "{action}"\n')
    return path


def replayed(run_dir: Path) -> RunState:
    state = RunState()
    state.apply_all(read_events(run_dir / "events.jsonl"))
    return state


def batch_steps(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row["kind"] == "batch"]


def assert_one_story(run_dir: Path, epochs: int, resumed_at: int) -> RunState:
    total = epochs * STEPS_PER_EPOCH
    events = list(read_events(run_dir / "events.jsonl"))
    started = [e for e in events if e.name == "training.started"]
    assert len(started) == 2 and started[1].data["resumed_at_step"] == resumed_at
    assert {e.correlation_id for e in events if e.name.startswith("training.")} == {started[0].data["run_id"]}

    state = replayed(run_dir)
    t = state.training
    assert t.status == "completed" and t.resumes == [resumed_at]
    [(mark_step, mark_samples, mark_seconds)] = t.resume_marks  # where the chart marks the process change
    kept = list(t.curve.xs("step")).index(float(resumed_at))
    assert (mark_step, mark_samples, mark_seconds) == (resumed_at, t.curve.xs("samples")[kept],
                                                       t.curve.xs("time")[kept])
    assert list(t.curve.xs("step")) == [float(s) for s in range(1, total + 1)]  # from step 0, each step once
    assert list(t.curve.xs("time")) == sorted(t.curve.xs("time"))  # the time axis goes on, not back
    assert [row["epoch"] for row in t.epoch_metrics] == list(range(1, epochs + 1))
    assert t.best_value == max(row[t.best_metric] for row in t.epoch_metrics)  # val_accuracy: the higher

    assert batch_steps(run_dir) == list(range(1, total + 1))  # metrics.csv: no step twice

    exported = [s.step for s in run_scalars(run_dir / "events.jsonl") if s.kind == "batch" and s.tag == "loss"]
    assert exported == list(range(1, total + 1))  # `kbert-tui export`: each step once

    # replay's first view (the end of the log) counts one run, not two
    assert load_end(segment_paths(run_dir / "events.jsonl"), 1000).runs == 1

    record = load_run(run_dir / "events.jsonl")
    assert list(record.steps) == list(range(1, total + 1)) and record.status == "completed"
    assert [row["epoch"] for row in record.epochs] == list(range(1, epochs + 1))
    assert record.run_id == started[0].data["run_id"]
    assert list(record.times) == sorted(record.times)
    table = compare_table([record, load_run(run_dir / "events.jsonl")])
    assert len(table.rows) == 2
    return state


def test_stopped_run_resumes_as_one_story(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, epochs=2, rule="training.batch_completed step=4", action="stop")
    run_dir = tmp_path / "run"
    assert main(["run", "--headless", str(config), "--output-dir", str(run_dir)]) == 3
    out = capsys.readouterr().out
    assert "resume: kbert-tui run --resume run\n" in out  # the exact command, relative to the working directory
    state = replayed(run_dir)
    assert state.training.status == "stopped" and state.training.step == 4

    # the rule fires on step 4 only: the resumed process (steps 5..12) goes to the end
    assert main(["run", "--headless", "--resume", "run"]) == 0
    out = capsys.readouterr().out
    assert "resume:" not in out and f"done: {run_dir}" in out
    assert_one_story(run_dir, epochs=2, resumed_at=4)


def test_killed_run_resumes_without_the_steps_it_did_twice(tmp_path, monkeypatch):
    """A run killed (SIGKILL: no stop checkpoint) at step 8 goes on from its epoch-1 checkpoint (step 6):
    steps 7 and 8, logged by the killed process, are done again and told once."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, epochs=3, rule="training.batch_completed step=8", action="pause")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "kbert_tui", "run", "--headless", str(config),
                              "--output-dir", str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while b'"training.paused"' not in _bytes(run_dir / "events.jsonl"):
            assert time.monotonic() < deadline and child.poll() is None, "the run never paused"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert batch_steps(run_dir)[-1] == 8  # the killed process logged steps 7 and 8 past its checkpoint

    # the rule pauses at step 8 again: resume it from the outside, as `p` in an attached monitor would
    resumed = subprocess.Popen([sys.executable, "-m", "kbert_tui", "run", "--headless", "--resume", "run"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _bytes(run_dir / "events.jsonl").count(b'"training.paused"') < 2:
            assert time.monotonic() < deadline and resumed.poll() is None, (
                resumed.stderr.read() if resumed.stderr else "")
            time.sleep(0.1)
        send_control(run_dir / "control.jsonl", "control.resume_requested", {"requested_by": "test"},
                     source="test", run_id=None)
        _, err = resumed.communicate(timeout=120)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 0, err
    state = assert_one_story(run_dir, epochs=3, resumed_at=STEPS_PER_EPOCH)
    assert state.training.epochs_done == 3

    # a monitor that sees only the resumed process: the best so far comes with its training.started
    events = list(read_events(run_dir / "events.jsonl"))
    second = [i for i, e in enumerate(events) if e.name == "training.started"][1]
    fresh = RunState()
    fresh.apply_all(e for e in events[second:] if e.name != "training.new_best_model")
    first_epoch = replayed_until_second_start(events[:second])
    assert fresh.training.best_value == first_epoch.training.best_value is not None
    assert fresh.training.best_epoch == 1 and fresh.training.resumes == [STEPS_PER_EPOCH]


def replayed_until_second_start(events) -> RunState:
    state = RunState()
    state.apply_all(events)
    return state


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["run", "--headless", "--resume", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint to resume from" in err
    assert main(["run", "--headless", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def test_the_monitor_says_how_to_resume_and_opens_a_resumed_run_with_its_story(tmp_path, capsys, monkeypatch):
    """`run` with the monitor: after a stop its closing output names the command; `run --resume` in the monitor
    keeps the run id and the monitor's source hands it the run's earlier events first."""
    import asyncio
    from collections import deque

    from kbert_tui import tui
    from kbert_tui.tui.sources import LiveSource

    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, epochs=2, rule="training.batch_completed step=4", action="stop")
    seen: dict[str, object] = {}

    def monitor_run(config, *, output_dir, stopped_status, session_factory):  # the monitor's run, minus the screen
        source = LiveSource(config, output_dir=output_dir, session_factory=session_factory)
        inbox: deque = deque()

        async def run() -> str:
            await source.start(inbox)
            outcome = await source.wait()
            await source.close()
            return outcome

        outcome = asyncio.run(run())
        seen["run_id"], seen["inbox"] = source.session.run_id, list(inbox)
        return stopped_status if outcome == "stopped" else 0

    monkeypatch.setattr(tui, "monitor_run", monitor_run)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert main(["run", str(config), "--output-dir", "run"]) == 3
    assert capsys.readouterr().out.splitlines()[-1] == "resume: kbert-tui run --resume run"
    first_id = seen["run_id"]
    logged = len(list(read_events(tmp_path / "run" / "events.jsonl")))

    assert main(["run", "--resume", "run"]) == 0
    assert "resume:" not in capsys.readouterr().out
    assert seen["run_id"] == first_id
    inbox = seen["inbox"]
    earlier = list(read_events(tmp_path / "run" / "events.jsonl"))[:logged]
    assert [e.id for e in inbox[:logged]] == [e.id for e in earlier]  # the story so far, then the new process
    state = RunState()
    state.apply_all(inbox)
    assert state.training.resumes == [4] and list(state.training.curve.xs("step")) == [float(s) for s in range(1, 13)]


def test_a_run_still_going_is_not_resumed_beside_itself(tmp_path, capsys):
    from kbert_tui.remote.local import INFO_NAME, RunInfo

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    RunInfo(run_id="r", pid=os.getpid(), host=socket.gethostname(), events=str(run_dir / "events.jsonl")).write(
        run_dir / INFO_NAME)
    assert main(["run", "--headless", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the run is still going (pid {os.getpid()}" in err
