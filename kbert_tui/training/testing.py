"""Helpers for tests: a tiny CSV dataset and a config that trains on it in about a second."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from kbert_tui.config import RunConfig, parse_config

from .demo import demo_rows


def write_csv(path: Path, rows: list[dict[str, Any]], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = header or list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_tiny_dataset(folder: Path, *, train: int = 96, validation: int = 32, test: int = 16) -> dict[str, Path]:
    """Demo-style CSVs (id, text, label) small enough to train on in a second."""
    paths = {"train": write_csv(folder / "train.csv", demo_rows(train, 1))}
    if validation:
        paths["validation"] = write_csv(folder / "val.csv", demo_rows(validation, 2, prefix="v"))
    if test:
        rows = [{"id": r["id"], "text": r["text"]} for r in demo_rows(test, 3, prefix="t")]
        paths["test"] = write_csv(folder / "test.csv", rows)
    return paths


def tiny_document(folder: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A config document (as TOML would parse it) for a tiny model on write_tiny_dataset's files."""
    files = write_tiny_dataset(folder)
    document: dict[str, Any] = {
        "run": {"name": "tiny", "seed": 3, "output_dir": str(folder / "out")},
        "data": {"train": str(files["train"]), "validation": str(files["validation"]), "test": str(files["test"]),
                 "id_column": "id", "text_columns": ["text"], "label_column": "label",
                 "max_length": 16, "batch_size": 16, "batch_event_every": 2},
        "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                  "vocab_size": 200, "max_position": 32, "dropout": 0.0},
        # no early stopping: tests run a set number of epochs (or "forever", to stop or pause them)
        "training": {"epochs": 2, "learning_rate": 0.003, "eval_every": 4, "checkpoint": {"policy": "last"},
                     "early_stopping": {"enabled": False}},
        "events": {"model_events_every": 3},
        "system": {"enabled": False},
    }
    for name, values in sections.items():
        merged = dict(document.get(name, {}))
        merged.update(values)
        document[name] = merged
    return document


def tiny_config(folder: Path, **sections: dict[str, Any]) -> RunConfig:
    return parse_config(tiny_document(folder, **sections), origin=str(folder / "tiny.toml"), base_dir=folder)
