"""The seed's RealTimeMonitor: a summary of the last N seconds as `metrics.aggregated`."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, UTC
from dataclasses import dataclass
from typing import Any

from kbert_tui.config import option
from kbert_tui.events import catalog as ev

from ..base import PluginPort


class _Window:
    """What happened since the last summary."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.training = 0
        self.system = 0
        self.losses: list[float] = []
        self.throughput: list[float] = []
        self.cpu: list[float] = []
        self.memory: list[float] = []
        self.correlation_id: str | None = None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


class MetricsAggregatorPlugin(PluginPort):
    """Config: interval_s (5.0). Emits `metrics.aggregated` every interval in which events arrived."""

    @dataclass(frozen=True)
    class Options:
        interval_s: float = option(5.0, "seconds per metrics.aggregated summary", minimum=0.0, exclusive_min=True)

    name = "metrics_aggregator"
    version = "1.0.0"
    capabilities = ("metrics",)
    emits = ("metrics.aggregated",)

    async def initialize(self) -> None:
        self.interval_s = self.options.interval_s
        self.window = _Window()
        await self.subscribe("training.*", self._on_training)
        await self.subscribe("system.*", self._on_system)
        self.start_task(self._tick(), name=f"{self.instance_name}.tick")

    def _on_training(self, event: Any) -> None:
        w = self.window
        w.training += 1
        w.correlation_id = event.correlation_id or w.correlation_id
        if event.name == ev.TRAINING_BATCH_COMPLETED:
            data = event.data
            if data.get("loss") is not None:
                w.losses.append(float(data["loss"]))
            sps = (data.get("metrics") or {}).get("samples_per_sec")
            if sps is not None:
                w.throughput.append(float(sps))

    def _on_system(self, event: Any) -> None:
        w = self.window
        w.system += 1
        if event.name == ev.SYSTEM_CPU_USAGE and event.data.get("percent") is not None:
            w.cpu.append(float(event.data["percent"]))
        elif event.name == ev.SYSTEM_MEMORY_USAGE and event.data.get("percentage") is not None:
            w.memory.append(float(event.data["percentage"]))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Emit the summary of the current window (if anything happened) and start a new one."""
        w, self.window = self.window, _Window()
        if not (w.training or w.system):
            return
        seconds = max(time.monotonic() - w.started, 1e-6)
        await self.emit("metrics.aggregated", {
            "window_s": round(seconds, 3),
            "training_events_count": w.training,
            "system_events_count": w.system,
            "events_per_second": round((w.training + w.system) / seconds, 3),
            "loss_mean": _mean(w.losses),
            "samples_per_sec_mean": _mean(w.throughput),
            "cpu_percent_mean": _mean(w.cpu),
            "memory_percent_mean": _mean(w.memory),
            "timestamp": datetime.now(UTC).isoformat(),
        }, correlation_id=w.correlation_id)
