"""What do length buckets and the activation cost per epoch? The default model on real text, side by side.

    .venv/bin/python benchmarks/bench_recipe_speed.py --wheels WHEELS [--dataset tweets] [--rounds 5]

WHEELS and the datasets are bench_quality's. Each variant (batches bucketed by length or not; `gelu`,
`gelu_approx`, `gelu_fast`, `relu`) trains the default model (config defaults, OpenBLAS, one thread) on the
first 60 batches of one epoch's order; variants take turns, round after round, so a busy machine slows them
alike. Printed: the median over rounds of ms per step and of the tokens a step computes (padding included),
and each variant's ratio to the old recipe (no buckets, exact gelu).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = [("plain", "gelu"), ("bucketed", "gelu"), ("bucketed", "gelu_approx"), ("bucketed", "gelu_fast"),
            ("bucketed", "relu"), ("plain", "gelu_fast")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True)
    parser.add_argument("--dataset", default="tweets")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    from bench_quality import DATASETS, unique

    import kbert_tui.training  # noqa: F401  -- binds OpenBLAS before mlx.core
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np

    from kbert_tui.blas import set_threads
    from kbert_tui.config import ModelSection, TrainingSection, DataSection
    from kbert_tui.training.model import BertClassifier
    from kbert_tui.training.tokenizer import encode, train_wordpiece
    from kbert_tui.training.steps import _Encoded, epoch_batches, make_batch, train_step

    blas = set_threads(1)
    rows = unique(DATASETS[args.dataset](args.wheels))
    texts = [t for t, _ in rows]
    names = sorted({label for _, label in rows})
    labels = np.array([names.index(label) for _, label in rows], dtype=np.int32)
    data, model_cfg, train_cfg = DataSection(), ModelSection(), TrainingSection()
    tokenizer = train_wordpiece(texts, model_cfg.vocab_size)
    enc = _Encoded(encode(tokenizer, texts, data.max_length), labels)
    lengths = np.array([len(ids) for ids in enc.ids])
    print(f"{args.dataset}: {len(texts):,} texts, mean {lengths.mean():.1f} tokens (max_length {data.max_length}); "
          f"batch {data.batch_size}, model {model_cfg.hidden_size}×{model_cfg.num_layers}, vocab "
          f"{tokenizer.get_vocab_size():,}; {blas.describe()}", flush=True)

    def loss_fn(m, ids, mask, y):
        return nn.losses.cross_entropy(m(ids, mask), y, reduction="mean")

    times: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    tokens: dict[tuple[str, str], int] = {}
    for round_ in range(args.rounds):
        for batching, activation in VARIANTS:
            mx.random.seed(round_)
            model = BertClassifier(ModelSection(activation=activation), tokenizer.get_vocab_size(), len(names))
            mx.eval(model.parameters())
            optimizer = optim.AdamW(learning_rate=train_cfg.learning_rate)
            step = nn.value_and_grad(model, loss_fn)
            batches = epoch_batches(lengths, data.batch_size, np.random.default_rng(round_),
                                    bucket=batching == "bucketed")[: args.steps]
            tokens[(batching, activation)] = sum(int(lengths[b].max()) * len(b) for b in batches)
            started = time.perf_counter()
            for number, rows_ in enumerate(batches):
                ids, mask, y = make_batch(enc, rows_)
                train_step(model, optimizer, step, ids, mask, y, 1.0, f"step {number}")
            times[(batching, activation)].append((time.perf_counter() - started) / len(batches) * 1000)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)

    base = statistics.median(times[("plain", "gelu")])
    print(f"\n| batches | activation | ms per step (median of {args.rounds}) | tokens per step | vs plain + gelu |")
    print("| --- | --- | --- | --- | --- |")
    for variant in VARIANTS:
        ms = statistics.median(times[variant])
        print(f"| {variant[0]} | {variant[1]} | {ms:.1f} | {tokens[variant] / args.steps:.0f} | "
              f"{base / ms:.2f}× |")


if __name__ == "__main__":
    main()
