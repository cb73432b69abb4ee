"""What the system sampler costs: CPU time per sample, and share of one core at the default interval.

    .venv/bin/python benchmarks/bench_system.py [--samples 2000] [--seconds 10] [--nvml fake|real|off] [--show]

`--nvml real --show` on a GPU machine also prints one sample's events as JSON (a check of the NVML path).

Three measurements, all with a persisting EventBus (each reading goes to a JSONL file, as in a run):
  1. per sample: `sample_once()` back to back, process CPU time / samples (the sampler's own code,
     psutil, MLX memory, NVML, and the bus's emit + JSONL write of its 4-5 events);
  2. live: the sampler on its loop at the real interval (default 1 s) for --seconds, process CPU time
     over wall time, minus an idle loop measured the same way;
  3. the budget: issue 4 allows 1% of one core at the default interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mlx.core as mx  # noqa: E402  (the sampler reads MLX memory once the worker has imported it)

from kbert_tui.events import EventBus  # noqa: E402
from kbert_tui.system import NvmlGpuSource, SystemSampler  # noqa: E402


class ReplayNvml:
    """A pynvml stand-in answering from real H200 readings (tests/data/nvml-h200-idle.json)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, path: Path) -> None:
        self.devices = json.loads(path.read_text())["devices"]
        self.i = 0

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return len(self.devices)
    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict: return self.devices[i]
    def nvmlDeviceGetName(self, h: dict) -> str: return h["name"]

    def _s(self, h: dict) -> dict:
        return h["samples"][self.i % len(h["samples"])]

    def nvmlDeviceGetUtilizationRates(self, h: dict) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=self._s(h)["util_gpu"], memory=self._s(h)["util_mem"])

    def nvmlDeviceGetMemoryInfo(self, h: dict) -> types.SimpleNamespace:
        s = self._s(h)
        return types.SimpleNamespace(used=s["mem_used"], total=s["mem_total"], free=s["mem_free"])

    def nvmlDeviceGetTemperature(self, h: dict, sensor: int) -> int: return self._s(h)["temp_c"]

    def nvmlDeviceGetPowerUsage(self, h: dict) -> int:
        self.i += 1
        return self._s(h)["power_mw"]


def gpu_source(kind: str):
    if kind == "fake":
        return NvmlGpuSource(ReplayNvml(ROOT / "tests" / "data" / "nvml-h200-idle.json"))
    if kind == "real":
        return NvmlGpuSource()
    return None


async def per_sample(samples: int, nvml: str, out: Path) -> tuple[float, int]:
    bus = EventBus(enable_persistence=True, persistence_path=str(out / "per-sample.jsonl"))
    sampler = SystemSampler(bus, {"gpu": nvml != "off"}, out, gpu_source=gpu_source(nvml))
    await sampler.start()
    for _ in range(20):  # warm caches and the log file
        await sampler.sample_once()
    await bus.flush()
    metrics = await bus.get_metrics()
    before_events = metrics.total_events
    cpu0 = time.process_time()
    for _ in range(samples):
        await sampler.sample_once()
    await bus.flush()
    cpu = time.process_time() - cpu0
    events = (await bus.get_metrics()).total_events - before_events
    await sampler.stop()
    await bus.shutdown()
    return cpu / samples, events // samples


async def live(seconds: float, nvml: str, out: Path, *, with_sampler: bool) -> tuple[float, int]:
    bus = EventBus(enable_persistence=True, persistence_path=str(out / f"live-{with_sampler}.jsonl"))
    sampler = SystemSampler(bus, {"gpu": nvml != "off"}, out, gpu_source=gpu_source(nvml))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if with_sampler:
        await sampler.start()
    await asyncio.sleep(seconds)
    if with_sampler:
        await sampler.stop()
    await bus.flush()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await bus.shutdown()
    return cpu / wall, sampler.samples


async def show(nvml: str) -> None:
    from kbert_tui.events.testing import RecordingBus

    bus = RecordingBus()
    t0 = time.perf_counter()
    sampler = SystemSampler(bus, {"gpu": nvml != "off"}, ROOT, gpu_source=gpu_source(nvml))
    await sampler.start()
    opened = time.perf_counter() - t0
    await asyncio.sleep(3.2)  # three samples at the default 1 s interval
    await sampler.stop()
    await bus.flush()
    print(f"start (NVML init) {opened * 1e3:.1f} ms")
    for event in bus.events:
        print(json.dumps({"name": event.name, "data": event.data}))
    bus.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--nvml", choices=("fake", "real", "off"), default="fake")
    parser.add_argument("--show", action="store_true", help="print one sample's events as JSON first")
    args = parser.parse_args()
    if args.show:
        await show(args.nvml)
    keep = mx.ones((1024, 1024))
    mx.eval(keep)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cost, per = await per_sample(args.samples, args.nvml, out)
        idle, _ = await live(args.seconds, args.nvml, out, with_sampler=False)
        busy, taken = await live(args.seconds, args.nvml, out, with_sampler=True)

    interval = 1.0
    print(f"nvml={args.nvml}  python {sys.version.split()[0]}")
    print(f"per sample ({args.samples} back to back): {cost * 1e3:.3f} ms CPU, {per} events/sample")
    print(f"  => at the default {interval:g} s interval: {cost / interval * 100:.3f}% of one core")
    print(f"live {args.seconds:g} s at {interval:g} s ({taken} samples): process CPU {busy * 100:.3f}% of a core, "
          f"idle loop {idle * 100:.3f}% => sampler {max(busy - idle, 0.0) * 100:.3f}%")
    verdict = "within" if max(cost / interval, busy - idle) <= 0.01 else "OVER"
    print(f"budget 1% of one core: {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
