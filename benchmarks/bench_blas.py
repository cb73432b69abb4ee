"""Which BLAS under MLX, how many threads: one training step of the demo model, side by side.

    .venv/bin/python benchmarks/bench_blas.py [--repeats 10] [--system PATH]

Each setting runs in its own process (a BLAS is chosen once, when the process loads it), in turns,
and times one optimizer step of the built-in demo's model (batch 32 × 32 tokens): MLX's bundled
reference BLAS (`KBERT_TUI_BLAS=off`), the pip wheel's OpenBLAS at 1 and 2 threads, and with
`--system PATH` another OpenBLAS (e.g. Debian's) at 1 and 2 threads. Medians of `--repeats` steps
after two warm-up steps, as wall time and as the process's CPU time. `--child` is the measuring process; it
prints one JSON line (the test of the pip-only install runs it too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def measure(repeats: int, hidden: int | None = None) -> dict:
    """Time `repeats` training steps of the demo model (or one `hidden` wide) here; the BLAS in use and the times."""
    import dataclasses

    from kbert_tui.blas import ensure_fast_blas, verify_binding
    from kbert_tui.config import default_config

    ensure_fast_blas()  # before mlx.core

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from kbert_tui.training.model import BertClassifier

    config = default_config()
    if hidden:
        config = dataclasses.replace(config, model=dataclasses.replace(
            config.model, hidden_size=hidden, intermediate_size=4 * hidden))
    mx.random.seed(0)
    model = BertClassifier(config.model, config.model.vocab_size, 2)
    optimizer = optim.AdamW(learning_rate=1e-3)
    ids = mx.random.randint(5, config.model.vocab_size, (config.data.batch_size, config.data.max_length))
    mask = mx.ones_like(ids)
    labels = mx.random.randint(0, 2, (config.data.batch_size,))

    def loss_fn(m, ids, mask, labels):
        return nn.losses.cross_entropy(m(ids, mask), labels, reduction="mean")

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    times, cpu, losses = [], [], []
    for step in range(repeats + 2):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, grads = loss_and_grad(model, ids, mask, labels)
        optimizer.update(model, grads)
        mx.eval(loss, model.parameters(), optimizer.state)
        if step >= 2:  # the first steps compile and allocate
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        losses.append(loss.item())
    import kbert_tui

    return {"blas": verify_binding().as_dict(), "describe": verify_binding().describe(), "module": kbert_tui.__file__,
            "ms": times, "median_ms": statistics.median(times), "cpu_ms": cpu, "first_loss": losses[0]}


def run_child(python: str, env_blas: str, threads: int, repeats: int, hidden: int | None = None) -> dict:
    """`measure` in a fresh process of `python` with KBERT_TUI_BLAS=env_blas and that many OpenBLAS threads."""
    env = {**os.environ, "KBERT_TUI_BLAS": env_blas, "OPENBLAS_NUM_THREADS": str(threads)}
    extra = ["--hidden", str(hidden)] if hidden else []
    out = subprocess.run([python, os.path.abspath(__file__), "--child", "--repeats", str(repeats), *extra],
                         env=env, capture_output=True, text=True, check=True, cwd=os.path.dirname(__file__))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="run every setting this many times, in turns")
    parser.add_argument("--system", metavar="PATH", help="also measure this OpenBLAS library")
    parser.add_argument("--hidden", type=int, help="model width instead of the demo's 128 (FFN 4x that)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.repeats, args.hidden)))
        return
    settings = [("reference (KBERT_TUI_BLAS=off)", "off", 1), ("pip OpenBLAS, 1 thread", "pip", 1),
                ("pip OpenBLAS, 2 threads", "pip", 2)]
    if args.system:
        settings += [(f"{args.system}, 1 thread", args.system, 1), (f"{args.system}, 2 threads", args.system, 2)]
    results: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in settings}
    described: dict[str, str] = {}
    for _ in range(args.rounds):
        for label, blas, threads in settings:
            r = run_child(sys.executable, blas, threads, args.repeats, args.hidden)
            results[label] += r["ms"]
            cpu[label] += r["cpu_ms"]
            described[label] = f"{r['describe']}; first loss {r['first_loss']:.6f}"
    reference = statistics.median(results[settings[0][0]])
    model = f"the model {args.hidden} wide" if args.hidden else "the demo model"
    print(f"one training step of {model}, median of {args.repeats * args.rounds} steps")
    # CPU time (all threads of the process) is less moved by other processes than wall time on a shared box
    print(f"{'setting':44} {'ms/step':>9} {'speed-up':>9} {'CPU ms':>8}  BLAS in use")
    for label, _, _ in settings:
        median = statistics.median(results[label])
        print(f"{label:44} {median:9.1f} {reference / median:8.1f}x {statistics.median(cpu[label]):8.1f}  "
              f"{described[label]}")


if __name__ == "__main__":
    main()
