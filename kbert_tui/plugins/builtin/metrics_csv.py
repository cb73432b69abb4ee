"""Writes a run's batch, evaluation and epoch metrics to a CSV file in its output directory."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kbert_tui.config import option
from kbert_tui.events import catalog as ev

from ..base import PluginPort

COLUMNS = (
    "timestamp", "run_id", "kind", "epoch", "step", "batch", "loss",
    "learning_rate", "grad_norm", "samples_per_sec", "step_time_ms", "data_time_ms",
    "train_loss", "val_loss", "val_accuracy", "val_f1", "duration", "extra",
)
_KINDS = {
    ev.TRAINING_BATCH_COMPLETED: "batch",
    ev.TRAINING_EVALUATION_COMPLETED: "eval",
    ev.TRAINING_EPOCH_COMPLETED: "epoch",
}


class MetricsCsvPlugin(PluginPort):
    """Config: path ("metrics.csv", relative to the run's output directory).

    One row per `training.batch_completed` (kind "batch"), `training.evaluation_completed`
    ("eval") and `training.epoch_completed` ("epoch"); metrics without a column go to `extra` as JSON.
    """

    @dataclass(frozen=True)
    class Options:
        path: str = option("metrics.csv", "the CSV file; a relative path is under the run's output directory")

    name = "metrics_csv"
    version = "1.0.0"
    capabilities = ("metrics", "export")
    _file: IO[str] | None = None

    async def initialize(self) -> None:
        path = Path(self.options.path)
        if not path.is_absolute():
            path = (self.context.output_dir or Path.cwd()) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # A resumed run appends to its earlier rows; a file with other columns is kept beside it.
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh and _header(path) != list(COLUMNS):
            path.rename(_free_name(path))
            fresh = True
        self._file: IO[str] | None = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(COLUMNS)
        self.rows = 0
        for name in _KINDS:
            await self.subscribe(name, self._on_metrics)
        await self.subscribe(ev.TRAINING_STARTED, self._on_started)

    def _on_started(self, event: Any) -> None:
        """A resumed run (`run --resume`) goes on from a step: the rows an earlier process wrote past it are
        done again, so they go (a killed run's steps after its last checkpoint would be in the file twice)."""
        step = event.data.get("resumed_at_step") if isinstance(event.data, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or self._file is None:
            return
        self._file.close()
        kept = _rows_up_to(self.path, step)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(kept)
        tmp.replace(self.path)
        self._file = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)

    def _on_metrics(self, event: Any) -> None:
        if self._file is None:
            return
        data = event.data
        metrics = dict(data.get("metrics") or {})
        row: dict[str, Any] = {
            "timestamp": event.timestamp.isoformat(), "run_id": event.correlation_id or "",
            "kind": _KINDS[event.name], "epoch": data.get("epoch"), "step": data.get("step"),
            "batch": data.get("batch"), "loss": data.get("loss"), "duration": data.get("duration"),
        }
        for column in COLUMNS:
            if column in metrics:
                row[column] = metrics.pop(column)
        row["extra"] = json.dumps(metrics, sort_keys=True, default=str) if metrics else ""
        self._writer.writerow(["" if row.get(c) is None else row[c] for c in COLUMNS])
        self.rows += 1
        if row["kind"] != "batch":  # an epoch or evaluation row is worth having on disk at once
            self._file.flush()

    async def cleanup(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _rows_up_to(path: Path, step: int) -> list[list[str]]:
    """The file's rows (header first) up to `step`: a row without a step (an epoch's) goes with the batch
    before it."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    at = COLUMNS.index("step")
    kept, last = rows[:1], 0.0
    for row in rows[1:]:
        try:
            last = float(row[at]) if len(row) > at and row[at] else last
        except ValueError:
            pass  # not a number: the row goes with the step before it
        if last <= step:
            kept.append(row)
    return kept


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _free_name(path: Path) -> Path:
    n = 1
    while (candidate := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
        n += 1
    return candidate
