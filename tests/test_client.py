"""The client API (`kbert_tui.init` / `Run`): what a script's run writes, how requests reach the script, bad input."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from simulate import simulate_run

import kbert_tui
from kbert_tui.client import LogError
from kbert_tui.events import catalog as ev
from kbert_tui.events.store import JsonlStore, read_events
from kbert_tui.remote import AttachedRun, resolve_run
from kbert_tui.state import RunState
from kbert_tui.state.compare import compare_table, label_runs, load_run, render_table


@pytest.fixture(autouse=True)
def not_watched(monkeypatch):
    monkeypatch.delenv("KBERT_TUI_RUN_DIR", raising=False)
    monkeypatch.delenv("KBERT_TUI_RUN_ID", raising=False)


def names(path: Path) -> list[str]:
    return [e.name for e in read_events(path)]


def wait_until(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_script_run_writes_the_run_directory_that_kbert_tui_run_writes(tmp_path: Path):
    run = kbert_tui.init(project="sentiment", config={"lr": 3e-4, "layers": [2, 4]}, dir=tmp_path,
                         total_epochs=2, steps_per_epoch=3)
    assert run.dir.parent == tmp_path and run.dir.name == run.run_id
    step = 0
    for epoch in (1, 2):
        for _ in range(3):
            step += 1
            run.log({"loss": mx.array(1.0 / step), "learning_rate": np.float32(0.5), "tokens": np.int64(7)}, step=step)
        run.log({"val_loss": np.float64(0.25), "val_accuracy": mx.array([0.75])}, epoch=epoch)
    run.finish()
    events = list(read_events(run.events_path))
    training = [e for e in events if e.category == "training"]
    assert [e.name for e in training] == (
        [ev.TRAINING_STARTED] + ([ev.TRAINING_EPOCH_STARTED] + [ev.TRAINING_BATCH_COMPLETED] * 3
                                 + [ev.TRAINING_EPOCH_COMPLETED]) * 2 + [ev.TRAINING_COMPLETED])
    for event in events:
        assert ev.check_payload(event.name, event.data) == [], event.name
        assert event.correlation_id == run.run_id
    started = training[0].data
    assert started["config"] == {"lr": 3e-4, "layers": [2, 4]} and started["run_name"] == "sentiment"
    assert (started["total_epochs"], started["total_steps"]) == (2, 6)
    first = training[2].data
    assert first == {"batch": 1, "step": 1, "epoch": 1, "loss": 1.0,
                     "metrics": {"learning_rate": 0.5, "tokens": 7}}
    assert training[5].data["metrics"] == {"val_loss": 0.25, "val_accuracy": 0.75}
    assert [(e.data["epoch"], e.data["batch"], e.data["step"]) for e in training
            if e.name == ev.TRAINING_BATCH_COMPLETED] == [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 4), (2, 2, 5), (2, 3,
                                                                                                                  6)]
    assert training[-1].data["final_metrics"]["val_accuracy"] == 0.75
    assert json.loads((run.dir / "session.json").read_text())["state"] == "completed"
    rows = (run.dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 + 2  # header, a row per step and per epoch (the metrics_csv plugin)
    state = RunState()
    state.apply_all(events)
    assert (state.training.status, state.training.step, state.training.epochs_done) == ("completed", 6, 2)


def test_a_step_without_a_loss_is_an_evaluation(tmp_path: Path):
    run = kbert_tui.init("x", dir=tmp_path)
    run.log({"accuracy": 0.5})
    run.log({"accuracy": 0.6})
    run.finish()
    evaluations = [e.data for e in read_events(run.events_path) if e.name == ev.TRAINING_EVALUATION_COMPLETED]
    assert evaluations == [{"epoch": 1, "step": 1, "metrics": {"accuracy": 0.5}},
                           {"epoch": 1, "step": 2, "metrics": {"accuracy": 0.6}}]


@pytest.mark.parametrize(("metrics", "kwargs", "says"), [
    ({"loss": "0.5"}, {}, "'loss' is str '0.5', not a number"),
    ({"loss": None}, {}, "'loss' is NoneType"),
    ({"ok": 1.0, "flag": True}, {}, "'flag' is bool"),
    ({"weights": np.zeros(3)}, {}, "'weights' is ndarray of shape (3,), not a number"),
    ({"weights": mx.zeros((2, 2))}, {}, "'weights' is array of shape (2, 2)"),
    ({"step": 3}, {}, "'step' is reserved (pass it as run.log(..., step=N))"),
    ({"epoch": 1}, {}, "'epoch' is reserved"),
    ({"loss": 1.0}, {"step": -1}, "step=-1 is negative"),
    ({"loss": 1.0}, {"step": 1.5}, "step=1.5 is not a whole number"),
    ({"": 1.0}, {}, "metric names are non-empty strings"),
])
def test_bad_input_to_log_is_one_clear_exception_naming_the_key(tmp_path: Path, metrics, kwargs, says):
    run = kbert_tui.init("bad", dir=tmp_path)
    try:
        with pytest.raises(LogError) as raised:
            run.log(metrics, **kwargs)
        assert says in str(raised.value)
        run.log({"loss": 1.0}, step=1)  # the run goes on
    finally:
        run.finish()
    assert names(run.events_path).count(ev.TRAINING_BATCH_COMPLETED) == 1


def test_log_after_finish_names_the_keys(tmp_path: Path):
    run = kbert_tui.init("over", dir=tmp_path)
    run.finish()
    run.finish()  # idempotent
    with pytest.raises(LogError, match=r"run.log\('loss', 'acc'\) after run.finish\(\)"):
        run.log({"loss": 1.0, "acc": 0.5})


def test_an_exception_in_the_with_block_is_training_failed_and_goes_on_up(tmp_path: Path):
    with pytest.raises(ZeroDivisionError):
        with kbert_tui.init("boom", dir=tmp_path) as run:
            run.log({"loss": 1.0})
            1 / 0  # noqa: B018 -- the error the run must record
    failed = [e.data for e in read_events(run.events_path) if e.name == ev.TRAINING_FAILED]
    assert len(failed) == 1 and failed[0]["error_type"] == "ZeroDivisionError" and failed[0]["step"] == 1
    assert "1 / 0" in failed[0]["traceback"]
    assert json.loads((run.dir / "session.json").read_text())["state"] == "failed"


def test_pause_stop_and_checkpoint_from_an_attached_monitor_reach_the_script(tmp_path: Path):
    run = kbert_tui.init("steered", dir=tmp_path)
    saved: list[int] = []

    @run.on_checkpoint
    def save(step: int) -> str:
        saved.append(step)
        path = tmp_path / f"ckpt-{step}.npz"
        path.write_bytes(b"x" * 1000)
        return str(path)

    monitor = AttachedRun(resolve_run(run.dir))
    run.log({"loss": 1.0}, step=1)
    monitor.send_control(ev.CONTROL_PAUSE_REQUESTED, {})
    wait_until(lambda: run.control.paused)
    logged = threading.Event()
    worker = threading.Thread(target=lambda: (run.log({"loss": 0.5}, step=2), logged.set()))
    worker.start()
    time.sleep(0.3)
    assert not logged.is_set()  # log() waits while the run is paused
    monitor.send_control(ev.CONTROL_CHECKPOINT_REQUESTED, {})
    wait_until(lambda: saved == [1])  # served while paused
    monitor.send_control(ev.CONTROL_RESUME_REQUESTED, {})
    assert logged.wait(10)
    worker.join()
    assert not run.should_stop
    monitor.send_control(ev.CONTROL_STOP_REQUESTED, {"reason": "enough"})
    wait_until(lambda: run.should_stop)
    run.finish()
    monitor.close()
    events = list(read_events(run.events_path))
    order = [e.name for e in events if e.category in ("training", "model")]
    assert order == [ev.TRAINING_STARTED, ev.TRAINING_EPOCH_STARTED, ev.TRAINING_BATCH_COMPLETED, ev.TRAINING_PAUSED,
                     ev.MODEL_CHECKPOINT_SAVED, ev.TRAINING_RESUMED, ev.TRAINING_BATCH_COMPLETED,
                     ev.MODEL_CHECKPOINT_SAVED, ev.TRAINING_STOPPED]
    stopped = next(e.data for e in events if e.name == ev.TRAINING_STOPPED)
    assert stopped["reason"] == "enough" and stopped["step"] == 2 and stopped["requested_by"].startswith("attach ")
    assert stopped["checkpoint_path"] == str(tmp_path / "ckpt-2.npz") and saved == [1, 2]
    requested = next(e.data for e in events if e.name == ev.MODEL_CHECKPOINT_SAVED)
    assert requested["kind"] == "requested" and requested["size_mb"] == 0.001
    assert json.loads((run.dir / "session.json").read_text())["state"] == "stopped"


def test_a_checkpoint_request_without_a_function_is_rejected_in_the_log(tmp_path: Path):
    run = kbert_tui.init("nockpt", dir=tmp_path)
    AttachedRun(resolve_run(run.dir)).send_control(ev.CONTROL_CHECKPOINT_REQUESTED, {})
    wait_until(lambda: bool(run.control._checkpoints))
    run.log({"loss": 1.0})
    run.finish()
    rejected = [e.data for e in read_events(run.events_path) if e.name == ev.CONTROL_REQUEST_REJECTED]
    assert len(rejected) == 1 and "run.on_checkpoint" in rejected[0]["reason"]


def test_log_never_raises_when_the_disk_is_full(tmp_path: Path):
    run = kbert_tui.init("full", dir=tmp_path)
    store = run._sink.session.bus._store
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, store._fd)  # every write of the log now fails with ENOSPC
    os.close(full)
    for step in range(1, 50):
        run.log({"loss": 1.0 / step}, step=step)
    wait_until(lambda: store.failing)
    assert ev.BUS_PERSISTENCE_FAILED in [e.name for e in run._sink.session.bus.history]
    run.finish()  # the log's loss is reported by the bus (bus.persistence_failed), not raised into the script


def test_log_never_raises_when_the_runs_event_loop_is_gone(tmp_path: Path):
    run = kbert_tui.init("gone", dir=tmp_path)
    run.log({"loss": 1.0}, step=1)
    loop = run._sink._loop
    loop.call_soon_threadsafe(loop.stop)  # the run's event loop dies under the script
    wait_until(lambda: run.should_stop)  # closing, the session asks the script to stop
    for step in range(2, 12):
        run.log({"loss": 0.1}, step=step)  # no exception
    run.finish()  # nor here
    assert run.dropped == 10 + 1  # the ten steps and training.stopped, counted
    assert [e.data["step"] for e in read_events(run.events_path) if e.name == ev.TRAINING_BATCH_COMPLETED] == [1]


def test_a_script_run_replays_and_compares_with_a_built_in_run(tmp_path: Path, capsys):
    run = kbert_tui.init("script", config={"lr": 0.1}, dir=tmp_path)
    for step in range(1, 11):
        run.log({"loss": 1.0 / step}, step=step)
        if step % 5 == 0:
            run.log({"val_loss": 1.0 / step, "val_accuracy": step / 10}, epoch=step // 5)
    run.finish()
    built_in = tmp_path / "built-in.jsonl"
    store = JsonlStore(built_in)
    for event in simulate_run(epochs=2, steps_per_epoch=5):
        store.append(event)
    store.close()
    records = [load_run(resolve_run(run.dir).events_path), load_run(built_in)]
    label_runs(records)
    table = render_table(compare_table(records), "csv")
    assert "val_accuracy" in table and "1.0" in table
    from kbert_tui.cli import main

    assert main(["replay", str(run.events_path)]) == 0
    assert "completed, epoch 2/" in capsys.readouterr().out


@pytest.mark.parametrize(("ending", "state", "final"), [
    ("pass", "completed", ev.TRAINING_COMPLETED),
    ("raise RuntimeError('diverged')", "failed", ev.TRAINING_FAILED),
])
def test_a_script_that_ends_without_finish_still_ends_its_run(tmp_path: Path, ending, state, final):
    import subprocess
    import sys

    script = (f"import kbert_tui\nrun = kbert_tui.init('no-finish', dir={str(tmp_path)!r})\n"
              f"run.log({{'loss': 1.0}})\n{ending}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBERT_TUI_RUN")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == (0 if state == "completed" else 1)
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "session.json").read_text())["state"] == state
    events = list(read_events(folder / "events.jsonl"))
    last = [e for e in events if e.category == "training"][-1]
    assert last.name == final
    if state == "failed":
        assert last.data["error"] == "diverged" and "RuntimeError: diverged" in last.data["traceback"]


def test_rules_from_a_settings_file_act_on_a_script_run(tmp_path: Path):
    settings = tmp_path / "watch.toml"
    settings.write_text('[[rules]]\nname = "good enough"\nwhen = "training.batch_completed loss<0.2"\n'
                        'action = "stop"\n')
    run = kbert_tui.init("ruled", dir=tmp_path / "runs", settings=settings)
    step = 0
    while not run.should_stop and step < 1000:
        step += 1
        run.log({"loss": 1.0 / step}, step=step)
        time.sleep(0.002)
    run.finish()
    assert 5 <= step < 1000  # loss < 0.2 from step 6; the rule acts on the event loop, a few steps later
    events = list(read_events(run.events_path))
    fired = next(e.data for e in events if e.name == ev.RULE_FIRED)
    assert fired["rule"] == "good enough" and fired["action"] == "stop"
    assert next(e.data for e in events if e.name == ev.TRAINING_STOPPED)["requested_by"] == "rule:good enough"
