"""What `run.log(...)` costs a training loop, per call, beside a plain JSONL write (and W&B offline or trackio
when either is installed here).

    .venv/bin/python benchmarks/bench_client.py [--calls 20000] [--repeats 5]

Each row logs the same two metrics (`loss`, `learning_rate`) at a new step `calls` times and reports the median
over `repeats` of the mean time spent inside one call, in the training loop's thread. Back to back (the
default), the client rows also pay for the work the run's event loop does on its own thread (delivering to the
plugins, metrics.csv), which competes for the GIL: an upper bound. With `--step-ms 1` a GIL-free pause stands
for each training step (MLX releases the GIL while it computes), and only the time inside `log` counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kbert_tui  # noqa: E402
from kbert_tui.client import OUTBOX_NAME, WATCH_DIR_ENV, WATCH_RUN_ID_ENV  # noqa: E402
from kbert_tui.config import default_config  # noqa: E402

STEP_S = 0.0  # set by --step-ms: a training step between calls that releases the GIL, as MLX's compute does


def measure(log: Callable[[int], None], calls: int, repeats: int) -> float:
    """Median over `repeats` of the mean µs spent inside one call (back to back, or between GIL-free steps)."""
    results = []
    step = 0
    clock = time.perf_counter
    for _ in range(repeats):
        if not STEP_S:
            started = clock()
            for _ in range(calls):
                step += 1
                log(step)
            results.append((clock() - started) / calls * 1e6)
            continue
        inside = 0.0
        for _ in range(calls):
            step += 1
            time.sleep(STEP_S)  # the step: the run's event loop thread does its share of the work meanwhile
            started = clock()
            log(step)
            inside += clock() - started
        results.append(inside / calls * 1e6)
    return statistics.median(results)


def client_row(folder: Path, calls: int, repeats: int, **init: object) -> float:
    run = kbert_tui.init("bench", dir=folder, **init)  # type: ignore[arg-type]
    try:
        return measure(lambda step: run.log({"loss": 0.5, "learning_rate": 3e-4}, step=step), calls, repeats)
    finally:
        run.finish()


def watched_row(folder: Path, calls: int, repeats: int) -> float:
    (folder / OUTBOX_NAME).write_bytes(b"")
    os.environ.update({WATCH_DIR_ENV: str(folder), WATCH_RUN_ID_ENV: "bench"})
    try:
        run = kbert_tui.init("bench")
    finally:
        del os.environ[WATCH_DIR_ENV], os.environ[WATCH_RUN_ID_ENV]
    try:
        return measure(lambda step: run.log({"loss": 0.5, "learning_rate": 3e-4}, step=step), calls, repeats)
    finally:
        run.finish()


def jsonl_row(folder: Path, calls: int, repeats: int, *, flush: bool) -> float:
    with open(folder / "plain.jsonl", "w", encoding="utf-8") as fh:
        def log(step: int) -> None:
            fh.write(json.dumps({"step": step, "loss": 0.5, "learning_rate": 3e-4}) + "\n")
            if flush:
                fh.flush()

        return measure(log, calls, repeats)


def mlx_loop_rows(folder: Path, steps: int) -> list[tuple[str, float | str]]:
    """What logging adds to a step of a real (small) MLX training loop: the median time of a step followed by
    each logger minus that of a step followed by none; the loggers take turns step by step, so a change of
    machine load meets them all alike."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 2))
    optimizer = optim.SGD(learning_rate=0.01)
    x, y = mx.random.normal((64, 64)), mx.zeros((64,), dtype=mx.int32)
    loss_and_grad = nn.value_and_grad(model, lambda m, a, b: nn.losses.cross_entropy(m(a), b, reduction="mean"))
    run = kbert_tui.init("bench-mlx", dir=folder)
    fh = open(folder / "mlx-plain.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    loggers: dict[str, Callable[[int, mx.array], object]] = {
        "none": lambda step, loss: None,
        "run.log": lambda step, loss: run.log({"loss": loss, "learning_rate": 0.01}, step=step),
        "jsonl": lambda step, loss: fh.write(json.dumps({"step": step, "loss": loss.item(), "lr": 0.01}) + "\n"),
    }
    times: dict[str, list[float]] = {name: [] for name in loggers}
    order = list(loggers.items())
    clock = time.perf_counter
    for step in range(1, steps + 1):
        name, log = order[step % len(order)]
        started = clock()
        loss, grads = loss_and_grad(model, x, y)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss)
        log(step, loss)
        if step > 100:  # after the warm-up
            times[name].append((clock() - started) * 1e6)
    run.finish()
    fh.close()
    base = statistics.median(times["none"])
    return [(f"a real MLX step (median {base:,.0f} µs) + run.log, default plugins",
             statistics.median(times["run.log"]) - base),
            ("a real MLX step + plain JSONL (loss.item() + json.dumps + write)",
             statistics.median(times["jsonl"]) - base)]


def other_trackers(folder: Path, calls: int, repeats: int) -> list[tuple[str, float | str]]:
    rows: list[tuple[str, float | str]] = []
    try:
        import wandb  # type: ignore[import-not-found]
    except ImportError:
        rows.append(("wandb (offline)", "not installed here"))
    else:
        run = wandb.init(project="bench", mode="offline", dir=str(folder))
        rows.append(("wandb (offline)", measure(lambda step: run.log({"loss": 0.5, "learning_rate": 3e-4}, step=step),
                                                calls, repeats)))
        run.finish()
    try:
        import trackio  # type: ignore[import-not-found]
    except ImportError:
        rows.append(("trackio", "not installed here"))
    else:
        trackio.init(project="bench")
        rows.append(("trackio", measure(lambda step: trackio.log({"loss": 0.5, "learning_rate": 3e-4}), calls,
                                        repeats)))
        trackio.finish()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step-ms", type=float, default=0.0,
                        help="a GIL-free pause of this many ms between calls (a training step); 0: back to back")
    parser.add_argument("--mlx-steps", type=int, default=6000,
                        help="steps of a small MLX loop timed with and without logging (0: skip)")
    args = parser.parse_args()
    global STEP_S
    STEP_S = args.step_ms / 1000.0
    quiet = default_config().replace(plugins=(), system=default_config().system.__class__(enabled=False))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows: list[tuple[str, float | str]] = [
            ("run.log, default plugins (metrics.csv, error_threshold) and sampler",
             client_row(folder, args.calls, args.repeats)),
            ("run.log, no plugins, no sampler", client_row(folder, args.calls, args.repeats, settings=quiet)),
            ("run.log under `kbert-tui watch` (outbox)", watched_row(folder, args.calls, args.repeats)),
            ("plain JSONL: json.dumps + write", jsonl_row(folder, args.calls, args.repeats, flush=False)),
            ("plain JSONL: json.dumps + write + flush", jsonl_row(folder, args.calls, args.repeats, flush=True)),
            *other_trackers(folder, args.calls, args.repeats),
            *(mlx_loop_rows(folder, args.mlx_steps) if args.mlx_steps else []),
        ]
    between = f", a {args.step_ms:g} ms GIL-free step between calls" if STEP_S else ", back to back"
    print(f"{args.calls:,} calls x {args.repeats} repeats{between}: median of the mean time inside one call "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    for label, value in rows:
        shown = f"{value:7.2f} µs" if isinstance(value, float) else value
        print(f"  {label:<70} {shown}")


if __name__ == "__main__":
    main()
