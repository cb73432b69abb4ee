"""Announces each new best value of a metric as `training.new_best_model`."""

from __future__ import annotations

from typing import Any

from kbert_tui.events import catalog as ev
from kbert_tui.policy import BestTracker, WatchOptions

from ..base import PluginPort


class BestModelPlugin(PluginPort):
    """Config: metric ("val_loss"), mode ("min" for losses, else "max"), min_delta (0.0).

    Watches `training.evaluation_completed` and `training.epoch_completed`; emits
    `training.new_best_model` {epoch, step, metric, value, previous, mode} when the metric improves
    (kbert_tui.policy decides, as for the trainer's own `[training.early_stopping]` tracking).
    """

    Options = WatchOptions

    name = "best_model"
    version = "1.0.0"
    capabilities = ("best_model",)

    async def initialize(self) -> None:
        self._reset()
        # One subscription keeps the run's events in order (the step of a result comes from the batches).
        await self.subscribe("training.*", self._on_training)

    def _reset(self) -> None:
        o = self.options
        self.tracker = BestTracker.from_settings(o.metric, o.mode, o.min_delta)
        self.step: int | None = None

    @property
    def best(self) -> float | None:
        return self.tracker.best

    def _on_training(self, event: Any) -> Any:
        """Plain function: only a result needs a coroutine (the cheap path for every batch)."""
        if event.name == ev.TRAINING_BATCH_COMPLETED:
            self.step = event.data.get("step", self.step)
        elif event.name in (ev.TRAINING_EVALUATION_COMPLETED, ev.TRAINING_EPOCH_COMPLETED):
            return self._on_result(event)
        elif event.name == ev.TRAINING_STARTED:
            self._reset()
        return None

    async def _on_result(self, event: Any) -> None:
        value = self.tracker.read(event.data)
        if value is None or not self.tracker.improves(value):
            return
        better = self.tracker.observe(value, event.data.get("epoch"))
        assert better is not None
        await self.emit(ev.TRAINING_NEW_BEST_MODEL, {
            "epoch": self.tracker.best_epoch, "step": event.data.get("step", self.step),
            "metric": better.metric, "value": better.value, "previous": better.previous, "mode": better.mode,
        }, correlation_id=event.correlation_id)
