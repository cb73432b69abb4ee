"""Reading a "metric to watch" setting the same way in every built-in that tracks a best value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WatchedMetric:
    """A metric, which way is better, and by how much a value must beat the best to count."""

    metric: str
    mode: str
    min_delta: float

    @classmethod
    def from_config(cls, config: dict[str, Any], default_metric: str = "val_loss") -> WatchedMetric:
        metric = str(config.get("metric", default_metric))
        mode = str(config.get("mode", "min" if "loss" in metric else "max"))
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be \"min\" or \"max\", got {mode!r}")
        min_delta = float(config.get("min_delta", 0.0))
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        return cls(metric, mode, min_delta)

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` beats `best` by more than min_delta (any value beats no best)."""
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def read(self, data: dict[str, Any]) -> float | None:
        """The metric from an event's `metrics` dict (or its top level), or None."""
        metrics = data.get("metrics") or {}
        value = metrics.get(self.metric, data.get(self.metric))
        return None if value is None else float(value)
