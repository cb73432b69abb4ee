"""GPU readings through NVML, behind a small interface so tests can use a fake NVML."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

_MB = 1024 * 1024


class GpuUnavailable(Exception):
    """No GPU can be read; the message is the reason shown to the user."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One device's state at one moment (memory in MB, temperature in °C, power in W)."""

    device: int
    name: str
    utilization: float
    memory_utilization: float
    memory_used: float
    memory_total: float
    temperature: float
    power_w: float | None

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else 0.0

    def as_event_data(self) -> dict[str, Any]:
        """The `system.gpu_usage` payload."""
        return {
            "device": self.device,
            "name": self.name,
            "utilization": self.utilization,
            "memory_utilization": self.memory_utilization,
            "memory_used": round(self.memory_used, 1),
            "memory_total": round(self.memory_total, 1),
            "memory_percent": round(self.memory_percent, 2),
            "temperature": self.temperature,
            "power_w": self.power_w,
        }


class GpuSource(Protocol):
    """Where GPU readings come from: `open` once (raises GpuUnavailable), `read` each sample, `close`."""

    def open(self) -> None: ...

    def read(self) -> list[GpuReading]: ...

    def close(self) -> None: ...


class NvmlGpuSource:
    """Reads every NVIDIA GPU through NVML (`nvidia-ml-py`'s `pynvml`, or any module shaped like it)."""

    def __init__(self, nvml: ModuleType | Any | None = None) -> None:
        self._nvml: Any = nvml  # the pynvml module or a stand-in with its functions (the tests')
        self._handles: list[tuple[int, str, Any]] = []
        self._opened = False

    def open(self) -> None:
        nvml = self._nvml
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise GpuUnavailable(f"nvidia-ml-py is not installed ({exc})") from exc
            nvml = self._nvml = pynvml
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError subclasses, OSError from a broken driver
            raise GpuUnavailable(f"NVML could not start: {exc}") from exc
        self._opened = True
        try:
            count = nvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                if isinstance(name, bytes):  # older bindings return bytes
                    name = name.decode(errors="replace")
                self._handles.append((index, str(name), handle))
        except Exception as exc:
            self.close()
            raise GpuUnavailable(f"NVML could not list devices: {exc}") from exc
        if not self._handles:
            self.close()
            raise GpuUnavailable("NVML found no NVIDIA GPU")

    def read(self) -> list[GpuReading]:
        nvml = self._nvml
        readings = []
        for index, name, handle in self._handles:
            util = nvml.nvmlDeviceGetUtilizationRates(handle)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            temp = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            try:
                power_w: float | None = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except Exception:  # not every board reports power
                power_w = None
            readings.append(
                GpuReading(
                    device=index,
                    name=name,
                    utilization=float(util.gpu),
                    memory_utilization=float(util.memory),
                    memory_used=mem.used / _MB,
                    memory_total=mem.total / _MB,
                    temperature=float(temp),
                    power_w=power_w,
                )
            )
        return readings

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._handles = []
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
