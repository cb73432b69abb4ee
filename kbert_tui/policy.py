"""Run policy, in one place: which value of a metric is best, and when to stop waiting for a better one.

The trainer (`[training.early_stopping]`) and the `best_model` / `early_stopping` plugins all use
`BestTracker`, so they agree on what "improved" means and say it in the same events. Pure: no bus,
no MLX, tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kbert_tui.config import option

__all__ = ["BestTracker", "Improvement", "WatchOptions", "default_mode"]

Mode = Literal["min", "max"]


def default_mode(metric: str) -> Mode:
    """Losses go down, everything else (accuracy, F1, AUC...) goes up."""
    return "min" if "loss" in metric else "max"


@dataclass(frozen=True)
class WatchOptions:
    """The keys of a plugin that watches a metric (best_model, early_stopping), declared once."""

    metric: str = option("val_loss", "the metric to watch, in evaluation and epoch results")
    mode: str | None = option(None, "which way is better (default: min for losses, else max)", choices=("min", "max"))
    min_delta: float = option(0.0, "smallest change that counts as an improvement", minimum=0.0)


@dataclass(frozen=True, slots=True)
class Improvement:
    """A new best value: the `training.new_best_model` payload, less epoch and step."""

    metric: str
    value: float
    previous: float | None
    mode: Mode


@dataclass(slots=True)
class BestTracker:
    """Follows one metric across results: the best value, its epoch, and results since it improved."""

    metric: str
    mode: Mode
    min_delta: float = 0.0
    patience: int = 3
    best: float | None = None
    best_epoch: int | None = None
    waited: int = 0

    @classmethod
    def from_settings(cls, metric: str = "val_loss", mode: str | None = None, min_delta: float = 0.0,
                      patience: int = 3) -> BestTracker:
        chosen = default_mode(metric) if mode is None else mode
        if chosen not in ("min", "max"):
            raise ValueError(f'mode must be "min" or "max", got {chosen!r}')
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        return cls(metric, chosen, float(min_delta), int(patience))  # type: ignore[arg-type]

    def read(self, data: dict[str, Any]) -> float | None:
        """The metric from an event's `metrics` dict (or its top level), or None."""
        metrics = data.get("metrics") or {}
        value = metrics.get(self.metric, data.get(self.metric))
        return None if value is None else float(value)

    def improves(self, value: float) -> bool:
        """Whether `value` beats the best by more than min_delta (any value beats no best)."""
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def observe(self, value: float, epoch: int | None) -> Improvement | None:
        """Take one result; the improvement if it is a new best, else None (and one more epoch waited)."""
        if self.improves(value):
            previous, self.best, self.best_epoch, self.waited = self.best, value, epoch, 0
            return Improvement(self.metric, value, previous, self.mode)
        self.waited += 1
        return None

    @property
    def patience_exhausted(self) -> bool:
        return self.waited >= self.patience

    def stop_reason(self) -> str:
        return f"{self.metric} did not improve by more than {self.min_delta} for {self.patience} epoch(s)"

    def early_stop_payload(self, epoch: int, value: float | None) -> dict[str, Any]:
        """The `training.early_stopped` payload."""
        return {"epoch": epoch, "reason": self.stop_reason(), "metric": self.metric, "value": value,
                "best_value": self.best, "best_epoch": self.best_epoch, "patience": self.patience,
                "min_delta": self.min_delta}

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume the tracking."""
        return {"best_value": self.best, "best_epoch": self.best_epoch, "epochs_without_improvement": self.waited}

    def restore(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best_value"), state.get("best_epoch")
        self.waited = int(state.get("epochs_without_improvement", 0) or 0)
