"""Announces each new best value of a metric as `training.new_best_model`."""

from __future__ import annotations

from typing import Any

from ..base import PluginPort
from ._metric import WatchedMetric


class BestModelPlugin(PluginPort):
    """Config: metric ("val_loss"), mode ("min" for losses, else "max"), min_delta (0.0).

    Watches `training.evaluation_completed` and `training.epoch_completed`; emits
    `training.new_best_model` {epoch, step, metric, value, previous} when the metric improves.
    """

    name = "best_model"
    version = "1.0.0"
    capabilities = ("best_model",)

    async def initialize(self) -> None:
        self.watch = WatchedMetric.from_config(self.config)
        self._reset()
        # One subscription keeps the run's events in order (the step of a result comes from the batches).
        await self.subscribe("training.*", self._on_training)

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.step: int | None = None

    def _on_training(self, event: Any) -> Any:
        """Plain function: only a result needs a coroutine (the cheap path for every batch)."""
        if event.name == "training.batch_completed":
            self.step = event.data.get("step", self.step)
        elif event.name in ("training.evaluation_completed", "training.epoch_completed"):
            return self._on_result(event)
        elif event.name == "training.started":
            self._reset()
        return None

    async def _on_result(self, event: Any) -> None:
        value = self.watch.read(event.data)
        if value is None or not self.watch.improves(value, self.best):
            return
        previous, self.best = self.best, value
        self.best_epoch = event.data.get("epoch")
        await self.emit("training.new_best_model", {
            "epoch": self.best_epoch, "step": event.data.get("step", self.step),
            "metric": self.watch.metric, "value": value, "previous": previous,
        }, correlation_id=event.correlation_id)
