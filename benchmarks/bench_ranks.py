"""Is training on 2 ranks faster? The built-in demo (same global batch) on 1 rank vs 2 ranks through `mlx.launch`.

    .venv/bin/python benchmarks/bench_ranks.py [--repeats 3] [--epochs 1]

Contenders, run alternately, each `kbert-tui run --headless` in its own process(es):
  1 rank × 1 BLAS thread, 1 rank × 2 BLAS threads, 2 ranks × 1 BLAS thread (`mlx.launch -n 2 --backend ring`).
From rank 0's log: ms/step is the median wall time between consecutive training.batch_completed events
(batch building, the step, the ranks' gradient all-reduce and stop agreement, emits); compute is the median
`step_time_ms` (forward, backward, all-reduce, update); samples/s is the global batch over ms/step.
Medians over repeats. On a machine with fewer cores than ranks × threads, expect no speed-up.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbert_tui.config_docs import example_config  # noqa: E402


def config_text(epochs: int, threads: int) -> str:
    text = example_config("bench.toml")
    text = re.sub(r"(?m)^epochs = \d+", f"epochs = {epochs}", text)
    text = re.sub(r"(?m)^blas_threads = \d+", f"blas_threads = {threads}", text)
    return re.sub(r"(?m)^enabled = true", "enabled = false", text, count=1)  # [system]: no sampler noise


def one_run(folder: Path, ranks: int, threads: int, epochs: int) -> dict[str, float]:
    (folder / "bench.toml").write_text(config_text(epochs, threads))
    out = folder / f"out-{ranks}x{threads}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "kbert_tui", "run", "bench.toml", "--headless", "--output-dir", str(out)]
    if ranks > 1:
        launcher = shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or "mlx.launch"
        command = [launcher, "-n", str(ranks), "--backend", "ring", "--python", sys.executable, *command[1:]]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{ranks} rank(s) failed: {done.stderr[-1500:]}")
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    batches = [e for e in events if e["name"] == "training.batch_completed"]
    stamps = [_seconds(e["timestamp"]) for e in batches]
    gaps = [(b - a) * 1000 for a, b in pairwise(stamps)]
    started = next(e for e in events if e["name"] == "training.started")["data"]
    final = next(e for e in events if e["name"] == "training.completed")["data"]["final_metrics"]
    ms = statistics.median(gaps)
    return {"ms_per_step": ms, "compute_ms": statistics.median(e["data"]["metrics"]["step_time_ms"] for e in batches),
            "samples_per_s": started["batch_size"] * 1000 / ms, "val_accuracy": final["val_accuracy"],
            "steps": len(batches)}


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    contenders = [(1, 1), (1, 2), (2, 1)]
    results: dict[tuple[int, int], list[dict[str, float]]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for ranks, threads in contenders:
                result = one_run(Path(tmp), ranks, threads, args.epochs)
                results[(ranks, threads)].append(result)
                print(f"repeat {repeat + 1}: {ranks} rank(s) × {threads} thread(s): "
                      f"{result['ms_per_step']:.1f} ms/step "
                      f"(compute {result['compute_ms']:.1f}), {result['samples_per_s']:.0f} samples/s, "
                      f"val_acc {result['val_accuracy']:.4f}", flush=True)
    print(f"\nmedians over {args.repeats} repeats ({results[(1, 1)][0]['steps']} steps each):")
    base = statistics.median(r["ms_per_step"] for r in results[(1, 1)])
    for key, runs in results.items():
        ms = statistics.median(r["ms_per_step"] for r in runs)
        print(f"  {key[0]} rank(s) × {key[1]} BLAS thread(s): {ms:6.1f} ms/step, "
              f"compute {statistics.median(r['compute_ms'] for r in runs):6.1f} ms, "
              f"{statistics.median(r['samples_per_s'] for r in runs):6.0f} samples/s, "
              f"time vs 1×1 {ms / base:.2f}×, val_acc {statistics.median(r['val_accuracy'] for r in runs):.4f}")


if __name__ == "__main__":
    main()
