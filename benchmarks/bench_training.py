"""What does watching a run cost? The same training with the bus, persistence and monitoring on vs off.

    .venv/bin/python benchmarks/bench_training.py [--repeats 3] [--epochs 1] [--openblas-off]

"off": the Trainer emits into a bus that drops everything. "on": a full RunSession — the EventBus
on an asyncio loop, the JSONL log, the system sampler and plugins (whatever the session starts), and
a subscriber that reads every event. Runs alternate off/on; the figure is the median over repeats.
Time per step is the median wall time between consecutive training.batch_completed emits, taken
in the worker thread: it includes building the batch, the step, every emit and any contention from
the loop thread (persistence, handlers, sampler), and leaves out the epoch-end validation spike.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Clock:
    """Wraps a bus; notes when training starts and ends, in the emitting (worker) thread."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ticks: list[float] = []
        self.cpu: list[float] = []

    def emit_sync(self, name: str, data: dict[str, Any], **kw: Any) -> None:
        if name == "training.batch_completed":
            self.ticks.append(time.perf_counter())
            self.cpu.append(time.process_time())
        if self.inner is not None:
            self.inner.emit_sync(name, data, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def ms_per_step(self) -> float:
        """Median wall time between consecutive steps: emits and loop contention included, eval spikes not."""
        gaps = [(b - a) * 1000 for a, b in zip(self.ticks, self.ticks[1:], strict=False)]
        return statistics.median(gaps)

    def cpu_ms_per_step(self) -> float:
        """Median CPU time of the whole process (all threads) per step: less sensitive to other processes."""
        gaps = [(b - a) * 1000 for a, b in zip(self.cpu, self.cpu[1:], strict=False)]
        return statistics.median(gaps)


def run_off(config: Any, out: Path) -> tuple[float, float]:
    from kbert_tui.training import Trainer

    clock = _Clock(None)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(
        Trainer(config, clock, run_id="bench-off", output_dir=out).run()))
    thread.start()
    thread.join()
    assert result == ["completed"], result
    return clock.ms_per_step(), clock.cpu_ms_per_step()


def run_on(config: Any, out: Path) -> tuple[float, float, int]:
    from kbert_tui.session import RunSession
    from kbert_tui.training import worker as worker_module

    seen = [0]
    original = worker_module.Trainer
    holder: dict[str, _Clock] = {}

    class TimedTrainer(original):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any, bus: Any, **kw: Any) -> None:
            holder["clock"] = _Clock(bus)
            super().__init__(config, holder["clock"], **kw)

    async def go() -> str:
        session = RunSession(config, output_dir=out)
        worker_module.Trainer = TimedTrainer
        try:
            await session.start()
        finally:
            worker_module.Trainer = original
        await session.bus.subscribe("*", lambda event: seen.__setitem__(0, seen[0] + 1))
        outcome = await session.wait()
        await session.close()
        return outcome

    assert asyncio.run(go()) == "completed"
    return holder["clock"].ms_per_step(), holder["clock"].cpu_ms_per_step(), seen[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--openblas-off", action="store_true", help="measure with MLX's bundled BLAS")
    args = parser.parse_args()
    if args.openblas_off:
        os.environ["KBERT_TUI_BLAS"] = "off"

    from kbert_tui.config import default_config
    from kbert_tui.training import BLAS

    base = default_config()
    config = base.replace(training=dataclasses.replace(base.training, epochs=args.epochs, eval_every=0,
                                                       checkpoint=dataclasses.replace(base.training.checkpoint,
                                                                                      policy="none")))
    batch = config.data.batch_size
    print(f"BLAS: {BLAS.name} ({BLAS.path or 'bundled'}); model {config.model.hidden_size}x{config.model.num_layers}, "
          f"batch {batch}, {args.epochs} epoch(s) of the demo data, {args.repeats} repeats each")
    off, on, off_cpu, on_cpu, events = [], [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("KBERT_TUI_CACHE_DIR", str(Path(tmp) / "cache"))
        run_off(dataclasses.replace(config, training=dataclasses.replace(config.training, epochs=1)),
                Path(tmp) / "warm")
        for i in range(args.repeats):
            ms, cpu = run_off(config, Path(tmp) / f"off{i}")
            off.append(ms)
            off_cpu.append(cpu)
            ms, cpu, events = run_on(config, Path(tmp) / f"on{i}")
            on.append(ms)
            on_cpu.append(cpu)
            print(f"  repeat {i + 1}: off {off[-1]:.2f} ms/step ({off_cpu[-1]:.1f} CPU ms)   "
                  f"on {on[-1]:.2f} ms/step ({on_cpu[-1]:.1f} CPU ms)   ({events} events)")
    m_off, m_on = statistics.median(off), statistics.median(on)
    c_off, c_on = statistics.median(off_cpu), statistics.median(on_cpu)
    print(f"off: {m_off:.2f} ms/step, {batch * 1000 / m_off:.0f} samples/s, {c_off:.1f} CPU ms/step")
    print(f"on:  {m_on:.2f} ms/step, {batch * 1000 / m_on:.0f} samples/s, {c_on:.1f} CPU ms/step "
          f"({events} events per run)")
    print(f"overhead of bus + persistence + monitoring: {(m_on - m_off) / m_off * 100:+.2f} % wall, "
          f"{(c_on - c_off) / c_off * 100:+.2f} % CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
