"""A deterministic stream of realistic run events, for tests, benchmarks and demos of the monitor.

The payloads follow the team contract (training, data, model, system and plugin events), every event
of the run carries the run id as its correlation id, and ids and timestamps are fixed by the arguments,
so two calls with the same arguments yield identical events.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, UTC
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev

__all__ = ["simulate_run", "SIM_START"]

SIM_START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

_PLUGINS = (("early_stopping", "1.0.0"), ("best_model", "1.0.0"), ("metrics_aggregator", "0.3.1"))


class _Clock:
    def __init__(self, start: datetime, run_id: str) -> None:
        self.t = start
        self.n = 0
        self.run_id = run_id

    def event(self, name: str, data: dict[str, Any], source: str, *, dt: float = 0.001,
              corr: str | None | bool = True) -> Event:
        self.t += timedelta(seconds=dt)
        self.n += 1
        cid = self.run_id if corr is True else (None if corr is False else corr)
        return Event(name=name, data=data, timestamp=self.t, source=source, correlation_id=cid,
                     metadata={}, id=f"sim-{self.n:08d}")


def simulate_run(
    *,
    epochs: int = 3,
    steps_per_epoch: int = 40,
    run_id: str = "run-0001",
    run_name: str = "demo",
    start: datetime = SIM_START,
    step_seconds: float = 0.25,
    batch_size: int = 32,
    system_every: int = 4,
    model_every: int = 10,
    fail_at_step: int | None = None,
    stop_at_step: int | None = None,
    pause_at_step: int | None = None,
    hostile_text: bool = False,
    gpu: bool = False,
) -> Iterator[Event]:
    """Yield the events of one simulated training run, in order.

    `fail_at_step` ends the run with `training.failed`; `stop_at_step` with a user stop;
    `pause_at_step` pauses and resumes once; `hostile_text` adds markup and escape sequences to
    some strings (the monitor must show them literally).
    """
    c = _Clock(start, run_id)
    total = epochs * steps_per_epoch
    for name, version in _PLUGINS:
        src = f"plugin:{name}"
        yield c.event(ev.PLUGIN_LOADED, {"plugin_name": name, "version": version}, src)
        yield c.event(ev.PLUGIN_INITIALIZED, {"plugin_name": name, "config": {"enabled": True}}, src)
        yield c.event(ev.PLUGIN_ACTIVATED, {"plugin_name": name, "version": version,
                                           "capabilities": ["observe"]}, src)
        yield c.event(ev.PLUGIN_STATE_CHANGED, {"plugin_name": name, "old_state": "initialized",
                                               "new_state": "active"}, src)
    if gpu:
        gpu_info = {"device": 0, "name": "NVIDIA H200"}
    else:
        gpu_info = None
        yield c.event(ev.SYSTEM_GPU_UNAVAILABLE, {"reason": "NVML: no NVIDIA driver found"}, "system")
    yield c.event(ev.DATA_VALIDATION_STARTED, {"validation_type": "csv"}, "data")
    issues = ["3 rows with empty text were dropped"]
    if hostile_text:
        issues.append("[bold red]markup[/] \x1b[31mred\x1b[0m [@click=app.quit]quit[/]")
    yield c.event(ev.DATA_VALIDATION_COMPLETED, {"passed": True, "issues": issues}, "data", dt=0.05)
    yield c.event(ev.DATA_CACHE_MISS, {"cache_key": "tok-5f2a9c", "reason": "no cached tokenizer"}, "data")
    yield c.event(ev.DATA_PREPROCESSING_STARTED, {"dataset_size": total * batch_size}, "data")
    yield c.event(ev.DATA_PREPROCESSING_COMPLETED, {"processed_samples": total * batch_size,
                                                   "duration": 1.25}, "data", dt=1.25)
    config = {"run": {"name": run_name}, "training": {"epochs": epochs, "learning_rate": 5e-4},
              "data": {"batch_size": batch_size, "max_length": 64}}
    yield c.event(ev.TRAINING_STARTED, {
        "config": config, "run_id": run_id, "run_name": run_name, "model_type": "BertClassifier",
        "device": "cpu", "num_parameters": 1_234_567, "total_epochs": epochs,
        "steps_per_epoch": steps_per_epoch, "total_steps": total, "batch_size": batch_size,
        "blas": "openblas"}, "trainer")
    best: float | None = None
    step = 0
    lr_peak = 5e-4
    warmup = max(1, total // 10)
    for epoch in range(1, epochs + 1):
        yield c.event(ev.TRAINING_EPOCH_STARTED, {"epoch": epoch, "total_epochs": epochs}, "trainer")
        epoch_losses: list[float] = []
        epoch_start = c.t
        for batch in range(1, steps_per_epoch + 1):
            step += 1
            if fail_at_step is not None and step == fail_at_step:
                yield c.event(ev.TRAINING_FAILED, {
                    "error": f"loss became nan at step {step}",
                    "traceback": "Traceback (most recent call last):\n  File \"trainer.py\", line 1\n"
                                 f"FloatingPointError: loss became nan at step {step}",
                    "epoch": epoch, "step": step}, "trainer", dt=step_seconds)
                yield from _plugins_down(c)
                return
            if stop_at_step is not None and step == stop_at_step:
                yield c.event(ev.CONTROL_STOP_REQUESTED, {"reason": "user", "requested_by": "tui"}, "tui")
                path = f"runs/{run_name}/checkpoints/step-{step}"
                yield c.event(ev.MODEL_CHECKPOINT_SAVED, {"path": path, "epoch": epoch,
                                                         "metrics": {"train_loss": epoch_losses[-1]}},
                              "model", dt=0.2)
                yield c.event(ev.TRAINING_STOPPED, {"epoch": epoch, "step": step, "reason": "user",
                                                   "checkpoint_path": path}, "trainer")
                yield from _plugins_down(c)
                return
            if pause_at_step is not None and step == pause_at_step:
                yield c.event(ev.CONTROL_PAUSE_REQUESTED, {"requested_by": "tui"}, "tui")
                yield c.event(ev.TRAINING_PAUSED, {"epoch": epoch, "step": step}, "trainer")
                yield c.event(ev.CONTROL_RESUME_REQUESTED, {"requested_by": "tui"}, "tui", dt=3.0)
                yield c.event(ev.TRAINING_RESUMED, {"epoch": epoch, "step": step}, "trainer")
            progress = step / total
            loss = 0.69 * math.exp(-2.2 * progress) + 0.05 + 0.04 * math.sin(step * 1.7) ** 2
            lr = lr_peak * (step / warmup if step <= warmup else (1 - progress) / (1 - warmup / total + 1e-9))
            gnorm = 1.5 * math.exp(-progress) + 0.2 * abs(math.cos(step))
            data_ms = 12.0 + 3.0 * (step % 5)
            if step % 97 == 0:
                data_ms = step_seconds * 1000 * 0.7
            epoch_losses.append(loss)
            if step % max(1, model_every) == 0:
                yield c.event(ev.DATA_BATCH_LOADED, {"batch_size": batch_size, "load_time": data_ms / 1000,
                                                    "sequence_length": 64}, "data")
                yield c.event(ev.MODEL_FORWARD_PASS, {"input_shape": [batch_size, 64],
                                                     "output_shape": [batch_size, 2]}, "model")
                yield c.event(ev.MODEL_BACKWARD_PASS, {"gradients": {"global_norm": round(gnorm, 6),
                                                                    "layers": {"encoder.0": 0.4, "head": 0.1}},
                                                      "loss": round(loss, 6)}, "model")
            yield c.event(ev.TRAINING_BATCH_COMPLETED, {
                "batch": batch, "step": step, "epoch": epoch, "loss": round(loss, 6),
                "metrics": {"learning_rate": lr, "grad_norm": round(gnorm, 6),
                            "samples_per_sec": round(batch_size / step_seconds * (1 + 0.05 * math.sin(step)), 2),
                            "step_time_ms": step_seconds * 1000, "data_time_ms": data_ms}},
                "trainer", dt=step_seconds)
            if system_every and step % system_every == 0:
                yield from _system(c, step, gpu_info)
            if step == 97:
                yield c.event(ev.SYSTEM_BOTTLENECK_DETECTED, {
                    "component": "data", "description": "data loading took 70% of step time",
                    "suggestions": ["increase batch_event_every", "pre-tokenize the dataset"]}, "system")
        train_loss = sum(epoch_losses) / len(epoch_losses)
        val_loss = train_loss * 1.08
        acc = min(0.97, 0.55 + 0.12 * epoch)
        f1 = acc - 0.02
        yield c.event(ev.TRAINING_EVALUATION_COMPLETED, {"epoch": epoch, "step": step, "metrics": {
            "val_loss": round(val_loss, 6), "val_accuracy": round(acc, 4), "val_f1": round(f1, 4)}},
            "trainer", dt=0.5)
        duration = (c.t - epoch_start).total_seconds()
        yield c.event(ev.TRAINING_EPOCH_COMPLETED, {"epoch": epoch, "metrics": {
            "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
            "val_accuracy": round(acc, 4), "val_f1": round(f1, 4)}, "duration": round(duration, 3)}, "trainer")
        if best is None or val_loss < best:
            yield c.event(ev.TRAINING_NEW_BEST_MODEL, {"epoch": epoch, "step": step, "metric": "val_loss",
                                                      "value": round(val_loss, 6), "previous": best},
                          "plugin:best_model")
            best = round(val_loss, 6)
        path = f"runs/{run_name}/checkpoints/epoch-{epoch}"
        yield c.event(ev.MODEL_CHECKPOINT_SAVED, {"path": path, "epoch": epoch, "metrics": {"val_loss": val_loss}},
                      "model", dt=0.1)
        yield c.event("metrics.aggregated", {"training_events_count": steps_per_epoch,
                                             "system_events_count": steps_per_epoch // max(1, system_every),
                                             "events_per_second": 12.5}, "plugin:metrics_aggregator")
        yield c.event(ev.PLUGIN_MESSAGE, {"from": "best_model", "to": "early_stopping",
                                         "message": {"epoch": epoch, "val_loss": round(val_loss, 6)}},
                      "plugin:best_model")
    yield c.event(ev.TRAINING_COMPLETED, {"final_metrics": {"val_loss": best, "val_accuracy": acc},
                                         "total_duration": round((c.t - start).total_seconds(), 3)}, "trainer")
    yield from _plugins_down(c)


def _system(c: _Clock, step: int, gpu_info: dict[str, Any] | None) -> Iterator[Event]:
    cpu = 55.0 + 40.0 * abs(math.sin(step / 23))
    yield c.event(ev.SYSTEM_CPU_USAGE, {"percent": round(cpu, 1), "per_cpu": [round(cpu, 1), round(cpu * 0.8, 1)]},
                  "system", corr=True)
    mem = 41.0 + step * 0.01 % 20
    yield c.event(ev.SYSTEM_MEMORY_USAGE, {"used_mb": round(mem * 80, 1), "available_mb": round((100 - mem) * 80, 1),
                                          "percentage": round(mem, 1), "process_rss_mb": 512.0 + step % 50},
                  "system")
    yield c.event(ev.SYSTEM_DISK_USAGE, {"used_gb": 120.5, "available_gb": 379.5, "path": "runs"}, "system")
    yield c.event(ev.SYSTEM_MLX_MEMORY, {"active_mb": 210.0, "peak_mb": 260.0, "cache_mb": 32.0}, "system")
    if gpu_info is not None:
        yield c.event(ev.SYSTEM_GPU_USAGE, {"device": gpu_info["device"], "name": gpu_info["name"],
                                           "utilization": round(cpu * 0.9, 1), "memory_used": 1.5e9,
                                           "memory_total": 1.5e11, "temperature": 34.0}, "system")
    if step % 50 == 0 and cpu > 90:
        yield c.event(ev.SYSTEM_PERFORMANCE_WARNING, {"component": "cpu", "metric": "percent",
                                                     "value": round(cpu, 1), "threshold": 90.0}, "system")


def _plugins_down(c: _Clock) -> Iterator[Event]:
    for name, _ in _PLUGINS:
        yield c.event(ev.PLUGIN_DEACTIVATED, {"plugin_name": name}, f"plugin:{name}")
