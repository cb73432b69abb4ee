"""Opening runs to compare: 10 run logs of 100k events each, read into RunRecords (the issue asks <= 3 s).

    python benchmarks/bench_compare.py               # 10 runs x 100k events, 5 repeats
    python benchmarks/bench_compare.py --runs 3 --events 20000 --repeats 3

The logs are written once by the project's codec from `simulate_run` (training, data, model, system
and plugin events in a real run's proportions: ~43% training.batch_completed), each with its own
learning rate, into a temporary folder; the first rotated segment of each is split off, so the
rotated-set path is timed too. Figures, medians over --repeats (the machine is shared, timings are noisy):

- load: `load_run` on each log in turn, as `kbert-tui compare` does before it shows anything (wall
  and CPU seconds: on a shared machine the CPU time says what the work costs);
- table: `compare_table` over the loaded runs;
- decode-all: the same files with every line decoded by `read_events` (the general reader), side by
  side, to show what skipping non-training lines saves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # simulate.py: a test helper, not shipped

from kbert_tui.events._codec import encode_event  # noqa: E402
from kbert_tui.events.store import read_events  # noqa: E402
from kbert_tui.state.compare import compare_table, label_runs, load_run  # noqa: E402
from simulate import SIM_START, simulate_run  # noqa: E402


def write_runs(folder: Path, runs: int, events: int) -> list[Path]:
    paths = []
    # simulate_run yields ~2.3 events per step with system_every=4: at least `events` per run
    steps = max(10, int(events / 2.28) // 10 * 10 + 10)
    for i in range(runs):
        run_dir = folder / f"lr-{i}"
        run_dir.mkdir()
        lines = []
        for event in simulate_run(epochs=10, steps_per_epoch=steps // 10, run_id=f"run-{i}", run_name=f"lr-{i}",
                                  start=SIM_START + timedelta(hours=i)):
            if event.name == "training.started":
                event.data["config"]["training"]["learning_rate"] = 1e-4 * (i + 1)
            lines.append(encode_event(event))
        cut = len(lines) // 3
        (run_dir / "events.1.jsonl").write_text("".join(lines[:cut]))
        (run_dir / "events.jsonl").write_text("".join(lines[cut:]))
        paths.append(run_dir / "events.jsonl")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_runs(Path(tmp), args.runs, args.events)
        size = sum(p.stat().st_size + p.with_name("events.1.jsonl").stat().st_size for p in paths)
        print(f"wrote {args.runs} runs x {args.events:,} events ({size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        loads, cpus, tables, full = [], [], [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            records = [load_run(p) for p in paths]
            label_runs(records)
            loads.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            t0 = time.perf_counter()
            table = compare_table(records)
            tables.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for p in paths:
                for _ in read_events(p):
                    pass
            full.append(time.perf_counter() - t0)
        counted = sum(r.events for r in records)
        assert counted >= args.runs * args.events, counted
        assert "training.learning_rate" in table.header
        load, decode = statistics.median(loads), statistics.median(full)
        print(f"load {args.runs} runs ({counted:,} events): median {load:.2f} s "
              f"(min {min(loads):.2f}, max {max(loads):.2f}; {counted / load:,.0f} events/s)")
        print(f"  CPU time of that load: median {statistics.median(cpus):.2f} s (what it costs without "
              f"contention; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print(f"compare_table: median {statistics.median(tables) * 1000:.1f} ms")
        print(f"decode-all (read_events): median {decode:.2f} s; load is {decode / load:.1f}x faster")
        print("target: <= 3 s for 10 runs x 100k events:", "met" if load <= 3.0 else "NOT met")


if __name__ == "__main__":
    main()
