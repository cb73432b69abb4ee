"""The parts of a run's state that the panes read: training, system, plugins, and the small types they hold.

`RunState` (run_state.py) fills them from events; each part's derived figures (ETA, steps per second,
active notices) are computed here, from the part alone.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .chart import LossCurve

__all__ = ["Notice", "PluginInfo", "PluginsState", "RuleSeen", "Series", "SystemState", "TrainingState",
           "baseline_label"]

RESOURCE_HISTORY = 120
NOTICE_LIMIT = 8
WARNING_ACTIVE_S = 60.0


def baseline_label(model: str | None, accuracy: float) -> str:
    """"bag-of-words 0.770": the baseline's short name (its first word) and validation accuracy."""
    return f"{(model or 'baseline').split()[0]} {accuracy:.3f}"


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


class Series:
    """A bounded history of a per-step value: past `limit` points it halves itself by averaging pairs,
    so it always spans the whole run at a resolution of `stride` steps per point."""

    def __init__(self, limit: int = 2048) -> None:
        self.limit = limit
        self.points = array("d")
        self.stride = 1
        self._acc = 0.0
        self._acc_n = 0
        self.count = 0
        self.last: float | None = None

    def append(self, value: float) -> None:
        self.count += 1
        self.last = value
        self._acc += value
        self._acc_n += 1
        if self._acc_n < self.stride:
            return
        self.points.append(self._acc / self._acc_n)
        self._acc = 0.0
        self._acc_n = 0
        if len(self.points) >= self.limit:
            pts = self.points
            self.points = array("d", ((pts[i] + pts[i + 1]) / 2 for i in range(0, len(pts) - 1, 2)))
            self.stride *= 2

    def cut(self, count: int) -> None:
        """Keep the first `count` values (to the resolution of `stride`): a resumed run's redone steps go."""
        if count < self.count:
            self.points = self.points[: count // self.stride]
            self._acc, self._acc_n = 0.0, 0
            self.count = count

    def values(self) -> list[float]:
        """The points, plus the partial bucket still being filled."""
        out = list(self.points)
        if self._acc_n:
            out.append(self._acc / self._acc_n)
        return out

    def __len__(self) -> int:
        return len(self.points) + (1 if self._acc_n else 0)


@dataclass
class RuleSeen:
    """A [[rules]] rule as the monitor saw it fire: how often, its last firing's actions and why."""

    count: int = 0
    actions: list[str] = field(default_factory=list)
    reason: str = ""
    trigger: str | None = None  # the id of the event its last firing matched


@dataclass
class Notice:
    """A warning, bottleneck or error worth showing until it's old."""

    kind: str  # "warning" | "bottleneck" | "error"
    component: str
    text: str
    timestamp: datetime
    suggestions: tuple[str, ...] = ()


@dataclass
class TrainingState:
    run_id: str | None = None
    run_name: str | None = None
    model_type: str | None = None
    device: str | None = None
    num_parameters: int | None = None
    batch_size: int | None = None
    blas: str | None = None
    status: str = "waiting"  # waiting | running | paused | stopped | failed | completed
    error: str | None = None
    traceback: str | None = None
    stop_reason: str | None = None
    checkpoint_path: str | None = None
    stopped_early: bool = False
    total_epochs: int | None = None
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    epoch: int = 0
    epochs_done: int = 0
    batch: int = 0
    step: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    samples_per_sec: float | None = None
    step_time_ms: float | None = None
    started_at: datetime | None = None
    last_at: datetime | None = None
    ended_at: datetime | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)
    loss_history: Series = field(default_factory=Series)
    curve: LossCurve = field(default_factory=LossCurve)  # the loss chart: step / samples / time x's
    epoch_metrics: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch_completed
    epoch_steps: list[int] = field(default_factory=list)  # the step each of those came at (a resume cuts by it)
    eval_metrics: list[dict[str, Any]] = field(default_factory=list)  # evaluation_completed, newest last
    best_metric: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    restored_epoch: int | None = None  # training.completed: the best epoch whose weights the run ended with
    resumes: list[int] = field(default_factory=list)  # steps where a new process went on (`run --resume`)
    # their (step, samples, seconds): chart markers
    resume_marks: list[tuple[float, float, float]] = field(default_factory=list)
    baseline_model: str | None = None  # data.baseline_computed: the score the model has to beat
    baseline_accuracy: float | None = None
    baseline_f1: float | None = None
    frozen_parameters: int | None = None  # model.pretrained_loaded: a fine-tune's frozen part
    frozen: str | None = None  # "embeddings, layers 1-4"
    features_done: int = 0  # model.features_progress: the cached-features pass
    features_total: int | None = None
    features_eta: float | None = None
    features_seconds: float | None = None
    _recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    @property
    def seconds_per_step(self) -> float | None:
        """Recent wall seconds per step, from the events' own timestamps (so replays agree)."""
        if len(self._recent) >= 2:
            (t0, s0), (t1, s1) = self._recent[0], self._recent[-1]
            if s1 > s0 and t1 > t0:
                return (t1 - t0) / (s1 - s0)
        if self.step_time_ms:
            return self.step_time_ms / 1000.0
        return None

    @property
    def eta_seconds(self) -> float | None:
        """Time left for the whole run at the recent pace (None when unknown or not running)."""
        if self.status not in ("running", "paused") or not self.total_steps:
            return None
        per = self.seconds_per_step
        return None if per is None else max(0.0, (self.total_steps - self.step) * per)

    @property
    def epoch_eta_seconds(self) -> float | None:
        if self.status not in ("running", "paused") or not self.steps_per_epoch:
            return None
        per = self.seconds_per_step
        return None if per is None else max(0.0, (self.steps_per_epoch - self.batch) * per)

    @property
    def elapsed_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at or self.last_at or self.started_at
        return (end - self.started_at).total_seconds()

    @property
    def versus_baseline(self) -> str | None:
        """"val_acc 0.781 (encoder 0.752) · bag-of-words 0.770": the model's validation accuracy (the final
        metrics once the run has them, else the last epoch's) beside the baseline's; the encoder's alone in
        brackets when the model predicts together with the bag-of-words (`model.with_bag_of_words`)."""
        if self.baseline_accuracy is None:
            return None
        latest = [self.final_metrics] if isinstance(self.final_metrics, dict) else []
        metrics = next((m for m in latest + self.epoch_metrics[::-1] if "val_accuracy" in m), {})
        mine = f"{metrics['val_accuracy']:.3f}" if _num(metrics.get("val_accuracy")) is not None else "—"
        encoder = _num(metrics.get("encoder_val_accuracy"))
        alone = f" (encoder {encoder:.3f})" if encoder is not None else ""
        return f"val_acc {mine}{alone} · {baseline_label(self.baseline_model, self.baseline_accuracy)}"

    @property
    def live(self) -> bool:
        return self.status in ("running", "paused")

    @property
    def epoch_fraction(self) -> float:
        """How much of the run's epochs is done, counting the batches of the epoch under way."""
        if not self.total_epochs:
            return 0.0
        done = float(self.epochs_done)
        if self.epoch > self.epochs_done and self.steps_per_epoch:
            done = self.epoch - 1 + min(1.0, self.batch / self.steps_per_epoch)
        return min(1.0, max(0.0, done / self.total_epochs))


@dataclass
class SystemState:
    cpu_percent: float | None = None
    memory_percent: float | None = None
    memory_used_mb: float | None = None
    memory_available_mb: float | None = None
    process_rss_mb: float | None = None
    disk_percent: float | None = None
    disk_used_gb: float | None = None
    disk_available_gb: float | None = None
    disk_path: str | None = None
    mlx_active_mb: float | None = None
    mlx_peak_mb: float | None = None
    gpus: dict[str, dict[str, Any]] = field(default_factory=dict)
    gpu_unavailable: str | None = None
    history: dict[str, deque[float]] = field(default_factory=dict)
    notices: deque[Notice] = field(default_factory=lambda: deque(maxlen=NOTICE_LIMIT))
    warnings: dict[tuple[str, str, str], Notice] = field(default_factory=dict)  # active until recovered
    last_at: datetime | None = None

    def record(self, key: str, value: float) -> None:
        hist = self.history.get(key)
        if hist is None:
            hist = self.history[key] = deque(maxlen=RESOURCE_HISTORY)
        hist.append(value)

    def active_notices(self, now: datetime | None = None) -> list[Notice]:
        """Threshold warnings not yet recovered, then bottlenecks and errors from the last minute
        (of event time), newest first."""
        ref = now or self.last_at
        out = sorted(self.warnings.values(), key=lambda n: n.timestamp, reverse=True)
        for notice in reversed(self.notices):
            if notice.kind == "warning":
                continue
            if ref is None or (ref - notice.timestamp).total_seconds() <= WARNING_ACTIVE_S:
                out.append(notice)
        return out


@dataclass
class PluginInfo:
    name: str
    version: str = ""
    state: str = "loaded"
    events_handled: int | None = None
    events_emitted: int = 0
    errors: int = 0
    last_error: str | None = None
    capabilities: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    messages: deque[str] = field(default_factory=lambda: deque(maxlen=20))


@dataclass
class PluginsState:
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    version: int = 0  # bumps when anything changes (cheap change detection for the table)

    def get(self, name: str) -> PluginInfo:
        info = self.plugins.get(name)
        if info is None:
            info = self.plugins[name] = PluginInfo(name=name)
        return info
