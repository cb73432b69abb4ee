"""The built-in plugins, each driven through a PluginManager on a recording bus."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from kbert_tui.plugins import PluginManager

RUN = "run-7"


async def _run(bus, plugins: dict, events: list[tuple[str, dict]], *, output_dir=None, settle=0.0):
    manager = PluginManager(bus, plugins, output_dir=output_dir, run_id=RUN)
    await manager.start()
    for name, data in events:
        await bus.emit(name, data, source="trainer", correlation_id=RUN)
    await bus.flush()
    if settle:
        await asyncio.sleep(settle)
        await bus.flush()
    return manager


def epochs(metric: str, values: list[float]) -> list[tuple[str, dict]]:
    return [("training.epoch_completed", {"epoch": i, "metrics": {metric: v, "train_loss": 1.0}, "duration": 1.0})
            for i, v in enumerate(values, start=1)]


async def test_early_stopping_after_patience_epochs_without_improvement(recording_bus):
    manager = await _run(recording_bus, {"es": {"plugin": "early_stopping", "patience": 2, "min_delta": 0.01}},
                         [("training.started", {"run_id": RUN})] + epochs("val_loss", [0.9, 0.7, 0.695, 0.71, 0.5]))
    await manager.close()
    stopped = recording_bus.assert_emitted("training.early_stopped", count=1)[0]
    # 0.695 is not better than 0.7 by more than min_delta, 0.71 is worse: stop at epoch 4
    assert stopped.data == {"epoch": 4, "metric": "val_loss", "value": 0.71, "best_value": 0.7, "best_epoch": 2,
                            "patience": 2, "min_delta": 0.01,
                            "reason": "val_loss did not improve by more than 0.01 for 2 epoch(s)"}
    assert stopped.source == "plugin:es" and stopped.correlation_id == RUN
    req = recording_bus.assert_emitted("control.stop_requested", count=1)[0]
    assert req.data == {"reason": "early_stopping", "requested_by": "plugin:es"}
    recording_bus.assert_order("training.early_stopped", "control.stop_requested")


async def test_early_stopping_max_mode_keeps_going_while_improving(recording_bus):
    manager = await _run(recording_bus, {"es": {"plugin": "early_stopping", "metric": "val_f1", "patience": 1}},
                         epochs("val_f1", [0.5, 0.6, 0.7, 0.8]))
    await manager.close()
    recording_bus.assert_not_emitted("training.early_stopped")
    recording_bus.assert_not_emitted("control.stop_requested")


async def test_early_stopping_missing_metric_and_bad_config(recording_bus):
    manager = await _run(recording_bus, {
        "es": {"plugin": "early_stopping", "metric": "val_auc"},
        "bad": {"plugin": "early_stopping", "mode": "sideways"},
    }, epochs("val_loss", [0.5, 0.6, 0.7, 0.8]))
    await manager.close()
    missing = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="es")[0].data
    assert "'val_auc' is not in the epoch metrics (train_loss, val_loss)" in missing["error"]
    assert missing["fatal"] is False
    bad = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="bad")[0].data
    assert bad["stage"] == "initialize" and "sideways" in bad["error"]
    recording_bus.assert_not_emitted("training.early_stopped")


async def test_best_model_announces_each_improvement_with_step(recording_bus):
    events = [("training.started", {"run_id": RUN}),
              ("training.batch_completed", {"batch": 10, "step": 10, "epoch": 1, "loss": 1.0, "metrics": {}}),
              ("training.evaluation_completed", {"epoch": 1, "step": 10, "metrics": {"val_loss": 0.8}}),
              ("training.batch_completed", {"batch": 20, "step": 20, "epoch": 1, "loss": 1.0, "metrics": {}})]
    events += epochs("val_loss", [0.6, 0.65, 0.4])
    manager = await _run(recording_bus, {"best": {"plugin": "best_model"}}, events)
    await manager.close()
    best = [e.data for e in recording_bus.assert_emitted("training.new_best_model", count=3)]
    assert best[0] == {"epoch": 1, "step": 10, "metric": "val_loss", "value": 0.8, "previous": None, "mode": "min"}
    assert best[1] == {"epoch": 1, "step": 20, "metric": "val_loss", "value": 0.6, "previous": 0.8, "mode": "min"}
    assert best[2]["value"] == 0.4 and best[2]["previous"] == 0.6 and best[2]["epoch"] == 3


async def test_error_threshold_once_per_crossing(recording_bus):
    manager = await _run(recording_bus, {"et": {"plugin": "error_threshold", "threshold": 3, "window_s": 0}},
                         [("data.error", {"component": "tokenizer"})] * 2)
    for name in ("training.failed", "data.error", "model.error", "plugin.error"):
        await recording_bus.emit(name, {"error": "x"}, source="trainer", correlation_id=RUN)
        await recording_bus.flush()
    await manager.close()
    exceeded = recording_bus.assert_emitted("system.error_threshold_exceeded", count=1)[0]
    assert exceeded.data == {"error_count": 3, "threshold": 3, "window_s": 0.0, "component": "trainer",
                             "last_error": "training.failed"}
    assert exceeded.correlation_id == RUN


async def test_error_threshold_counts_an_event_matching_two_patterns_once(recording_bus):
    config = {"plugin": "error_threshold", "threshold": 2, "patterns": ["*.error", "data.*"]}
    manager = await _run(recording_bus, {"et": config}, [("data.error", {})])
    await manager.close()
    recording_bus.assert_not_emitted("system.error_threshold_exceeded")


async def test_metrics_aggregator_summarises_each_interval(recording_bus):
    events = [("training.batch_completed", {"step": i, "loss": 1.0 / i, "metrics": {"samples_per_sec": 100.0 * i}})
              for i in (1, 2)]
    events += [("system.cpu_usage", {"percent": 40.0, "per_cpu": [40.0]}),
               ("system.memory_usage", {"percentage": 12.5})]
    manager = await _run(recording_bus, {"agg": {"plugin": "metrics_aggregator", "interval_s": 0.05}}, events,
                         settle=0.12)
    await manager.close()
    first = recording_bus.assert_emitted("metrics.aggregated")[0]  # later, idle intervals stay quiet
    assert len(recording_bus.emitted("metrics.aggregated")) == 1
    data = first.data
    assert data["training_events_count"] == 2 and data["system_events_count"] == 2
    assert data["loss_mean"] == 0.75 and data["samples_per_sec_mean"] == 150.0
    assert data["cpu_percent_mean"] == 40.0 and data["memory_percent_mean"] == 12.5
    assert data["events_per_second"] > 0 and data["window_s"] >= 0.05
    assert first.correlation_id == RUN


async def test_metrics_aggregator_rejects_a_zero_interval(recording_bus):
    manager = await _run(recording_bus, {"agg": {"plugin": "metrics_aggregator", "interval_s": 0}}, [])
    await manager.close()
    assert recording_bus.assert_emitted("plugin.error", count=1)[0].data["stage"] == "initialize"


async def test_metrics_csv_writes_batch_eval_and_epoch_rows(recording_bus, tmp_path):
    events = [
        ("training.batch_completed", {"batch": 1, "step": 1, "epoch": 1, "loss": 0.9,
                                      "metrics": {"learning_rate": 0.001, "samples_per_sec": 50.0,
                                                  "step_time_ms": 40.0, "data_time_ms": 2.0, "grad_norm": 1.5}}),
        ("training.evaluation_completed", {"epoch": 1, "step": 1, "metrics": {"val_loss": 0.8, "val_f1": 0.4}}),
        ("training.epoch_completed", {"epoch": 1, "duration": 3.5,
                                      "metrics": {"train_loss": 0.85, "val_loss": 0.8, "val_auc": 0.7}}),
    ]
    manager = await _run(recording_bus, {"csv": {"plugin": "metrics_csv"}}, events, output_dir=tmp_path)
    await manager.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["kind"] for r in rows] == ["batch", "eval", "epoch"]
    assert rows[0]["loss"] == "0.9" and rows[0]["grad_norm"] == "1.5" and rows[0]["run_id"] == RUN
    assert rows[1]["val_f1"] == "0.4" and rows[1]["loss"] == ""
    assert rows[2]["duration"] == "3.5" and json.loads(rows[2]["extra"]) == {"val_auc": 0.7}


@pytest.mark.parametrize("plugin", ["early_stopping", "best_model", "error_threshold", "metrics_aggregator",
                                    "metrics_csv"])
async def test_every_builtin_starts_and_closes_cleanly(recording_bus, tmp_path, plugin):
    before = set(asyncio.all_tasks())
    manager = await _run(recording_bus, {plugin: {"plugin": plugin}}, [], output_dir=tmp_path)
    assert manager.states == {plugin: "active"}
    await manager.close()
    await recording_bus.flush()
    assert manager.states == {plugin: "deactivated"}
    recording_bus.assert_not_emitted("plugin.error")
    left = [t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task() and not t.done()]
    assert left == []


async def test_error_threshold_window_forgets_old_errors_and_rearms(recording_bus):
    manager = await _run(recording_bus, {"et": {"plugin": "error_threshold", "threshold": 2, "window_s": 0.05}},
                         [("data.error", {})] * 3)
    recording_bus.assert_emitted("system.error_threshold_exceeded", count=1)
    await asyncio.sleep(0.1)
    await recording_bus.emit("data.error", {}, correlation_id=RUN)  # the old ones fell out of the window
    await recording_bus.flush()
    recording_bus.assert_emitted("system.error_threshold_exceeded", count=1)
    await recording_bus.emit("data.error", {}, correlation_id=RUN)
    await recording_bus.flush()
    recording_bus.assert_emitted("system.error_threshold_exceeded", count=2)
    await manager.close()


async def test_metrics_csv_appends_when_a_run_resumes_and_keeps_a_foreign_file(recording_bus, tmp_path):
    batch = ("training.batch_completed", {"batch": 1, "step": 1, "epoch": 1, "loss": 0.9})
    for _ in range(2):  # the crashed run, then its resumption in the same folder
        manager = await _run(recording_bus, {"csv": {"plugin": "metrics_csv"}}, [batch, batch], output_dir=tmp_path)
        await manager.close()
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    (tmp_path / "metrics.csv").write_text("a,b\n1,2\n")  # written by something else
    manager = await _run(recording_bus, {"csv": {"plugin": "metrics_csv"}}, [batch], output_dir=tmp_path)
    await manager.close()
    assert (tmp_path / "metrics.1.csv").read_text() == "a,b\n1,2\n"
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_a_typo_in_a_plugins_option_is_a_config_error_before_anything_starts(tmp_path, capsys):
    from kbert_tui.cli import main

    config = tmp_path / "run.toml"
    config.write_text('[plugins.stop_early]\nplugin = "early_stopping"\npatiense = 2\n')
    assert main(["run", str(config), "--headless", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config.resolve()}: plugins.stop_early.patiense: unknown key (known keys here: " in err
    assert "patience" in err and "Traceback" not in err and not (tmp_path / "out").exists()
    config.write_text('[plugins.stop_early]\nplugin = "early_stopping"\npatience = 0\ntimeout_s = 2\n')
    assert main(["run", str(config), "--headless", "--output-dir", str(tmp_path / "out")]) == 2
    assert "plugins.stop_early.patience: expected an integer >= 1, got 0 (int)" in capsys.readouterr().err
