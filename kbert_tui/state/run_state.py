"""RunState: everything the panes show, rebuilt from events alone (live or replayed, same code).

`RunState.apply(event)` is the only way in. It is cheap per event (the ingest path runs it for every
event at 10k/s) and keeps bounded histories, so a million-event replay stays small.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev

from .chart import loss_value
from .ranks import RankLanes, rank_of
from .run_parts import (Notice, PluginInfo, PluginsState, RuleSeen, Series, SystemState, TrainingState, _num,
                        baseline_label)
from .story import cut_curve, cut_rows, resumed_at_step
from .summary import dict_at, list_at, printable

__all__ = ["RunState", "baseline_label", "TrainingState", "SystemState", "PluginInfo", "PluginsState", "Series",
           "Notice"]

_STATE_FOR = {
    ev.PLUGIN_LOADED: "loaded",
    ev.PLUGIN_INITIALIZED: "initialized",
    ev.PLUGIN_ACTIVATED: "active",
    ev.PLUGIN_DEACTIVATED: "deactivated",
}


class RunState:
    """The reduced state of one run; feed it every event with `apply`."""

    def __init__(self) -> None:
        self.training = TrainingState()
        self.system = SystemState()
        self.plugins = PluginsState()
        self.events_seen = 0
        self.errors_seen = 0
        self.warnings_seen = 0
        self.first_at: datetime | None = None
        self.last_at: datetime | None = None
        self.training_version = 0  # bumps with every event a pane would redraw for (change detection)
        self.system_version = 0
        self.controls: list[str] = []  # control requests seen (names), newest last, bounded
        self.pending_control: str | None = None  # e.g. "pause" requested but not yet answered
        self.rules: dict[str, RuleSeen] = {}  # [[rules]] that fired (rule.fired), by name, first fired first
        self.notifications = 0  # rule.fired with action notify, so far (the monitor rings on new ones)
        self.last_notification: str | None = None
        self.ranks = RankLanes()  # per-rank lanes of a multi-rank run (events with metadata.rank)

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.apply(event)

    def apply(self, event: Event) -> None:
        self.events_seen += 1
        if self.first_at is None:
            self.first_at = event.timestamp
        self.last_at = event.timestamp
        name = event.name
        data = event.data if isinstance(event.data, dict) else {}
        metadata = event.__dict__.get("metadata")  # most events have none (live ones make it lazily): no call then
        if metadata and (ranked := rank_of(event)) is not None and self.ranks.apply(event, ranked):
            self.training_version += 1  # another rank's copy of what rank 0 reports: its lane only
            return
        if name == ev.TRAINING_BATCH_COMPLETED:  # the hot path first
            self._batch(event, data)
            self.training_version += 1
            return
        category = name.partition(".")[0]
        reduce = _DISPATCH.get(name)
        if category == "training":
            self.training.last_at = event.timestamp
            if reduce is not None:
                reduce(self, event, data)
            self.training_version += 1
        elif category == "system":
            self.system.last_at = event.timestamp
            if reduce is not None:
                reduce(self, event, data)
            self.system_version += 1
        elif reduce is not None:  # the few other events the Training pane shows (data.baseline_computed)
            reduce(self, event, data)
            self.training_version += 1
        elif category == "plugin":
            self._plugin(event, name, data)
        elif category == "control":
            self._control(name, data)
            self.training_version += 1
        elif name == ev.RULE_FIRED:
            self._rule_fired(data)
            self.training_version += 1
        if event.source.startswith("plugin:"):
            info = self.plugins.get(event.source[7:])
            info.events_emitted += 1
            self.plugins.version += 1
            if category != "plugin":
                info.messages.append(printable(f"emitted {name}"))
        if name.endswith((".failed", ".error", ".handler_error")):
            self.errors_seen += 1
        elif "warning" in name or "bottleneck" in name:
            self.warnings_seen += 1

    # -- training ----------------------------------------------------------------------------------
    def _batch(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        if t.status == "waiting":
            t.status = "running"
        step = d.get("step")
        if isinstance(step, int):
            t.step = step
        else:
            t.step += 1
        batch = d.get("batch")
        if isinstance(batch, int):
            t.batch = batch
        epoch = d.get("epoch")
        if isinstance(epoch, int):
            t.epoch = epoch
        loss = loss_value(d.get("loss"))  # a read log spells NaN "NaN": the chart marks it all the same
        if loss is not None:
            t.loss = loss
            if loss == loss and abs(loss) != float("inf"):
                t.loss_history.append(loss)
            t.curve.add(t.step, loss, event.timestamp.timestamp())
        m = d.get("metrics")
        if isinstance(m, dict):
            lr = _num(m.get("learning_rate"))
            if lr is not None:
                t.learning_rate = lr
            g = _num(m.get("grad_norm"))
            if g is not None:
                t.grad_norm = g
            sps = _num(m.get("samples_per_sec"))
            if sps is not None:
                t.samples_per_sec = sps
            st = _num(m.get("step_time_ms"))
            if st is not None:
                t.step_time_ms = st
        t.last_at = event.timestamp
        t._recent.append((event.timestamp.timestamp(), t.step))

    # -- training and system: one method per event, dispatched by name (_DISPATCH below) ---------
    def _on_training_started(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        resumed_at = resumed_at_step(d)
        continued = resumed_at is not None and t.started_at is not None and d.get("run_id") in (None, t.run_id)
        if t.started_at is not None and not continued:  # a second run in the same log: the panes show the newest
            self.training = t = TrainingState()
        if resumed_at is not None:
            self._resumed(t, resumed_at, d, event.timestamp.timestamp() if continued else None)
        t.status = "running"
        t.started_at = t.started_at or event.timestamp
        t.ended_at = None
        t.error = t.traceback = None
        for key in ("run_id", "run_name", "model_type", "device", "blas"):
            value = d.get(key)
            if isinstance(value, dict):  # e.g. blas: {"name": "openblas", "threads": 1, ...}
                threads = value.get("threads")
                value = value.get("name")
                if isinstance(threads, int) and value is not None:
                    value = f"{value}, {threads} thread{'s' if threads != 1 else ''}"
            if value is not None:
                setattr(t, key, printable(str(value)))
        if t.run_id is None and event.correlation_id:
            t.run_id = event.correlation_id
        for key in ("num_parameters", "total_epochs", "steps_per_epoch", "total_steps", "batch_size"):
            value = d.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(t, key, value)
        if not continued:
            t.curve.started(event.timestamp.timestamp(), t.batch_size)
        if t.total_steps is None and t.total_epochs and t.steps_per_epoch:
            t.total_steps = t.total_epochs * t.steps_per_epoch

    def _resumed(self, t: TrainingState, step: int, d: dict[str, Any], at: float | None) -> None:
        """A process that went on from `step` (`run --resume`): what an earlier one logged past it was done
        again, so it goes; the best so far is the checkpoint's; `resumes` marks the step on the chart.
        `at` (the new process's start) when this state saw the earlier process: its time axis goes on."""
        if at is not None:
            cut_curve(t.curve, step)
            t.curve.started(at - (t.curve.last[2] if t.curve.last else 0.0), t.curve.batch_size)
            kept = bisect.bisect_right(t.epoch_steps, step)
            del t.epoch_metrics[kept:], t.epoch_steps[kept:]
            t.eval_metrics = cut_rows(t.eval_metrics, step)
            t.epochs_done = max((r["epoch"] for r in t.epoch_metrics if isinstance(r.get("epoch"), int)), default=0)
            t.loss_history.cut(step)
        t.resumes.append(step)
        last = t.curve.last if at is not None and t.curve.last is not None else None
        t.resume_marks.append(last or (float(step), float(step * (t.curve.batch_size or 1)), 0.0))
        t.step = step
        t.stop_reason = t.checkpoint_path = None
        t.stopped_early, t.restored_epoch, t.final_metrics = False, None, {}
        best = d.get("best")
        if isinstance(best, dict) and _num(best.get("value")) is not None:
            t.best_metric = printable(str(best.get("metric", "metric")))
            t.best_value = _num(best.get("value"))
            t.best_epoch = best["epoch"] if isinstance(best.get("epoch"), int) else None

    def _on_data_baseline_computed(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        t.baseline_model = printable(str(d.get("model", "baseline")))
        t.baseline_accuracy = _num(d.get("val_accuracy"))
        t.baseline_f1 = _num(d.get("val_f1"))

    def _on_model_pretrained_loaded(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        frozen = d.get("frozen_parameters")
        t.frozen_parameters = frozen if isinstance(frozen, int) and not isinstance(frozen, bool) else None
        parts = d.get("frozen")
        t.frozen = printable(", ".join(map(str, parts))) if isinstance(parts, list) else None

    def _on_model_features_progress(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        done, total = d.get("done"), d.get("total")
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            t.features_done, t.features_total = done, total
        t.features_eta = _num(d.get("eta_s"))
        t.features_seconds = _num(d.get("seconds"))
        t.last_at = event.timestamp  # the run's elapsed time goes on during the pass

    def _on_training_epoch_started(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        if t.status == "waiting":
            t.status = "running"
        epoch = d.get("epoch")
        if isinstance(epoch, int):
            t.epoch = epoch
            t.epochs_done = max(t.epochs_done, epoch - 1)
        total = d.get("total_epochs")
        if isinstance(total, int):
            t.total_epochs = total
        t.batch = 0

    def _on_training_epoch_completed(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        epoch = d.get("epoch")
        if isinstance(epoch, int):
            t.epochs_done = max(t.epochs_done, epoch)
        metrics = dict_at(d, "metrics")
        row = {"epoch": epoch, **{k: v for k, v in metrics.items() if _num(v) is not None}}
        if _num(d.get("duration")) is not None:
            row["duration"] = d["duration"]
        t.epoch_metrics.append(row)
        t.epoch_steps.append(t.step)
        t.curve.epoch_end(_num(metrics.get("val_loss")))

    def _on_training_evaluation_completed(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        metrics = dict_at(d, "metrics")
        t.eval_metrics.append({"epoch": d.get("epoch"), "step": d.get("step"),
                               **{k: v for k, v in metrics.items() if _num(v) is not None}})
        del t.eval_metrics[:-500]

    def _on_training_new_best_model(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        t.best_metric = printable(str(d.get("metric", "metric")))
        t.best_value = _num(d.get("value"))
        epoch = d.get("epoch")
        t.best_epoch = epoch if isinstance(epoch, int) else None

    def _on_training_completed(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        _ended_at_epoch_end(t)
        t.status = "completed"
        t.ended_at = event.timestamp
        if isinstance(d.get("final_metrics"), dict):
            t.final_metrics = d["final_metrics"]
        if d.get("stopped_early"):
            t.stopped_early = True
        restored = d.get("restored_epoch")
        t.restored_epoch = restored if isinstance(restored, int) and not isinstance(restored, bool) else None
        if t.total_epochs and not d.get("stopped_early"):
            t.epochs_done = max(t.epochs_done, t.total_epochs)
        self.pending_control = None

    def _on_training_failed(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        _ended_at_epoch_end(t)
        t.status = "failed"
        t.ended_at = event.timestamp
        t.error = printable(str(d.get("error", "unknown error")))
        t.traceback = str(d.get("traceback") or "") or None
        self.pending_control = None

    def _on_training_stopped(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        _ended_at_epoch_end(t)
        t.status = "stopped"
        t.ended_at = event.timestamp
        t.stop_reason = printable(str(d.get("reason", "")))
        path = d.get("checkpoint_path")
        t.checkpoint_path = printable(str(path)) if path else None
        self.pending_control = None

    def _on_training_early_stopped(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        t.stopped_early = True
        t.stop_reason = printable(str(d.get("reason", "early stopping")))

    def _on_training_paused(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        if t.status in ("running", "waiting"):
            t.status = "paused"
        self.pending_control = None

    def _on_training_resumed(self, event: Event, d: dict[str, Any]) -> None:
        t = self.training
        if t.status == "paused":
            t.status = "running"
        self.pending_control = None

    # -- system ------------------------------------------------------------------------------------

    def _on_system_cpu_usage(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        v = _num(d.get("percent"))
        if v is not None:
            s.cpu_percent = v
            s.record("cpu", v)

    def _on_system_memory_usage(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        v = _num(d.get("percentage"))
        if v is not None:
            s.memory_percent = v
            s.record("memory", v)
        s.memory_used_mb = _num(d.get("used_mb"))
        s.memory_available_mb = _num(d.get("available_mb"))
        rss = _num(d.get("process_rss_mb"))
        if rss is not None:
            s.process_rss_mb = rss
            s.record("rss", rss)

    def _on_system_disk_usage(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        used, free = _num(d.get("used_gb")), _num(d.get("available_gb"))
        s.disk_used_gb, s.disk_available_gb = used, free
        pct = _num(d.get("percentage"))
        if pct is None and used is not None and free is not None and used + free > 0:
            pct = 100.0 * used / (used + free)
        if pct is not None:
            s.disk_percent = pct
            s.record("disk", pct)
        if d.get("path") is not None:
            s.disk_path = printable(str(d["path"]))

    def _on_system_mlx_memory(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        s.mlx_active_mb = _num(d.get("active_mb"))
        s.mlx_peak_mb = _num(d.get("peak_mb"))
        if s.mlx_active_mb is not None:
            s.record("mlx", s.mlx_active_mb)

    def _on_system_gpu_usage(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        key = printable(str(d.get("device", 0)))
        gpu = s.gpus.setdefault(key, {})
        gpu.update({k: v for k, v in d.items() if not isinstance(v, (dict, list))})
        util = _num(d.get("utilization"))
        if util is not None:
            s.record(f"gpu{key}", util)
        used, total = _num(d.get("memory_used")), _num(d.get("memory_total"))
        if used is not None and total:
            gpu["memory_percent"] = 100.0 * used / total
        s.gpu_unavailable = None

    def _on_system_gpu_unavailable(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        s.gpu_unavailable = printable(str(d.get("reason", "no GPU")))

    def _on_system_performance_warning(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        comp = printable(str(d.get("component", "?")))
        text = printable(f"{d.get('metric', '')} {_fmt(d.get('value'))} ≥ {_fmt(d.get('threshold'))}")
        notice = Notice("warning", comp, text, event.timestamp)
        s.notices.append(notice)
        s.warnings[(comp, str(d.get("metric")), str(d.get("device")))] = notice

    def _on_system_performance_recovered(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        comp = printable(str(d.get("component", "?")))
        s.warnings.pop((comp, str(d.get("metric")), str(d.get("device"))), None)

    def _on_system_bottleneck_detected(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        comp = printable(str(d.get("component", "?")))
        sugg = list_at(d, "suggestions")
        s.notices.append(Notice("bottleneck", comp, printable(str(d.get("description", ""))),
                                event.timestamp, tuple(printable(str(x)) for x in sugg[:4])))

    def _on_system_error_threshold_exceeded(self, event: Event, d: dict[str, Any]) -> None:
        s = self.system
        s.notices.append(Notice("error", printable(str(d.get("component", "events"))),
                                printable(f"{d.get('error_count')} errors (threshold {d.get('threshold')})"),
                                event.timestamp))


    # -- plugins -----------------------------------------------------------------------------------
    def _plugin(self, event: Event, name: str, d: dict[str, Any]) -> None:
        pname = d.get("plugin_name")
        if name == ev.PLUGIN_MESSAGE:
            target = d.get("from")
            if isinstance(target, str):
                info = self.plugins.get(printable(target))
                info.messages.append(printable(f"→ {d.get('to')}: {d.get('message')}"))
            to = d.get("to")
            if isinstance(to, str) and to in self.plugins.plugins:
                self.plugins.plugins[to].messages.append(printable(f"← {d.get('from')}: {d.get('message')}"))
            self.plugins.version += 1
            return
        if not isinstance(pname, str):
            if event.source.startswith("plugin:"):
                pname = event.source[7:]
            else:
                return
        info = self.plugins.get(printable(pname))
        self.plugins.version += 1
        if name in _STATE_FOR and not (info.state == "set aside" and name == ev.PLUGIN_DEACTIVATED):
            info.state = _STATE_FOR[name]
        if isinstance(d.get("version"), str):
            info.version = printable(d["version"])
        caps = d.get("capabilities")
        if isinstance(caps, list):
            info.capabilities = tuple(printable(str(c)) for c in caps)
        if name == ev.PLUGIN_INITIALIZED and isinstance(d.get("config"), dict):
            info.config = d["config"]
        handled = d.get("events_handled")
        if isinstance(handled, int):
            info.events_handled = handled
        if isinstance(d.get("errors"), int):
            info.errors = max(info.errors, d["errors"])
        if name == ev.PLUGIN_ERROR:
            info.errors += 1
            if isinstance(d.get("error_count"), int):
                info.errors = max(info.errors, d["error_count"])
            info.last_error = printable(str(d.get("error", "")))
            if d.get("fatal") or d.get("set_aside") or d.get("disabled"):
                info.state = "set aside"
            info.messages.append(printable(f"error: {d.get('error', '')}"))
        elif name == ev.PLUGIN_STATE_CHANGED:
            new = d.get("new_state")
            if isinstance(new, str) and info.state != "set aside":
                info.state = printable(new)
            info.messages.append(printable(f"state {d.get('old_state')} → {d.get('new_state')}"))
        elif name != ev.PLUGIN_STATS:  # counters only, already taken above
            info.messages.append(printable(name.partition(".")[2]))

    def _rule_fired(self, d: dict[str, Any]) -> None:
        name = printable(str(d.get("rule", "?")))
        seen = self.rules.get(name)
        if seen is None:
            seen = self.rules[name] = RuleSeen()
        trigger = d.get("caused_by")
        if trigger != seen.trigger or trigger is None:  # one firing emits a rule.fired per action
            seen.count += 1
            seen.actions = []
            seen.trigger = trigger if isinstance(trigger, str) else None
        seen.actions.append(printable(str(d.get("action", "?"))))
        seen.reason = printable(str(d.get("reason", "")))
        if d.get("action") == "notify":
            self.notifications += 1
            self.last_notification = f"rule {name}: {seen.reason}"

    def _control(self, name: str, d: dict[str, Any]) -> None:
        action = name.partition(".")[2].removesuffix("_requested")
        self.controls.append(action)
        del self.controls[:-50]
        if self.training.live:
            self.pending_control = action


def _fmt(value: Any) -> str:
    v = _num(value)
    return f"{v:.4g}" if v is not None else str(value)


# Which method reduces which event; the category's version counter is bumped in apply().

def _ended_at_epoch_end(t: TrainingState) -> None:
    """A run that ends after starting an epoch but before its first batch ended in the epoch before:
    the pane reads `Epoch 2/8, Batch 125/125`, not `Epoch 3/8, Batch 0/125`."""
    if t.batch == 0 and t.epochs_done and t.epoch == t.epochs_done + 1:
        t.epoch = t.epochs_done
        t.batch = t.steps_per_epoch or 0

_DISPATCH: dict[str, Callable[[RunState, Event, dict[str, Any]], None]] = {
    ev.TRAINING_STARTED: RunState._on_training_started,
    ev.TRAINING_EPOCH_STARTED: RunState._on_training_epoch_started,
    ev.TRAINING_EPOCH_COMPLETED: RunState._on_training_epoch_completed,
    ev.TRAINING_EVALUATION_COMPLETED: RunState._on_training_evaluation_completed,
    ev.TRAINING_NEW_BEST_MODEL: RunState._on_training_new_best_model,
    ev.TRAINING_COMPLETED: RunState._on_training_completed,
    ev.TRAINING_FAILED: RunState._on_training_failed,
    ev.TRAINING_STOPPED: RunState._on_training_stopped,
    ev.TRAINING_EARLY_STOPPED: RunState._on_training_early_stopped,
    ev.TRAINING_PAUSED: RunState._on_training_paused,
    ev.TRAINING_RESUMED: RunState._on_training_resumed,
    ev.DATA_BASELINE_COMPUTED: RunState._on_data_baseline_computed,
    ev.MODEL_PRETRAINED_LOADED: RunState._on_model_pretrained_loaded,
    ev.MODEL_FEATURES_PROGRESS: RunState._on_model_features_progress,
    ev.SYSTEM_CPU_USAGE: RunState._on_system_cpu_usage,
    ev.SYSTEM_MEMORY_USAGE: RunState._on_system_memory_usage,
    ev.SYSTEM_DISK_USAGE: RunState._on_system_disk_usage,
    ev.SYSTEM_MLX_MEMORY: RunState._on_system_mlx_memory,
    ev.SYSTEM_GPU_USAGE: RunState._on_system_gpu_usage,
    ev.SYSTEM_GPU_UNAVAILABLE: RunState._on_system_gpu_unavailable,
    ev.SYSTEM_PERFORMANCE_WARNING: RunState._on_system_performance_warning,
    ev.SYSTEM_PERFORMANCE_RECOVERED: RunState._on_system_performance_recovered,
    ev.SYSTEM_BOTTLENECK_DETECTED: RunState._on_system_bottleneck_detected,
    ev.SYSTEM_ERROR_THRESHOLD_EXCEEDED: RunState._on_system_error_threshold_exceeded,
}
