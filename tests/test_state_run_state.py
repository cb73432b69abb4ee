"""RunState reducers: training progress and status, system resources and warnings, plugins."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from kbert_tui.events import Event
from kbert_tui.state import RunState, Series, event_kind, printable, summarize
from simulate import simulate_run

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(name: str, data: dict, t: float = 0.0, source: str = "trainer") -> Event:
    return Event(name=name, data=data, timestamp=T0 + timedelta(seconds=t), source=source, correlation_id="r")


def test_a_completed_simulated_run():
    state = RunState()
    state.apply_all(simulate_run(epochs=3, steps_per_epoch=40))
    t = state.training
    assert t.status == "completed"
    assert (t.epochs_done, t.total_epochs, t.step, t.total_steps) == (3, 3, 120, 120)
    assert t.run_name == "demo" and t.run_id == "run-0001" and t.blas == "openblas"
    assert t.best_metric == "val_loss" and t.best_epoch == 3
    assert [row["epoch"] for row in t.epoch_metrics] == [1, 2, 3]
    assert t.loss_history.count == 120
    assert t.eta_seconds is None  # nothing left to wait for
    assert state.system.gpu_unavailable and state.system.cpu_percent is not None
    assert set(state.plugins.plugins) == {"early_stopping", "best_model", "metrics_aggregator"}
    assert all(p.state == "deactivated" for p in state.plugins.plugins.values())


def test_progress_eta_and_samples_per_second_from_event_time():
    state = RunState()
    state.apply(ev("training.started", {"run_id": "r", "total_epochs": 2, "steps_per_epoch": 10,
                                        "total_steps": 20, "blas": {"name": "openblas"}}))
    state.apply(ev("training.epoch_started", {"epoch": 1, "total_epochs": 2}))
    for step in range(1, 6):
        state.apply(ev("training.batch_completed", {"batch": step, "step": step, "epoch": 1, "loss": 1.0 / step,
                                                    "metrics": {"learning_rate": 0.1, "grad_norm": 2.0,
                                                                "samples_per_sec": 64.0}}, t=step * 0.5))
    t = state.training
    assert t.status == "running" and t.blas == "openblas"
    assert t.seconds_per_step == 0.5
    assert t.eta_seconds == 15 * 0.5
    assert t.epoch_eta_seconds == 5 * 0.5
    assert (t.loss, t.learning_rate, t.grad_norm, t.samples_per_sec) == (0.2, 0.1, 2.0, 64.0)


def test_status_transitions_pause_resume_stop():
    state = RunState()
    state.apply(ev("training.started", {"total_epochs": 1, "steps_per_epoch": 5}))
    state.apply(ev("control.pause_requested", {"requested_by": "tui"}, source="tui"))
    assert state.pending_control == "pause"
    state.apply(ev("training.paused", {"epoch": 1, "step": 2}))
    assert state.training.status == "paused" and state.pending_control is None
    state.apply(ev("training.resumed", {"epoch": 1, "step": 2}))
    assert state.training.status == "running"
    state.apply(ev("training.stopped", {"epoch": 1, "step": 3, "reason": "user", "checkpoint_path": "/c"}))
    assert state.training.status == "stopped" and state.training.checkpoint_path == "/c"
    assert not state.training.live


def test_failure_keeps_the_error_and_shows_it_literally():
    state = RunState()
    state.apply_all(simulate_run(epochs=2, steps_per_epoch=10, fail_at_step=7))
    t = state.training
    assert t.status == "failed"
    assert t.error == "loss became nan at step 7"
    assert "FloatingPointError" in (t.traceback or "")
    assert state.errors_seen == 1


def test_early_stop_completion():
    state = RunState()
    state.apply(ev("training.started", {"total_epochs": 5, "steps_per_epoch": 5}))
    state.apply(ev("training.epoch_completed", {"epoch": 2, "metrics": {"val_loss": 0.5}}))
    state.apply(ev("training.completed", {"final_metrics": {}, "total_duration": 3, "stopped_early": True}))
    assert state.training.status == "completed" and state.training.stopped_early
    assert state.training.epochs_done == 2


def test_system_histories_and_warnings_until_recovered():
    state = RunState()
    for i in range(200):
        state.apply(ev("system.cpu_usage", {"percent": float(i % 100)}, t=i, source="system"))
    s = state.system
    assert len(s.history["cpu"]) == 120  # bounded
    state.apply(ev("system.performance_warning", {"component": "memory", "metric": "memory_percent",
                                                  "value": 93.0, "threshold": 90}, t=300, source="system"))
    assert [n.component for n in s.active_notices()] == ["memory"]
    state.apply(ev("system.performance_recovered", {"component": "memory", "metric": "memory_percent",
                                                    "value": 80.0, "threshold": 90}, t=301, source="system"))
    assert s.active_notices() == []
    state.apply(ev("system.bottleneck_detected", {"component": "data", "description": "slow",
                                                  "suggestions": ["a", "b"]}, t=302, source="system"))
    assert s.active_notices()[0].suggestions == ("a", "b")
    state.apply(ev("system.cpu_usage", {"percent": 1.0}, t=302 + 61, source="system"))
    assert s.active_notices() == []  # a bottleneck notice fades after a minute of event time
    state.apply(ev("system.gpu_usage", {"device": 0, "utilization": 50.0, "memory_used": 1.0,
                                        "memory_total": 4.0, "temperature": 40}, source="system"))
    assert s.gpus["0"]["memory_percent"] == 25.0 and s.gpu_unavailable is None


def test_plugins_table_state_errors_and_messages():
    state = RunState()
    state.apply(ev("plugin.loaded", {"plugin_name": "p", "version": "1.2"}, source="plugin:p"))
    state.apply(ev("plugin.activated", {"plugin_name": "p"}, source="plugin:p"))
    state.apply(ev("plugin.error", {"plugin_name": "p", "error": "boom", "events_handled": 12}, source="plugin:p"))
    state.apply(ev("plugin.message", {"from": "p", "to": "q", "message": {"x": 1}}, source="plugin:p"))
    info = state.plugins.plugins["p"]
    assert (info.version, info.state, info.errors, info.events_handled) == ("1.2", "active", 1, 12)
    assert info.last_error == "boom"
    assert info.messages[-1].startswith("→ q")


def test_series_halves_itself_past_its_limit():
    series = Series(limit=8)
    for i in range(100):
        series.append(float(i))
    assert len(series.points) < 8 and series.stride >= 16
    assert series.count == 100 and series.last == 99.0
    values = series.values()
    assert values == sorted(values)


def test_summaries_and_kinds():
    batch = ev("training.batch_completed", {"epoch": 1, "step": 3, "loss": 0.5,
                                            "metrics": {"learning_rate": 1e-4, "grad_norm": 1.0}})
    assert summarize(batch) == "loss=0.5 step 3 epoch 1 lr=1.000e-04 gnorm=1"
    hostile = ev("x.y", {"msg": "[bold]hi\x1b[31m\nnext"})
    text = summarize(hostile)
    assert "\x1b" not in text and "\n" not in text and "[bold]" in text
    assert printable("a\x07b") == "a\u2407b"
    assert event_kind(ev("training.failed", {})) == "error"
    assert event_kind(ev("plugin.error", {})) == "error"
    assert event_kind(ev("system.performance_warning", {})) == "warning"
    assert event_kind(ev("data.validation_completed", {"passed": False})) == "error"
    assert event_kind(ev("training.completed", {})) == "success"
    assert event_kind(ev("training.batch_completed", {})) == "training"
    assert event_kind(ev("control.stop_requested", {})) == "control"
    assert summarize(ev("weird.shape", {"metrics": "not a dict"})) == "metrics=not a dict"


def test_every_summary_leads_with_its_key_numbers():
    """What a person scans for comes first, so a narrow log column still shows it."""
    lead = {
        "training.batch_completed": "loss=",
        "training.epoch_completed": "epoch 1 val_loss=",
        "training.evaluation_completed": "val_loss=",
        "training.completed": "val_loss=",
        "training.new_best_model": "val_loss=",
        "system.memory_usage": "mem ",
        "system.disk_usage": "free ",
        "system.mlx_memory": "mlx ",
        "model.backward_pass": "loss=",
    }
    seen = set()
    for event in simulate_run(epochs=1, steps_per_epoch=20, system_every=2, model_every=5):
        if event.name in lead:
            seen.add(event.name)
            assert summarize(event).startswith(lead[event.name]), (event.name, summarize(event))
    assert seen == set(lead)


def test_a_fatal_plugin_error_sets_the_plugin_aside_for_good():
    state = RunState()
    state.apply(ev("plugin.activated", {"plugin_name": "p", "version": "1"}, source="plugin:p"))
    state.apply(ev("plugin.error", {"plugin_name": "p", "error": "x", "fatal": True, "error_count": 5},
                   source="plugin:p"))
    state.apply(ev("plugin.state_changed", {"plugin_name": "p", "old_state": "active", "new_state": "failed"},
                   source="plugin:p"))
    state.apply(ev("plugin.deactivated", {"plugin_name": "p"}, source="plugin:p"))
    info = state.plugins.plugins["p"]
    assert info.state == "set aside" and info.errors == 5


def test_blas_threads_from_training_started_are_shown_with_the_library():
    state = RunState()
    state.apply(ev("training.started", {"run_id": "r", "blas": {"name": "openblas", "threads": 1, "source": "pip"}}))
    assert state.training.blas == "openblas, 1 thread"
    state.apply(ev("training.started", {"run_id": "r", "blas": {"name": "openblas", "threads": 3}}))
    assert state.training.blas == "openblas, 3 threads"
