"""Does the demo's accuracy depend on luck? The built-in demo with 5 seeds, each from an empty cache.

    .venv/bin/python benchmarks/bench_demo_seeds.py [--seeds 1 2 3 4 5] [--python PYTHON]

Each seed runs `kbert-tui run CONFIG --headless` in its own process: CONFIG is `kbert-tui init`'s
(the demo's settings) with `seed` changed, which changes the generated data, the WordPiece
vocabulary, the initial weights and the batch order. KBERT_TUI_CACHE_DIR points at a new, empty
folder each time, so every run trains its tokenizer as a first run on a fresh machine would.
`--python` runs the command with another interpreter (a fresh venv's). Prints each run's final
validation accuracy and wall time (process start to exit), then min / median / max of both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_demo(python: str, seed: int, folder: Path) -> dict:
    """One demo run with `seed` in `folder` (config, cache, output); accuracy, time, the BLAS header line."""
    from kbert_tui.config_docs import example_config

    config = folder / "demo.toml"
    text = example_config(config.name)
    config.write_text(re.sub(r"(?m)^seed = \d+", f"seed = {seed}", text, count=1), encoding="utf-8")
    env = {**os.environ, "KBERT_TUI_CACHE_DIR": str(folder / "cache")}
    started = time.perf_counter()
    done = subprocess.run([python, "-m", "kbert_tui", "run", str(config), "--headless", "--output-dir",
                           str(folder / "out")], env=env, capture_output=True, text=True, cwd=folder)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: exit {done.returncode}\n{done.stderr[-2000:]}")
    final = None
    with open(folder / "out" / "events.jsonl", encoding="utf-8") as log:
        for line in log:
            event = json.loads(line)
            if event["name"] == "training.completed":
                final = event["data"]["final_metrics"]
    assert final is not None, "no training.completed event"
    header = next((line for line in done.stdout.splitlines() if line.startswith("training ")), "")
    return {"seed": seed, "val_accuracy": final["val_accuracy"], "wall_s": wall, "header": header}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs kbert-tui")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix=f"kbert-demo-seed{seed}-") as folder:
            result = run_demo(args.python, seed, Path(folder))
        results.append(result)
        print(f"seed {seed}: val_accuracy {result['val_accuracy']:.4f}  {result['wall_s']:.1f} s", flush=True)
    print(results[0]["header"])
    accuracy = [r["val_accuracy"] for r in results]
    wall = [r["wall_s"] for r in results]
    print(f"val_accuracy  min {min(accuracy):.4f}  median {statistics.median(accuracy):.4f}  max {max(accuracy):.4f}")
    print(f"wall time     min {min(wall):.1f} s  median {statistics.median(wall):.1f} s  max {max(wall):.1f} s")


if __name__ == "__main__":
    main()
