"""System monitoring: host, disk, MLX and GPU readings, threshold warnings, bottleneck detection."""

from .bottleneck import BottleneckDetector, DetectorSettings
from .gpu import GpuReading, GpuSource, GpuUnavailable, NvmlGpuSource
from .sampler import DEFAULT_THRESHOLDS, SystemSampler
from .thresholds import ThresholdMonitor

__all__ = [
    "DEFAULT_THRESHOLDS",
    "BottleneckDetector",
    "DetectorSettings",
    "GpuReading",
    "GpuSource",
    "GpuUnavailable",
    "NvmlGpuSource",
    "SystemSampler",
    "ThresholdMonitor",
]
