"""The training engine on a tiny model: event sequence and payloads, checkpoints, resume, NaN, stop, pause."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from kbert_tui.events.store import read_events
from kbert_tui.session import RunSession
from kbert_tui.training import Trainer
from kbert_tui.training.model import BertClassifier
from kbert_tui.training.testing import tiny_config


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


def run_trainer(config, bus, run_id="run-1"):
    trainer = Trainer(config, bus, run_id=run_id, output_dir=config.run.output_dir)
    return trainer, trainer.run()


def test_tiny_run_event_sequence_and_payloads(tmp_path, recording_bus):
    config = tiny_config(tmp_path)
    trainer, outcome = run_trainer(config, recording_bus)
    assert outcome == "completed", trainer.failure
    bus = recording_bus
    bus.assert_order(
        "data.validation_started", "data.validation_completed", "data.cache_miss",
        "data.preprocessing_started", "data.preprocessing_completed", "training.started",
        "training.epoch_started", "data.batch_loaded", "model.forward_pass", "model.backward_pass",
        "training.batch_completed", "training.evaluation_completed", "training.epoch_completed",
        "training.new_best_model", "training.epoch_started", "training.epoch_completed",
        "model.checkpoint_saved", "training.completed",
    )
    assert {e.correlation_id for e in bus.events} == {"run-1"}
    assert {e.source for e in bus.events} == {"trainer", "data", "model"}

    (started,) = bus.assert_emitted("training.started", run_id="run-1", run_name="tiny", model_type="BertClassifier")
    assert {"config", "device", "num_parameters", "total_epochs", "steps_per_epoch", "total_steps",
            "batch_size", "blas"} <= started.data.keys()
    assert started.data["steps_per_epoch"] == 6 and started.data["total_steps"] == 12
    assert started.data["config"]["model"]["hidden_size"] == 16

    batches = bus.emitted("training.batch_completed")
    assert [b.data["step"] for b in batches] == list(range(1, 13))
    assert {"learning_rate", "grad_norm", "samples_per_sec", "step_time_ms",
            "data_time_ms"} <= batches[0].data["metrics"].keys()
    assert {"batch", "epoch", "loss"} <= batches[0].data.keys()
    epoch = bus.emitted("training.epoch_completed")[-1].data
    assert {"train_loss", "val_loss", "val_accuracy", "val_f1"} <= epoch["metrics"].keys() and epoch["duration"] > 0
    assert bus.emitted("training.evaluation_completed")[0].data["step"] == 4
    backward = bus.emitted("model.backward_pass")[0].data
    assert {"global_norm", "layers"} <= backward["gradients"].keys()
    assert {"embeddings", "layers.0", "pooler", "classifier"} == backward["gradients"]["layers"].keys()
    assert bus.emitted("model.forward_pass")[0].data["output_shape"] == [16, 2]
    batch_loaded = bus.emitted("data.batch_loaded")[0].data
    assert {"batch_size", "load_time", "sequence_length"} <= batch_loaded.keys()

    completed = bus.emitted("training.completed")[0].data
    assert completed["stopped_early"] is False and completed["total_duration"] > 0
    assert {"val_loss", "val_accuracy", "val_f1"} <= completed["final_metrics"].keys()
    predictions = Path(completed["predictions_path"])
    rows = list(csv.reader(predictions.open()))
    assert rows[0] == ["id", "label"] and len(rows) == 17 and {r[1] for r in rows[1:]} <= {"negative", "positive"}

    saved = bus.emitted("model.checkpoint_saved")[-1].data
    folder = Path(saved["path"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "optimizer.safetensors", "state.json", "tokenizer.json"]
    assert saved["epoch"] == 2 and {"val_loss"} <= saved["metrics"].keys()


def test_same_seed_same_run_and_cache_hit(tmp_path, recording_bus):
    config = tiny_config(tmp_path)
    run_trainer(config, recording_bus)
    first = [e.data["loss"] for e in recording_bus.emitted("training.batch_completed")]
    recording_bus.clear()
    run_trainer(config, recording_bus)
    recording_bus.assert_emitted("data.cache_hit", count=1)
    recording_bus.assert_not_emitted("data.cache_miss")
    assert [e.data["loss"] for e in recording_bus.emitted("training.batch_completed")] == first


def test_resume_from_checkpoint(tmp_path, recording_bus):
    first = tiny_config(tmp_path, training={"epochs": 1})
    run_trainer(first, recording_bus)
    checkpoint = Path(recording_bus.emitted("model.checkpoint_saved")[-1].data["path"])
    recording_bus.clear()
    resumed = tiny_config(tmp_path, training={"epochs": 2, "resume_from": str(checkpoint)},
                          run={"output_dir": str(tmp_path / "out2")})
    trainer, outcome = run_trainer(resumed, recording_bus, run_id="run-2")
    assert outcome == "completed", trainer.failure
    (loaded,) = recording_bus.assert_emitted("model.checkpoint_loaded", path=str(checkpoint), restored_epoch=1)
    assert loaded.source == "model"
    recording_bus.assert_emitted("training.epoch_started", count=1, epoch=2)
    steps = [e.data["step"] for e in recording_bus.emitted("training.batch_completed")]
    assert steps == list(range(7, 13))
    assert recording_bus.names.index("training.started") < recording_bus.names.index("model.checkpoint_loaded")


def test_resume_rejects_another_model_shape(tmp_path, recording_bus):
    run_trainer(tiny_config(tmp_path, training={"epochs": 1}), recording_bus)
    checkpoint = recording_bus.emitted("model.checkpoint_saved")[-1].data["path"]
    recording_bus.clear()
    other = tiny_config(tmp_path, model={"hidden_size": 32}, training={"resume_from": checkpoint})
    _, outcome = run_trainer(other, recording_bus)
    assert outcome == "failed"
    (failed,) = recording_bus.assert_emitted("training.failed")
    assert "hidden_size 16 (checkpoint) vs 32 (config)" in failed.data["error"]
    assert failed.data["bad_input"] is True  # bad input: `kbert-tui run` exits 2


def test_a_checkpoint_of_another_shape_exits_2(tmp_path, capsys):
    from test_cli import write_toml

    from kbert_tui.cli import main
    from kbert_tui.training.testing import tiny_document

    first = write_toml(tmp_path / "first.toml", tiny_document(tmp_path, training={"epochs": 1}))
    assert main(["run", str(first), "--headless", "--output-dir", str(tmp_path / "a")]) == 0
    checkpoint = tmp_path / "a" / "checkpoints" / "last"
    other = write_toml(tmp_path / "other.toml", tiny_document(
        tmp_path, model={"hidden_size": 32}, training={"epochs": 1, "resume_from": str(checkpoint)}))
    assert main(["run", str(other), "--headless", "--output-dir", str(tmp_path / "b")]) == 2
    assert "another shape" in capsys.readouterr().err


def test_nan_loss_fails_naming_the_step(tmp_path, recording_bus, monkeypatch):
    original = BertClassifier.__call__
    calls = {"n": 0}

    def poisoned(self, ids, mask):
        out = original(self, ids, mask)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 3:
                return out * float("nan")
        return out

    monkeypatch.setattr(BertClassifier, "__call__", poisoned)
    trainer, outcome = run_trainer(tiny_config(tmp_path), recording_bus)
    assert outcome == "failed"
    (failed,) = recording_bus.assert_emitted("training.failed", step=3, epoch=1, error_type="NonFiniteLoss")
    assert "at step 3" in failed.data["error"] and "nan" in failed.data["error"]
    assert "Traceback" in failed.data["traceback"]
    assert len(recording_bus.emitted("training.batch_completed")) == 2
    recording_bus.assert_not_emitted("training.completed")


def test_data_error_ends_in_training_failed(tmp_path, recording_bus):
    config = tiny_config(tmp_path)
    config.data.train.write_text("")  # emptied after the config was checked
    _, outcome = run_trainer(config, recording_bus)
    assert outcome == "failed"
    recording_bus.assert_emitted("training.failed", error_type="DataError")


async def test_session_stop_request_checkpoints_and_resumes(tmp_path):
    config = tiny_config(tmp_path, training={"epochs": 50})
    session = RunSession(config, output_dir=tmp_path / "session")
    await session.start()
    seen = []

    def on_batch(event):
        seen.append(event.data["step"])
        if event.data["step"] == 3:
            session.request_stop("test says stop", requested_by="test")

    await session.bus.subscribe("training.batch_completed", on_batch)
    outcome = await asyncio.wait_for(session.wait(), 60)
    await session.close()
    assert outcome == "stopped"
    # plugin lifecycle and the bus's own reports (a loaded machine may stall the loop) come after
    events = [e for e in read_events(session.events_path) if not e.name.startswith(("plugin.", "bus."))]
    names = [e.name for e in events]
    assert "control.stop_requested" in names and names[-1] == "training.stopped"
    stopped = events[-1]
    assert stopped.correlation_id == session.run_id
    assert stopped.data["reason"] == "test says stop" and stopped.data["requested_by"] == "test"
    assert 3 <= stopped.data["step"] <= 5  # honoured between steps, right after the request arrived
    checkpoint = Path(stopped.data["checkpoint_path"])
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == stopped.data["step"] and state["batches_done"] == stopped.data["step"]

    resumed = tiny_config(tmp_path, training={"epochs": 1, "resume_from": str(checkpoint)})
    again = RunSession(resumed, output_dir=tmp_path / "again")
    await again.start()
    assert await asyncio.wait_for(again.wait(), 60) == "completed"
    await again.close()
    names = [e.name for e in read_events(again.events_path) if not e.name.startswith("plugin.")]
    assert "model.checkpoint_loaded" in names and names[-1] == "training.completed"


async def test_session_pause_resume_and_close_while_running(tmp_path):
    session = RunSession(tiny_config(tmp_path, training={"epochs": 50}), output_dir=tmp_path / "s")
    await session.start()
    paused = asyncio.Event()
    await session.bus.subscribe("training.paused", lambda e: paused.set())
    first = asyncio.Event()
    await session.bus.subscribe("training.batch_completed", lambda e: first.set())
    await asyncio.wait_for(first.wait(), 60)
    session.request_pause()
    await asyncio.wait_for(paused.wait(), 30)
    await asyncio.sleep(0.2)
    assert session.running
    resumed = asyncio.Event()
    await session.bus.subscribe("training.resumed", lambda e: resumed.set())
    session.request_resume()
    await asyncio.wait_for(resumed.wait(), 30)
    await session.close()  # never waits for the 50 epochs: stops, checkpoints, flushes
    assert not session.running and session.outcome == "stopped"
    names = [e.name for e in read_events(session.events_path)]
    assert names.index("training.paused") < names.index("training.resumed") < names.index("training.stopped")


def test_an_epochs_duration_leaves_out_the_time_it_was_paused(tmp_path, recording_bus):
    import threading

    config = tiny_config(tmp_path, training={"epochs": 1})
    trainer = Trainer(config, recording_bus, run_id="run-1", output_dir=config.run.output_dir)
    trainer.control.request_pause("test")  # taken at the first step, resumed 1.5 s after that
    recording_bus.subscribe_sync("training.paused", lambda event: threading.Timer(
        1.5, trainer.control.request_resume, args=("test",)).start())
    assert trainer.run() == "completed", trainer.failure
    (paused,), (resumed,) = recording_bus.emitted("training.paused"), recording_bus.emitted("training.resumed")
    started = recording_bus.emitted("training.epoch_started")[0]
    done = recording_bus.emitted("training.epoch_completed")[0]
    gap = (resumed.timestamp - paused.timestamp).total_seconds()
    wall = (done.timestamp - started.timestamp).total_seconds()
    assert gap >= 1.4 and 0 < done.data["duration"] <= wall - gap + 0.1


def test_early_stopping_from_config(tmp_path, recording_bus):
    config = tiny_config(tmp_path, training={"epochs": 5, "early_stopping": {
        "enabled": True, "metric": "val_loss", "patience": 1, "min_delta": 100.0}})
    _, outcome = run_trainer(config, recording_bus)
    assert outcome == "completed"
    (early,) = recording_bus.assert_emitted("training.early_stopped", epoch=2, metric="val_loss", best_epoch=1)
    assert "did not improve" in early.data["reason"]
    recording_bus.assert_emitted("training.epoch_completed", count=2)
    recording_bus.assert_emitted("training.completed", stopped_early=True, epochs_completed=2)
    recording_bus.assert_emitted("training.new_best_model", count=1, epoch=1, metric="val_loss", previous=None)


def test_stop_request_for_early_stopping_completes_normally(tmp_path, recording_bus):
    trainer = Trainer(tiny_config(tmp_path, training={"epochs": 5}), recording_bus, run_id="r",
                      output_dir=tmp_path / "o")
    recording_bus.subscribe_sync(
        "training.batch_completed",
        lambda e: e.data["step"] == 2 and trainer.control.request_stop("early_stopping", "plugin:early_stopping"))
    assert trainer.run() == "completed"
    recording_bus.assert_emitted("training.completed", stopped_early=True)
    recording_bus.assert_not_emitted("training.stopped")
    assert recording_bus.emitted("training.batch_completed")[-1].data["step"] == 2


def test_every_epoch_policy_keeps_the_newest(tmp_path, recording_bus):
    config = tiny_config(tmp_path, training={"epochs": 3, "checkpoint": {"policy": "every_epoch", "keep": 2}})
    run_trainer(config, recording_bus)
    recording_bus.assert_emitted("model.checkpoint_saved", count=3, kind="epoch")
    folders = sorted(p.name for p in (config.run.output_dir / "checkpoints").iterdir())
    assert folders == ["epoch-002", "epoch-003"]


def test_slow_batches_raise_a_performance_warning(tmp_path, recording_bus):
    config = tiny_config(tmp_path, data={"load_time_warning_s": 1e-9}, training={"epochs": 1})
    run_trainer(config, recording_bus)
    (warning, *_) = recording_bus.assert_emitted("data.performance_warning", component="data_loader",
                                                 metric="load_time", threshold=1e-9)
    assert warning.data["value"] > 1e-9 and warning.source == "data"


def test_a_checkpoint_that_cannot_be_written_leaves_no_tmp_folder(tmp_path, monkeypatch):
    import errno

    import mlx.nn as nn

    from kbert_tui.training import checkpoint as checkpoint_module

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.mx, "save_safetensors", disk_full)
    folder = tmp_path / "checkpoints" / "step-1"
    with pytest.raises(OSError):
        checkpoint_module.save_checkpoint(folder, nn.Linear(2, 2), None, None, {}, {})
    assert not folder.exists() and not folder.with_name("step-1.tmp").exists()


def test_device_auto_and_cpu_train_on_the_cpu_here_and_gpu_without_one_is_bad_input(tmp_path, recording_bus):
    import mlx.core as mx

    from kbert_tui.training.steps import select_device

    assert select_device("cpu") == "cpu" and mx.default_device() == mx.cpu
    assert select_device("auto") == ("gpu" if mx.is_available(mx.gpu) else "cpu")
    if mx.is_available(mx.gpu):
        pytest.skip("this machine has a GPU backend: the no-GPU error can't be shown")
    _, outcome = run_trainer(tiny_config(tmp_path, training={"epochs": 1, "device": "gpu"}), recording_bus)
    assert outcome == "failed"
    (failed,) = recording_bus.assert_emitted("training.failed")
    assert failed.data["bad_input"] is True and "no GPU backend" in failed.data["error"]
    assert mx.default_device() == mx.cpu
