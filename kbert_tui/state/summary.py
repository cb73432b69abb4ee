"""One-line summaries of events and the colour category each one is drawn in.

Summaries are plain strings with control characters replaced (see `printable`), so whatever an event
holds, the monitor shows it literally and nothing reaches the terminal as an escape sequence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev

__all__ = ["summarize", "event_kind", "printable", "format_number", "KINDS"]

KINDS = ("error", "warning", "success", "control", "training", "system", "plugin", "data", "model", "other")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _visible(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in "\n\r\t":
        return " "
    code = ord(ch)
    return chr(0x2400 + code) if code < 0x20 else "\ufffd"


def printable(text: str) -> str:
    """`text` with control characters (ESC, newlines, C1 codes) replaced by visible symbols or spaces."""
    return _CONTROL.sub(_visible, text) if _CONTROL.search(text) else text


def dict_at(data: dict[str, Any], key: str) -> dict[str, Any]:
    """`data[key]` when it is a dict (a payload's nested metrics), else an empty dict."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def list_at(data: dict[str, Any], key: str) -> list[Any]:
    """`data[key]` when it is a list, else an empty list."""
    value = data.get(key)
    return value if isinstance(value, list) else []


def format_number(value: Any) -> str:
    """A compact rendering of a metric (4 significant digits; scientific for tiny learning rates)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value == 0:
            return "0"
        if abs(value) < 1e-3 or abs(value) >= 1e6:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def count_of(count: int, noun: str) -> str:
    """`1 malformed line`, `2,001 malformed lines`: the count and the noun in the number it needs."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _kv(data: dict[str, Any], keys: tuple[str, ...]) -> str:
    parts = []
    for key in keys:
        if key in data:
            parts.append(f"{key}={format_number(data[key])}" if not isinstance(data[key], (dict, list))
                         else f"{key}={_short(data[key])}")
    return " ".join(parts)


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}={format_number(v) if not isinstance(v, (dict, list)) else '…'}"
                         for k, v in list(value.items())[:6])
        text = "{" + text + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(format_number(v) if not isinstance(v, (dict, list)) else "…"
                               for v in value[:6]) + (", …]" if len(value) > 6 else "]")
    else:
        text = format_number(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _generic(data: dict[str, Any]) -> str:
    parts = []
    for key, value in list(data.items())[:6]:
        parts.append(f"{key}={_short(value, 40)}")
    return " ".join(parts)


def _batch(d: dict[str, Any]) -> str:
    m = dict_at(d, "metrics")
    text = f"loss={format_number(d.get('loss'))} step {d.get('step', d.get('batch', '?'))} epoch {d.get('epoch', '?')}"
    if "learning_rate" in m:
        text += f" lr={format_number(m['learning_rate'])}"
    if "grad_norm" in m:
        text += f" gnorm={format_number(m['grad_norm'])}"
    if "samples_per_sec" in m:
        text += f" {format_number(m['samples_per_sec'])} samples/s"
    return text


def _started(d: dict[str, Any]) -> str:
    return (f"{d.get('total_epochs', '?')} epochs × {d.get('steps_per_epoch', '?')} steps, "
            f"{format_number(d.get('num_parameters'))} params, {d.get('run_name', '')} {d.get('model_type', '')} "
            f"on {d.get('device', '?')}").strip()


def _failed(d: dict[str, Any]) -> str:
    error = str(d.get("error", "")).strip().splitlines()
    return (error[0] if error else "failed") + (f" (epoch {d['epoch']})" if "epoch" in d else "")


_METRIC_ORDER = ("val_loss", "val_accuracy", "val_f1", "train_loss", "loss", "accuracy", "f1")


def _key_metrics(metrics: Any) -> str:
    """Validation numbers first (they are what a person scans for), then the rest."""
    if not isinstance(metrics, dict):
        return _short(metrics)
    ordered = [k for k in _METRIC_ORDER if k in metrics] + [k for k in metrics if k not in _METRIC_ORDER]
    return " ".join(f"{k}={format_number(metrics[k])}" for k in ordered[:6]
                    if not isinstance(metrics[k], (dict, list)))


def _backward(d: dict[str, Any]) -> str:
    grads = dict_at(d, "gradients")
    text = f"loss={format_number(d.get('loss'))}"
    if "global_norm" in grads:
        text += f" gnorm={format_number(grads['global_norm'])}"
    return text + (f" step {d['step']}" if "step" in d else "")


def _plugin_stats(d: dict[str, Any]) -> str:
    return (f"{d.get('plugin_name')}: handled {format_number(d.get('events_handled'))} errors "
            f"{format_number(d.get('errors', 0))} {d.get('state', '')}").strip()


_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    ev.TRAINING_STARTED: _started,
    ev.TRAINING_BATCH_COMPLETED: _batch,
    ev.TRAINING_EPOCH_STARTED: lambda d: f"epoch {d.get('epoch')}/{d.get('total_epochs', '?')}",
    ev.TRAINING_EPOCH_COMPLETED: lambda d: f"epoch {d.get('epoch')} {_key_metrics(d.get('metrics'))} "
                                          f"in {format_number(d.get('duration'))}s",
    ev.TRAINING_EVALUATION_COMPLETED: lambda d: f"{_key_metrics(d.get('metrics'))} epoch {d.get('epoch')} "
                                               f"step {d.get('step')}",
    ev.TRAINING_COMPLETED: lambda d: f"{_key_metrics(d.get('final_metrics'))} "
                                    f"in {format_number(d.get('total_duration'))}s",
    ev.TRAINING_FAILED: _failed,
    ev.TRAINING_NEW_BEST_MODEL: lambda d: f"{d.get('metric')}={format_number(d.get('value'))} "
                                         f"(was {format_number(d.get('previous'))}) epoch {d.get('epoch')}",
    ev.TRAINING_EARLY_STOPPED: lambda d: f"epoch {d.get('epoch')}: {d.get('reason', '')}",
    ev.TRAINING_STOPPED: lambda d: f"step {d.get('step')} ({d.get('reason', '')}) "
                                   f"checkpoint {d.get('checkpoint_path')}",
    ev.TRAINING_PAUSED: lambda d: f"step {d.get('step')} epoch {d.get('epoch')}",
    ev.TRAINING_RESUMED: lambda d: f"step {d.get('step')} epoch {d.get('epoch')}",
    ev.SYSTEM_CPU_USAGE: lambda d: f"cpu {format_number(d.get('percent'))}%",
    ev.SYSTEM_MEMORY_USAGE: lambda d: f"mem {format_number(d.get('percentage'))}% rss "
                                     f"{format_number(d.get('process_rss_mb'))} MB used "
                                     f"{format_number(d.get('used_mb'))} MB",
    ev.SYSTEM_DISK_USAGE: lambda d: f"free {format_number(d.get('available_gb'))} GB used "
                                   f"{format_number(d.get('used_gb'))} GB {d.get('path', '')}",
    ev.SYSTEM_MLX_MEMORY: lambda d: f"mlx {format_number(d.get('active_mb'))} MB active peak "
                                   f"{format_number(d.get('peak_mb'))} MB cache {format_number(d.get('cache_mb'))} MB",
    ev.SYSTEM_GPU_USAGE: lambda d: f"gpu {d.get('device')} util {format_number(d.get('utilization'))}% "
                                  f"temp {format_number(d.get('temperature'))}°C",
    ev.SYSTEM_GPU_UNAVAILABLE: lambda d: f"no GPU: {d.get('reason', '')}",
    ev.SYSTEM_PERFORMANCE_WARNING: lambda d: f"{d.get('component')} {d.get('metric')}="
                                            f"{format_number(d.get('value'))} > {format_number(d.get('threshold'))}",
    ev.SYSTEM_PERFORMANCE_RECOVERED: lambda d: f"{d.get('component')} {d.get('metric')}="
                                              f"{format_number(d.get('value'))} ≤ {format_number(d.get('threshold'))}",
    ev.SYSTEM_BOTTLENECK_DETECTED: lambda d: f"{d.get('component')}: {d.get('description', '')}",
    ev.PLUGIN_ERROR: lambda d: f"{d.get('plugin_name')}: {d.get('error', '')}",
    ev.PLUGIN_STATE_CHANGED: lambda d: f"{d.get('plugin_name')}: {d.get('old_state')} → {d.get('new_state')}",
    ev.PLUGIN_STATS: _plugin_stats,
    ev.PLUGIN_MESSAGE: lambda d: f"{d.get('from')} → {d.get('to')}: {_short(d.get('message'))}",
    ev.MODEL_CHECKPOINT_SAVED: lambda d: f"epoch {d.get('epoch')} → {d.get('path')}",
    ev.MODEL_CHECKPOINT_LOADED: lambda d: f"{d.get('path')} (epoch {d.get('restored_epoch')})",
    ev.MODEL_BACKWARD_PASS: _backward,
    ev.DATA_VALIDATION_COMPLETED: lambda d: ("passed" if d.get("passed") else "FAILED")
                                           + (f"; {len(d.get('issues') or [])} issue(s): " + "; ".join(
                                               str(i) for i in (d.get('issues') or [])[:3])
                                              if d.get("issues") else ""),
    ev.DATA_BATCH_LOADED: lambda d: _kv(d, ("load_time", "batch_size", "sequence_length")),
    ev.BUS_HANDLER_ERROR: lambda d: _generic(d),
    ev.PROCESS_OUTPUT: lambda d: ("stderr: " if d.get("stream") == "stderr" else "") + str(d.get("line", "")),
    ev.PROCESS_EXITED: lambda d: f"{d.get('how')} after {format_number(d.get('seconds'))} s (pid {d.get('pid')})",
    ev.PROCESS_STARTED: lambda d: f"pid {d.get('pid')}: {' '.join(map(str, d.get('command') or []))}",
}


def summarize(event: Event) -> str:
    """One line describing `event` for the log (no control characters)."""
    data = event.data if isinstance(event.data, dict) else {"value": event.data}
    fn = _SUMMARIES.get(event.name)
    try:
        text = fn(data) if fn is not None else _generic(data)
    except Exception:  # a payload of an unexpected shape must never break the log
        text = _generic(data)
    return printable(text)


def event_kind(event: Event) -> str:
    """Which colour category `event` is drawn in (one of `KINDS`)."""
    name = event.name
    tail = name.rpartition(".")[2]
    if tail in ("failed", "error", "handler_error", "schema_mismatch") or "error" in tail:
        return "error"
    if name == ev.DATA_VALIDATION_COMPLETED and not event.data.get("passed", True):
        return "error"
    if "warning" in tail or "bottleneck" in tail or tail in ("gpu_unavailable", "stopped", "early_stopped"):
        return "warning"
    if tail in ("completed", "new_best_model") and name.startswith("training.") and name != ev.TRAINING_BATCH_COMPLETED:
        return "success"
    category = name.partition(".")[0]
    if category in ("control",) or tail in ("paused", "resumed"):
        return "control"
    if category in ("training", "system", "plugin", "data", "model"):
        return category
    if category == "metrics":
        return "plugin"
    return "other"
