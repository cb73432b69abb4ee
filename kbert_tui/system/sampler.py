"""The system sampler: host, disk, MLX and GPU readings on the event loop, every `interval_s`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import psutil

from kbert_tui.config import SystemSection, SystemThresholds
from kbert_tui.events import catalog as ev

from .bottleneck import BottleneckDetector, DetectorSettings
from .gpu import GpuSource, GpuUnavailable, NvmlGpuSource
from .thresholds import ThresholdMonitor

_RUN_ENDS = frozenset({ev.TRAINING_COMPLETED, ev.TRAINING_FAILED, ev.TRAINING_STOPPED})
_MB = 1024 * 1024
_GB = 1024 * 1024 * 1024

# The defaults of [system] and [system.thresholds], as kbert_tui.config declares them.
DEFAULT_THRESHOLDS = dataclasses.asdict(SystemThresholds())
# (component, metric) each threshold key watches.
_WATCHED = {
    "cpu_percent": ("cpu", "cpu_percent"),
    "memory_percent": ("memory", "memory_percent"),
    "disk_percent": ("disk", "disk_percent"),
    "gpu_memory_percent": ("gpu", "gpu_memory_percent"),
    "gpu_temperature_c": ("gpu", "gpu_temperature_c"),
}


def _section(config: SystemSection | dict[str, Any] | None) -> SystemSection:
    """`[system]` as declared in kbert_tui.config; a dict overrides some of its keys (tests, scripts)."""
    if config is None:
        return SystemSection()
    if isinstance(config, dict):
        given = dict(config)
        thresholds = given.pop("thresholds", None) or {}
        if isinstance(thresholds, dict):
            thresholds = SystemThresholds(**{k: float(v) for k, v in thresholds.items()})
        return SystemSection(**given, thresholds=thresholds)
    return config


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent (the output dir may not exist yet)."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


class SystemSampler:
    """Emits `system.*` readings on the bus's loop; warns on thresholds; runs the bottleneck detector.

    `config` is the `[system]` section (`RunConfig.system`), a dict with the same keys, or None for
    the defaults. MLX memory is read only once the training worker has imported `mlx.core` (the
    sampler never imports it, so the worker can load OpenBLAS first).
    """

    def __init__(
        self,
        bus: Any,
        config: Any = None,
        output_dir: str | os.PathLike[str] = ".",
        *,
        correlation_id: str | None = None,
        gpu_source: GpuSource | None = None,
        detector: BottleneckDetector | None = None,
        pid: int | None = None,
    ) -> None:
        self.bus = bus
        section = _section(config)
        self.interval_s = float(section.interval_s)
        self.gpu_enabled = bool(section.gpu)
        self.correlation_id = correlation_id
        self.disk_path = Path(output_dir)
        thresholds = dataclasses.asdict(section.thresholds)
        self.thresholds = thresholds
        self.monitor = ThresholdMonitor(
            {_WATCHED[k]: v for k, v in thresholds.items() if k in _WATCHED},
            hysteresis=float(section.hysteresis),
            sustain=int(section.sustain_samples),
        )
        self.detector = detector or BottleneckDetector(
            DetectorSettings(data_load_share=thresholds["data_load_share"])
        )
        self._gpu = gpu_source if gpu_source is not None else (NvmlGpuSource() if self.gpu_enabled else None)
        self._gpu_open = False
        self._process = psutil.Process(pid)  # `pid`: another process's CPU and memory (`kbert-tui watch`'s child)
        self._task: asyncio.Task[None] | None = None
        self._reported: set[str] = set()
        self.samples = 0
        self.idle_interval_s = max(10.0, 10 * self.interval_s)  # once training has ended
        self._training_ended = False
        self._sub_id: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open NVML, attach the detector and start sampling; the first sample comes one interval later."""
        if self._task is not None:
            return
        # Prime the CPU counters: psutil's non-blocking cpu_percent compares with the previous call.
        psutil.cpu_percent(percpu=True)
        self._process.cpu_percent()
        if self._gpu is None:
            await self._emit(ev.SYSTEM_GPU_UNAVAILABLE, {"reason": "GPU sampling is off ([system] gpu = false)"})
        else:
            try:
                await asyncio.to_thread(self._gpu.open)  # the first NVML call can take tens of ms
                self._gpu_open = True
            except GpuUnavailable as exc:
                self._gpu = None
                await self._emit(ev.SYSTEM_GPU_UNAVAILABLE, {"reason": str(exc)})
        await self.detector.attach(self.bus)
        self._sub_id = await self.bus.subscribe("training.*", self._on_training)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kbert_tui.system.sampler")

    def _on_training(self, event: Any) -> None:
        # After the run the machine's readings matter less than the run's last events: sample rarely.
        if event.name in _RUN_ENDS:
            self._training_ended = True
        elif event.name == ev.TRAINING_STARTED:
            self._training_ended = False

    async def stop(self) -> None:
        """Stop sampling, detach the detector and close NVML; idempotent."""
        task, self._task = self._task, None
        if self._sub_id is not None:
            await self.bus.unsubscribe(self._sub_id)
            self._sub_id = None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await self.detector.detach()
        if self._gpu is not None and self._gpu_open:
            self._gpu_open = False
            self._gpu.close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            # CPU percentages compare with the previous reading, so the first one waits an interval.
            next_at += self.idle_interval_s if self._training_ended else self.interval_s
            now = loop.time()
            if next_at < now:  # fell behind (a suspended laptop, a stalled loop): don't burst
                next_at = now
            await asyncio.sleep(next_at - now)
            await self.sample_once()

    # ------------------------------------------------------------------ sampling
    async def sample_once(self) -> None:
        """Take one reading of everything and emit it."""
        self.samples += 1
        for probe in (self._memory, self._cpu, self._disk, self._mlx):
            try:
                reading = probe()
            except Exception as exc:  # a probe failing must not stop the others
                await self._report_once(f"probe:{probe.__name__}", ev.SYSTEM_SAMPLER_ERROR,
                                        {"probe": probe.__name__.lstrip("_"), "error": f"{type(exc).__name__}: {exc}"})
                continue
            if reading is not None:
                name, data, checks = reading
                await self._emit(name, data)
                for component, metric, value in checks:
                    await self._check(component, metric, value)
        if self._gpu is not None and self._gpu_open:
            await self._sample_gpu()

    def _memory(self) -> tuple[str, dict[str, Any], list[tuple[str, str, float]]]:
        vm = psutil.virtual_memory()
        rss = self._process.memory_info().rss
        data = {
            "used_mb": round((vm.total - vm.available) / _MB, 1),
            "available_mb": round(vm.available / _MB, 1),
            "total_mb": round(vm.total / _MB, 1),
            "percentage": vm.percent,
            "process_rss_mb": round(rss / _MB, 1),
        }
        return ev.SYSTEM_MEMORY_USAGE, data, [("memory", "memory_percent", vm.percent)]

    def _cpu(self) -> tuple[str, dict[str, Any], list[tuple[str, str, float]]]:
        per_cpu = psutil.cpu_percent(percpu=True)
        percent = round(sum(per_cpu) / len(per_cpu), 1) if per_cpu else 0.0
        data = {
            "percent": percent,
            "per_cpu": per_cpu,
            "process_percent": self._process.cpu_percent(),
            "count": len(per_cpu),
        }
        return ev.SYSTEM_CPU_USAGE, data, [("cpu", "cpu_percent", percent)]

    def _disk(self) -> tuple[str, dict[str, Any], list[tuple[str, str, float]]]:
        path = _existing(self.disk_path)
        du = psutil.disk_usage(str(path))
        data = {
            "used_gb": round(du.used / _GB, 2),
            "available_gb": round(du.free / _GB, 2),
            "total_gb": round(du.total / _GB, 2),
            "percentage": du.percent,
            "path": str(path),
        }
        return ev.SYSTEM_DISK_USAGE, data, [("disk", "disk_percent", du.percent)]

    def _mlx(self) -> tuple[str, dict[str, Any], list[tuple[str, str, float]]] | None:
        mx = sys.modules.get("mlx.core")
        if mx is None or not hasattr(mx, "get_cache_memory"):  # not imported yet, or mid-import in the worker
            return None
        if self._process.pid != os.getpid():
            return None  # MLX's counters are this process's, not the sampled one's
        data = {
            "active_mb": round(mx.get_active_memory() / _MB, 2),
            "peak_mb": round(mx.get_peak_memory() / _MB, 2),
            "cache_mb": round(mx.get_cache_memory() / _MB, 2),
        }
        return ev.SYSTEM_MLX_MEMORY, data, []

    async def _sample_gpu(self) -> None:
        assert self._gpu is not None
        try:
            readings = self._gpu.read()
        except Exception as exc:  # the GPU fell off the bus, the driver went away
            self._gpu.close()
            self._gpu, self._gpu_open = None, False
            await self._emit(ev.SYSTEM_GPU_UNAVAILABLE, {"reason": f"NVML read failed: {type(exc).__name__}: {exc}"})
            return
        for reading in readings:
            await self._emit(ev.SYSTEM_GPU_USAGE, reading.as_event_data())
            await self._check("gpu", "gpu_memory_percent", reading.memory_percent, device=reading.device)
            await self._check("gpu", "gpu_temperature_c", reading.temperature, device=reading.device)

    async def _check(self, component: str, metric: str, value: float, *, device: Any = None) -> None:
        change = self.monitor.observe(component, metric, value, device=device)
        if change is not None:
            kind, payload = change
            name = ev.SYSTEM_PERFORMANCE_WARNING if kind == "warning" else ev.SYSTEM_PERFORMANCE_RECOVERED
            await self._emit(name, payload)

    async def _report_once(self, key: str, name: str, data: dict[str, Any]) -> None:
        if key not in self._reported:
            self._reported.add(key)
            await self._emit(name, data)

    async def _emit(self, name: str, data: dict[str, Any]) -> None:
        await self.bus.emit(name, data, source="system", correlation_id=self.correlation_id)
