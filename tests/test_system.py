"""The system sampler: payloads, NVML through a fake built from real H200 readings, thresholds, shutdown."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path

import pytest

from kbert_tui.system import GpuUnavailable, NvmlGpuSource, SystemSampler, ThresholdMonitor

H200_IDLE = Path(__file__).parent / "data" / "nvml-h200-idle.json"


class FakeNvml:
    """Shaped like `pynvml`, answering from a JSON dump of real NVML readings (one sample per read)."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, dump: dict, *, fail_init: str | None = None, temps: list[float] | None = None) -> None:
        self.devices = dump["devices"]
        self.fail_init = fail_init
        self.temps = temps
        self.reads = 0
        self.initialized = False
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError(self.fail_init)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: dict) -> str:
        return handle["name"]

    def _sample(self, handle: dict) -> dict:
        return handle["samples"][self.reads % len(handle["samples"])]

    def nvmlDeviceGetUtilizationRates(self, handle: dict) -> types.SimpleNamespace:
        s = self._sample(handle)
        return types.SimpleNamespace(gpu=s["util_gpu"], memory=s["util_mem"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict) -> types.SimpleNamespace:
        s = self._sample(handle)
        return types.SimpleNamespace(used=s["mem_used"], total=s["mem_total"], free=s["mem_free"])

    def nvmlDeviceGetTemperature(self, handle: dict, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        if self.temps is not None:
            return self.temps[min(self.reads, len(self.temps) - 1)]
        return self._sample(handle)["temp_c"]

    def nvmlDeviceGetPowerUsage(self, handle: dict) -> int:
        value = self._sample(handle)["power_mw"]
        self.reads += 1  # the last call of a read
        return value


@pytest.fixture
def h200() -> dict:
    return json.loads(H200_IDLE.read_text())


async def _stop_all(sampler: SystemSampler, bus) -> None:
    await sampler.stop()
    await bus.flush()


def _others() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_one_sample_emits_each_reading_with_its_payload(recording_bus, h200, tmp_path):
    nvml = FakeNvml(h200)
    sampler = SystemSampler(recording_bus, None, tmp_path / "not-yet", correlation_id="run-1",
                            gpu_source=NvmlGpuSource(nvml))
    await sampler.start()
    await sampler.sample_once()
    await _stop_all(sampler, recording_bus)

    mem = recording_bus.assert_emitted("system.memory_usage", count=1)[0]
    assert mem.source == "system" and mem.correlation_id == "run-1"
    assert set(mem.data) >= {"used_mb", "available_mb", "percentage", "process_rss_mb"}
    assert 0 < mem.data["process_rss_mb"] < mem.data["used_mb"] + mem.data["available_mb"]
    assert 0 <= mem.data["percentage"] <= 100

    cpu = recording_bus.assert_emitted("system.cpu_usage", count=1)[0].data
    assert isinstance(cpu["per_cpu"], list) and len(cpu["per_cpu"]) == cpu["count"] >= 1
    assert 0 <= cpu["percent"] <= 100

    disk = recording_bus.assert_emitted("system.disk_usage", count=1)[0].data
    assert disk["path"] == str(tmp_path)  # the output dir does not exist yet: its existing parent
    assert disk["used_gb"] > 0 and disk["available_gb"] > 0

    gpu = recording_bus.assert_emitted("system.gpu_usage", count=1)[0].data
    sample = h200["devices"][0]["samples"][0]
    assert gpu["device"] == 0 and gpu["name"] == "NVIDIA H200"
    assert gpu["utilization"] == 0.0 and gpu["temperature"] == 39.0
    assert gpu["memory_used"] == round(sample["mem_used"] / 2**20, 1)  # MB
    assert gpu["memory_total"] == round(sample["mem_total"] / 2**20, 1)
    assert gpu["power_w"] == pytest.approx(81.834)
    assert gpu["memory_percent"] == pytest.approx(100 * sample["mem_used"] / sample["mem_total"], abs=0.01)
    recording_bus.assert_not_emitted("system.gpu_unavailable")
    assert nvml.shutdowns == 1  # stop() closed NVML


async def test_mlx_memory_only_once_the_worker_has_imported_mlx(recording_bus, tmp_path, monkeypatch):
    from kbert_tui.blas import ensure_fast_blas

    ensure_fast_blas()  # as the worker does: OpenBLAS first, then MLX (later tests train with it)
    import mlx.core as mx

    sampler = SystemSampler(recording_bus, {"gpu": False}, tmp_path)
    monkeypatch.delitem(sys.modules, "mlx.core")  # as before the worker imports it (never re-imported:
    await sampler.sample_once()                    # a second init of the extension aborts the process)
    await recording_bus.flush()
    recording_bus.assert_not_emitted("system.mlx_memory")

    monkeypatch.setitem(sys.modules, "mlx.core", mx)
    keep = mx.ones((256, 1024))  # 1 MiB of float32
    mx.eval(keep)
    await sampler.sample_once()
    await recording_bus.flush()
    data = recording_bus.assert_emitted("system.mlx_memory", count=1)[0].data
    assert set(data) == {"active_mb", "peak_mb", "cache_mb"}
    assert data["active_mb"] >= 1.0 and data["peak_mb"] >= data["active_mb"]


async def test_gpu_unavailable_once_then_quiet(recording_bus, tmp_path):
    nvml = FakeNvml({"devices": []}, fail_init="NVML Shared Library Not Found")
    sampler = SystemSampler(recording_bus, {"interval_s": 0.01}, tmp_path, gpu_source=NvmlGpuSource(nvml))
    await sampler.start()
    while sampler.samples < 3:
        await asyncio.sleep(0.01)
    await _stop_all(sampler, recording_bus)
    ev = recording_bus.assert_emitted("system.gpu_unavailable", count=1)[0]
    assert "NVML Shared Library Not Found" in ev.data["reason"]
    recording_bus.assert_not_emitted("system.gpu_usage")
    assert len(recording_bus.emitted("system.memory_usage")) >= 3


async def test_gpu_off_in_config_says_so(recording_bus, tmp_path):
    sampler = SystemSampler(recording_bus, {"gpu": False}, tmp_path)
    await sampler.start()
    await _stop_all(sampler, recording_bus)
    assert "gpu = false" in recording_bus.assert_emitted("system.gpu_unavailable", count=1)[0].data["reason"]


async def test_real_nvml_without_a_gpu_is_unavailable_not_an_error():
    source = NvmlGpuSource()  # the real pynvml: on a machine without a driver, NVML cannot start
    try:
        source.open()
    except GpuUnavailable as exc:
        assert str(exc)
    else:  # a real NVIDIA GPU is here
        readings = source.read()
        source.close()
        assert readings and readings[0].memory_total > 0


async def test_gpu_lost_mid_run_reports_once(recording_bus, h200, tmp_path):
    nvml = FakeNvml(h200)
    sampler = SystemSampler(recording_bus, {}, tmp_path, gpu_source=NvmlGpuSource(nvml))
    await sampler.start()
    await sampler.sample_once()

    def broken(handle):
        raise FakeNvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetUtilizationRates = broken
    await sampler.sample_once()
    await sampler.sample_once()
    await _stop_all(sampler, recording_bus)
    assert len(recording_bus.emitted("system.gpu_usage")) == 1
    assert "GPU is lost" in recording_bus.assert_emitted("system.gpu_unavailable", count=1)[0].data["reason"]


# ---------------------------------------------------------------- thresholds


def test_threshold_warns_once_per_crossing_with_hysteresis():
    monitor = ThresholdMonitor({("cpu", "cpu_percent"): 90.0}, hysteresis=0.1, sustain=1)
    seen = [monitor.observe("cpu", "cpu_percent", v) for v in (50, 91, 95, 89, 92, 82, 80, 93, 99)]
    kinds = [s[0] if s else None for s in seen]
    # 89 and 82 stay above 90 * (1 - 0.1) = 81: still the same crossing; 80 clears it; 93 is a new one.
    assert kinds == [None, "warning", None, None, None, None, "recovered", "warning", None]
    assert seen[1][1] == {"component": "cpu", "metric": "cpu_percent", "value": 91.0, "threshold": 90.0}


def test_threshold_sustain_ignores_single_spikes():
    monitor = ThresholdMonitor({("cpu", "cpu_percent"): 90.0}, sustain=3)
    kinds = [(monitor.observe("cpu", "cpu_percent", v) or (None,))[0] for v in (99, 10, 99, 99, 10, 99, 99, 99)]
    assert kinds == [None] * 7 + ["warning"]


def test_threshold_tracks_each_device_apart():
    monitor = ThresholdMonitor({("gpu", "gpu_temperature_c"): 85.0})
    assert monitor.observe("gpu", "gpu_temperature_c", 90, device=0)[1]["device"] == 0
    assert monitor.observe("gpu", "gpu_temperature_c", 90, device=1)[1]["device"] == 1
    assert monitor.observe("gpu", "gpu_temperature_c", 90, device=0) is None
    assert monitor.observe("disk", "disk_percent", 100) is None  # not watched


async def test_sampler_turns_a_hot_gpu_into_one_warning_and_one_recovery(recording_bus, h200, tmp_path):
    temps = [39, 86, 88, 87, 84, 83, 70, 86]
    nvml = FakeNvml(h200, temps=temps)
    config = {"thresholds": {"gpu_temperature_c": 85, "cpu_percent": 100.1, "memory_percent": 100.1,
                             "disk_percent": 100.1},
              "sustain_samples": 1}
    sampler = SystemSampler(recording_bus, config, tmp_path, correlation_id="r", gpu_source=NvmlGpuSource(nvml))
    await sampler.start()
    for _ in temps:
        await sampler.sample_once()
    await _stop_all(sampler, recording_bus)
    warnings = recording_bus.assert_emitted("system.performance_warning", count=2)
    assert warnings[0].data == {"component": "gpu", "metric": "gpu_temperature_c", "value": 86.0,
                                "threshold": 85.0, "device": 0}
    recovered = recording_bus.assert_emitted("system.performance_recovered", count=1)[0]
    assert recovered.data["value"] == 70.0  # 84 and 83 are inside the 5% band under 85
    recording_bus.assert_order("system.performance_warning", "system.performance_recovered",
                               "system.performance_warning")


async def test_thresholds_come_from_the_config_dataclass(recording_bus, tmp_path):
    from kbert_tui.config import SystemSection, SystemThresholds

    section = SystemSection(interval_s=0.5, thresholds=SystemThresholds(memory_percent=0.0))
    sampler = SystemSampler(recording_bus, section, tmp_path)
    assert sampler.interval_s == 0.5 and sampler.thresholds["memory_percent"] == 0.0
    sampler.monitor.sustain = 1
    await sampler.sample_once()
    await recording_bus.flush()
    recording_bus.assert_emitted("system.performance_warning", count=1, component="memory",
                                 metric="memory_percent", threshold=0.0)


# ---------------------------------------------------------------- lifecycle


async def test_stop_leaves_no_task_running(recording_bus, tmp_path):
    before = set(_others())
    sampler = SystemSampler(recording_bus, {"interval_s": 0.01, "gpu": False}, tmp_path)
    await sampler.start()
    assert sampler.running
    await asyncio.sleep(0.05)
    await sampler.stop()
    await sampler.stop()  # idempotent
    await recording_bus.flush()
    assert not sampler.running
    assert [t for t in _others() if t not in before and not t.done()] == []
    count = len(recording_bus.emitted("system.cpu_usage"))
    assert count >= 2
    await asyncio.sleep(0.05)
    await recording_bus.flush()
    assert len(recording_bus.emitted("system.cpu_usage")) == count  # nothing after stop


async def test_a_failing_probe_is_reported_once_and_the_rest_go_on(recording_bus, tmp_path, monkeypatch):
    sampler = SystemSampler(recording_bus, {"gpu": False}, tmp_path)

    def broken(path):
        raise OSError("stale NFS handle")

    monkeypatch.setattr("kbert_tui.system.sampler.psutil.disk_usage", broken)
    await sampler.sample_once()
    await sampler.sample_once()
    await recording_bus.flush()
    err = recording_bus.assert_emitted("system.sampler_error", count=1)[0].data
    assert err == {"probe": "disk", "error": "OSError: stale NFS handle"}
    assert len(recording_bus.emitted("system.memory_usage")) == 2


def test_system_section_from_toml_reaches_the_sampler(tmp_path, recording_bus):
    from kbert_tui.config import ConfigError, load_config

    path = tmp_path / "run.toml"
    path.write_text("[system]\ninterval_s = 0.25\ngpu = false\nhysteresis = 0.1\nsustain_samples = 2\n"
                    "[system.thresholds]\ncpu_percent = 80\ndata_load_share = 0.3\n")
    config = load_config(path)
    sampler = SystemSampler(recording_bus, config.system, tmp_path)
    assert sampler.interval_s == 0.25 and not sampler.gpu_enabled
    assert sampler.monitor.hysteresis == 0.1 and sampler.monitor.sustain == 2
    assert sampler.monitor.limits[("cpu", "cpu_percent")] == 80.0
    assert sampler.detector.settings.data_load_share == 0.3

    path.write_text("[system]\nsustain_samples = 0\n")
    with pytest.raises(ConfigError, match=r"system\.sustain_samples: expected an integer >= 1"):
        load_config(path)
    path.write_text("[system.thresholds]\ncpu = 80\n")
    with pytest.raises(ConfigError, match=r"system\.thresholds\.cpu: unknown key"):
        load_config(path)


async def test_after_the_run_ends_the_sampler_slows_down_and_picks_up_again_with_a_new_run(recording_bus, tmp_path):
    sampler = SystemSampler(recording_bus, {"interval_s": 0.01, "gpu": False}, tmp_path)
    sampler.idle_interval_s = 0.3
    await sampler.start()
    await asyncio.sleep(0.15)
    await recording_bus.emit("training.completed", {})
    await recording_bus.flush()
    before = len(recording_bus.emitted("system.cpu_usage"))
    await asyncio.sleep(0.25)
    after_end = len(recording_bus.emitted("system.cpu_usage")) - before
    assert after_end <= 2  # ~25 at the running rate
    await recording_bus.emit("training.started", {})
    await asyncio.sleep(0.5)  # the pending idle wait ends, then the running rate again
    await sampler.stop()
    assert len(recording_bus.emitted("system.cpu_usage")) - before - after_end >= 5
