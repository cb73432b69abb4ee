"""Stops a run when the watched metric has not improved for `patience` epochs."""

from __future__ import annotations

from typing import Any

from ..base import PluginPort
from ._metric import WatchedMetric


class EarlyStoppingPlugin(PluginPort):
    """Config: metric ("val_loss"), mode ("min" for losses, else "max"), patience (3), min_delta (0.0).

    Emits `training.early_stopped` and `control.stop_requested` {reason: "early_stopping"}; the
    worker then ends the run normally (`training.completed` with `stopped_early: true`).
    """

    name = "early_stopping"
    version = "1.0.0"
    capabilities = ("early_stopping", "control")

    async def initialize(self) -> None:
        self.watch = WatchedMetric.from_config(self.config)
        self.patience = int(self.config.get("patience", 3))
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        self._reset()
        await self.subscribe("training.*", self._on_training)  # one subscription: events stay in order

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.waited = 0
        self.stopped = False
        self._missing_reported = False

    def _on_training(self, event: Any) -> Any:
        if event.name == "training.epoch_completed":
            return self._on_epoch(event)
        if event.name == "training.started":
            self._reset()
        return None

    async def _on_epoch(self, event: Any) -> None:
        if self.stopped:
            return
        value = self.watch.read(event.data)
        epoch = event.data.get("epoch")
        if value is None:
            if not self._missing_reported:
                self._missing_reported = True
                known = sorted((event.data.get("metrics") or {}).keys())
                await self.emit("plugin.error", {
                    "plugin_name": self.instance_name, "stage": "config", "fatal": False,
                    "error": f"metric {self.watch.metric!r} is not in the epoch metrics ({', '.join(known)})",
                }, correlation_id=event.correlation_id)
            return
        if self.watch.improves(value, self.best):
            self.best, self.best_epoch, self.waited = value, epoch, 0
            return
        self.waited += 1
        if self.waited < self.patience:
            return
        self.stopped = True
        await self.emit("training.early_stopped", {
            "epoch": epoch, "metric": self.watch.metric, "value": value, "best_value": self.best,
            "best_epoch": self.best_epoch, "patience": self.patience, "min_delta": self.watch.min_delta,
            "reason": "early_stopping",
        }, correlation_id=event.correlation_id)
        await self.emit("control.stop_requested", {"reason": "early_stopping", "requested_by": self.source},
                        correlation_id=event.correlation_id)
