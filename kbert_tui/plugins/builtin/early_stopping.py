"""Stops a run when the watched metric has not improved for `patience` epochs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kbert_tui.config import option

from kbert_tui.policy import BestTracker, WatchOptions
from kbert_tui.events import catalog as ev

from ..base import PluginPort


class EarlyStoppingPlugin(PluginPort):
    """Config: metric ("val_loss"), mode ("min" for losses, else "max"), patience (3), min_delta (0.0).

    Emits `training.early_stopped` and `control.stop_requested` {reason: "early_stopping"}; the
    worker then ends the run normally (`training.completed` with `stopped_early: true`).
    """

    @dataclass(frozen=True)
    class Options(WatchOptions):
        patience: int = option(3, "epochs without improvement before stopping", minimum=1)

    name = "early_stopping"
    version = "1.0.0"
    capabilities = ("early_stopping", "control")

    async def initialize(self) -> None:
        self._reset()  # raises on a bad metric/mode/min_delta/patience: initialize() fails, plugin.error says why
        await self.subscribe("training.*", self._on_training)  # one subscription: events stay in order

    def _reset(self) -> None:
        o = self.options
        self.tracker = BestTracker.from_settings(o.metric, o.mode, o.min_delta, o.patience)
        self.stopped = False
        self._missing_reported = False

    def _on_training(self, event: Any) -> Any:
        if event.name == ev.TRAINING_EPOCH_COMPLETED:
            return self._on_epoch(event)
        if event.name == ev.TRAINING_STARTED:
            self._reset()
        return None

    async def _on_epoch(self, event: Any) -> None:
        if self.stopped:
            return
        value = self.tracker.read(event.data)
        epoch = event.data.get("epoch")
        if value is None:
            if not self._missing_reported:
                self._missing_reported = True
                known = sorted((event.data.get("metrics") or {}).keys())
                await self.emit(ev.PLUGIN_ERROR, {
                    "plugin_name": self.instance_name, "stage": "config", "fatal": False,
                    "error": f"metric {self.tracker.metric!r} is not in the epoch metrics ({', '.join(known)})",
                }, correlation_id=event.correlation_id)
            return
        if self.tracker.observe(value, epoch) is not None or not self.tracker.patience_exhausted:
            return
        self.stopped = True
        await self.emit(ev.TRAINING_EARLY_STOPPED, self.tracker.early_stop_payload(epoch, value),
                        correlation_id=event.correlation_id)
        await self.emit(ev.CONTROL_STOP_REQUESTED, {"reason": "early_stopping", "requested_by": self.source},
                        correlation_id=event.correlation_id)
