"""Runs side by side: each run's event log reduced to what a comparison shows (no Textual here).

`RunRecord.feed_line(raw_line)` takes the log's lines as bytes (a whole file at open, then what a
follower reads as the run goes on); only `training.*` lines are decoded, so ten logs of 100k events
open in about a second. `compare_table(records)` is the table `kbert-tui compare` prints and shows.
"""

from __future__ import annotations

import bisect
import copy
import csv
import io
import json
import math
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kbert_tui.events import catalog as ev

from .chart import LossCurve, loss_value
from .story import cut_rows, resumed_at_step
from .summary import dict_at

_loads: Callable[[bytes | str], Any]
try:  # ~3x faster than json on the hot path, optional like the codec's
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - exercised where orjson is missing
    _loads = json.loads

__all__ = ["RunRecord", "CompareTable", "baseline_curve", "compare_table", "config_cell", "config_differences",
           "label_runs",
           "load_run", "METRICS", "FORMATS", "render_table"]

METRICS = ("train_loss", "val_loss", "val_accuracy", "val_f1")
"""Epoch metrics a comparison shows: final (the last epoch's, else training.completed's) and best (min for a loss)."""

# keys that differ between any two runs and say nothing about them
_NOISE_KEYS = ("run.output_dir", "events.path", "training.resume_from")
CONFIG_TABLES = ("run", "data", "model", "training", "events", "system", "plugins", "rules")
"""The config's top-level tables: a training.started config's other keys (`source`, the file it was read
from) are not settings and never a differing key (tests/test_compare_view.py holds this to kbert_tui.config)."""
_TRAINING = b"training."
_BATCH = ev.TRAINING_BATCH_COMPLETED
_parse_time = datetime.fromisoformat


def _seconds(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


_num = loss_value  # a metric as logged: a number, or NaN/±inf spelled out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"training": {"learning_rate": 1e-3}}` → `{"training.learning_rate": 1e-3}` (lists stay values)."""
    if not isinstance(value, dict):
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(inner, dict) and inner:
            out.update(flatten(inner, path))
        else:
            out[path] = inner
    return out


@dataclass
class RunRecord:
    """One run as a comparison sees it; `feed_line` / `feed` build it, oldest event first."""

    path: Path
    label: str = ""
    run_id: str | None = None
    name: str | None = None
    status: str = "waiting"  # waiting | running | paused | completed | stopped | failed
    config: dict[str, Any] = field(default_factory=dict)  # flattened training.started config
    batch_size: int | None = None
    steps: array[int] = field(default_factory=lambda: array("l"))  # per training.batch_completed
    losses: array[float] = field(default_factory=lambda: array("d"))
    times: array[float] = field(default_factory=lambda: array("d"))  # seconds since training.started
    samples: array[float] = field(default_factory=lambda: array("d"))  # samples seen after that step
    epochs: list[dict[str, Any]] = field(default_factory=list)  # epoch_completed: {"epoch", METRICS..}
    epoch_steps: list[int] = field(default_factory=list)  # the step each of those came at (a resume cuts by it)
    evals: list[dict[str, Any]] = field(default_factory=list)  # evaluation_completed: {"step", metrics..}
    final: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None  # epoch seconds of training.started
    last_at: float | None = None  # of the newest training.* event
    events: int = 0
    malformed: int = 0

    # -------------------------------------------------------------- building
    def feed_line(self, line: bytes) -> None:
        """One line of the log (bytes); lines that are not training events are only counted."""
        self.events += 1
        if _TRAINING in line:
            self._decode(line)

    def _decode(self, line: bytes) -> None:
        try:
            raw = _loads(line)
            name, data, stamp = raw["name"], raw["data"], raw["timestamp"]
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        if name == _BATCH and self.started_at is not None and type(data) is dict:
            # the hot path, inlined: ~45% of a run's lines
            step, loss = data.get("step"), data.get("loss")
            if type(step) is int and type(loss) is float and (not self.steps or step > self.steps[-1]):
                try:
                    at = _parse_time(stamp).timestamp()
                except (TypeError, ValueError):
                    self._apply(name, data, None)
                    return
                self.steps.append(step)
                self.losses.append(loss)
                self.times.append(at - self.started_at)
                self.samples.append(step * (self.batch_size or 1))
                self.last_at = at
                if self.status == "paused":
                    self.status = "running"
                return
        if isinstance(name, str) and isinstance(data, dict):
            self._apply(name, data, _seconds(stamp) if isinstance(stamp, str) else None)

    def feed(self, event: Any) -> None:
        """One decoded `Event` (a live source, a test)."""
        self.events += 1
        self._apply(event.name, event.data, event.timestamp.timestamp())

    def _apply(self, name: str, d: dict[str, Any], at: float | None) -> None:
        if name == ev.TRAINING_BATCH_COMPLETED:
            step, loss = d.get("step"), _num(d.get("loss"))
            # a line read twice (a follower started before the load) is skipped: steps only grow
            if isinstance(step, int) and loss is not None and (not self.steps or step > self.steps[-1]):
                self.steps.append(step)
                self.losses.append(loss)
                base = self.started_at if self.started_at is not None else at
                self.times.append(at - base if at is not None and base is not None else math.nan)
                self.samples.append(step * (self.batch_size or 1))
            if self.status == "paused":
                self.status = "running"
        elif name == ev.TRAINING_STARTED:
            resumed_at = resumed_at_step(d)
            if resumed_at is not None and self.started_at is not None and d.get("run_id") in (None, self.run_id):
                self._resumed(resumed_at, at)
            else:
                self.started_at = at
            self.run_id = d.get("run_id") if isinstance(d.get("run_id"), str) else self.run_id
            self.name = d.get("run_name") if isinstance(d.get("run_name"), str) else self.name
            self.config = flatten(d.get("config") or {})
            size = d.get("batch_size")
            self.batch_size = size if isinstance(size, int) and size > 0 else None
            self.status = "running"
        elif name == ev.TRAINING_EPOCH_COMPLETED:
            metrics = dict_at(d, "metrics")
            epoch = d.get("epoch")
            last = self.epochs[-1].get("epoch") if self.epochs else None
            if isinstance(epoch, int) and isinstance(last, int) and epoch <= last:
                return  # read twice: epochs only grow
            row = {"epoch": d.get("epoch")}
            self.epoch_steps.append(self.steps[-1] if self.steps else 0)
            for key in METRICS:
                value = _num(metrics.get(key))
                if value is not None:
                    row[key] = value
                    self.final[key] = value
            self.epochs.append(row)
        elif name == ev.TRAINING_EVALUATION_COMPLETED:
            metrics = dict_at(d, "metrics")
            row = {"step": d.get("step"), "epoch": d.get("epoch")}
            row.update({k: v for k in METRICS if (v := _num(metrics.get(k))) is not None})
            self.evals.append(row)
        elif name == ev.TRAINING_COMPLETED:
            # final is the last epoch's: final_metrics are the restored best epoch's (training.restore_best),
            # so they only fill what no epoch reported (a run without epoch events)
            final = dict_at(d, "final_metrics")
            for key in METRICS:
                value = _num(final.get(key))
                if value is not None and key not in self.final:
                    self.final[key] = value
            self.status = "completed"
        elif name in (ev.TRAINING_STOPPED, ev.TRAINING_FAILED):
            self.status = "stopped" if name == ev.TRAINING_STOPPED else "failed"
        elif name == ev.TRAINING_PAUSED:
            self.status = "paused"
        elif name == ev.TRAINING_RESUMED:
            self.status = "running"
        if at is not None:
            self.last_at = at

    def _resumed(self, step: int, at: float | None) -> None:
        """Another process went on with this run from `step` (`run --resume`): what was logged past it goes,
        and its times go on from the last step kept (the wall time is the time spent training)."""
        keep = bisect.bisect_right(self.steps, step)
        for name in ("steps", "losses", "times", "samples"):
            setattr(self, name, getattr(self, name)[:keep])
        kept = bisect.bisect_right(self.epoch_steps, step)
        del self.epochs[kept:], self.epoch_steps[kept:]
        self.evals = cut_rows(self.evals, step)
        self.final = {k: v for k, v in self.epochs[-1].items() if k in METRICS} if self.epochs else {}
        if at is not None:
            self.started_at = at - (self.times[-1] if self.times and math.isfinite(self.times[-1]) else 0.0)

    # -------------------------------------------------------------- reading
    @property
    def wall_s(self) -> float | None:
        """Seconds from training.started to its newest training event."""
        if self.started_at is None or self.last_at is None:
            return None
        return self.last_at - self.started_at

    @property
    def samples_seen(self) -> float:
        return self.samples[-1] if self.samples else 0.0

    @property
    def samples_per_sec(self) -> float | None:
        """Samples seen (steps × batch size) over the wall time of the training."""
        wall = self.wall_s
        if not wall or not self.samples or self.batch_size is None:
            return None
        return self.samples_seen / wall

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "stopped", "failed")

    def best(self, metric: str) -> tuple[float, int | None] | None:
        """The best epoch value of `metric` (lowest for a loss, highest otherwise) and its epoch."""
        rows = [(r[metric], r.get("epoch")) for r in self.epochs if metric in r and not math.isnan(r[metric])]
        if not rows:
            return None
        pick = min if metric.endswith("loss") else max
        return pick(rows, key=lambda row: row[0])

    def epoch_series(self, metric: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of `metric` from each training.epoch_completed."""
        xs, ys = [], []
        for row in self.epochs:
            if metric in row and isinstance(row.get("epoch"), int):
                xs.append(float(row["epoch"]))
                ys.append(row[metric])
        return xs, ys


def baseline_curve(record: RunRecord) -> LossCurve:
    """A loaded run's training loss as a bounded LossCurve, to draw under the monitor's own (a baseline)."""
    curve = LossCurve()
    start = record.started_at or 0.0
    curve.started(start, record.batch_size)
    for step, loss, seconds in zip(record.steps, record.losses, record.times, strict=True):
        curve.add(step, loss, start + (seconds if math.isfinite(seconds) else 0.0))
    return curve


def load_run(path: str | Path, label: str = "", *, curves: bool = True) -> RunRecord:
    """Read a whole log (its rotated segments first) into a RunRecord; OSError when it can't be read.

    With `curves=False` (the table `kbert-tui compare` prints) the log's index chooses the lines: every
    `training.*` event but the batches, and of the batches only the last before each of those and the
    very last — what the table's steps, samples, rates and epoch cuts read — so a 1M-event log opens
    in a few hundredths of a second. The loss curves need every batch (`curves=True`).
    """
    from kbert_tui.events.store import segment_paths

    path = Path(path)
    files = segment_paths(path)
    if not files:
        raise FileNotFoundError(f"no such events file: {path}")
    record = RunRecord(path=path, label=label)
    if not curves and _load_from_index(record, path):
        return record
    decode = record._decode
    training = _TRAINING
    for file in files:
        with open(file, "rb") as handle:
            lines = handle.read().split(b"\n")
        record.events += len(lines) - lines.count(b"")
        for line in lines:
            if training in line:  # the hot loop: most lines are not training events, only counted
                decode(line)
    return record


def _load_from_index(record: RunRecord, path: Path) -> bool:
    """Fill `record` from the few lines the table needs; False (nothing read) where only every line will do:
    batch steps that do not only grow, or a resumed run (its cut reaches back into the batches)."""
    import numpy as np

    from kbert_tui.events.index import open_index

    index = open_index(path)
    rows, batches, steps = [], [], []
    for first, segment in zip(index.starts[:-1].tolist(), index.segments, strict=True):
        names = segment.columns["name"]
        wanted = [0] + [i + 1 for i, name in enumerate(segment.names) if name.startswith("training.")]
        local = np.flatnonzero(np.isin(names, wanted))  # unreadable lines too: a torn training line counts
        rows.append(local + first)
        batches.append(np.isin(names[local], [i + 1 for i, name in enumerate(segment.names) if name == _BATCH]))
        steps.append(segment.columns["step"][local])
    chosen, is_batch, step = np.concatenate(rows), np.concatenate(batches), np.concatenate(steps)
    batch_steps = step[is_batch]
    if len(batch_steps) > 1 and not bool((batch_steps[1:] > batch_steps[:-1]).all()):
        return False
    others = index.lines(chosen[~is_batch])
    if any(b'"resumed_at_step"' in line for line in others):
        return False
    record.events = len(index)
    # runs of batches between two other training events: of each, only the last one the record takes
    position = np.flatnonzero(~is_batch)
    other_lines = dict(zip(position.tolist(), others, strict=True))
    ends = np.flatnonzero(is_batch & np.append(~is_batch[1:], True)).tolist()
    starts = np.flatnonzero(is_batch & np.insert(~is_batch[:-1], 0, True)).tolist()
    last_of_run = dict(zip(ends, starts, strict=True))
    for i in sorted([*other_lines, *last_of_run]):
        if i in other_lines:
            record._decode(other_lines[i])
        elif i in last_of_run:
            for j in range(i, last_of_run[i] - 1, -1):  # back from the run's end to the batch it takes
                taken = len(record.steps)
                record._decode(index.lines(chosen[j:j + 1])[0])
                if len(record.steps) > taken:
                    break
    return True


def label_runs(records: Sequence[RunRecord]) -> None:
    """Give each record a short distinct label: its folder's name (or file stem), else `#N` appended."""
    seen: dict[str, int] = {}
    for record in records:
        if record.label:
            base = record.label
        elif record.path.name == "events.jsonl":
            base = record.path.parent.name or record.name or "run"
        else:
            base = record.path.stem
        seen[base] = seen.get(base, 0) + 1
        record.label = base if seen[base] == 1 else f"{base}#{seen[base]}"


def _is_builtin_run(record: RunRecord) -> bool:
    """A run of kbert-tui's own trainer: its config is the RunConfig tables (a script's is its own dict)."""
    return any(key.partition(".")[0] == "training" for key in record.config)


def config_differences(records: Sequence[RunRecord]) -> list[str]:
    """The config keys whose values are not the same in every run (paths unique to a run left out)."""
    keys: set[str] = set()
    for record in records:
        keys.update(record.config)
    # outside RunConfig's tables a built-in run's config holds no settings (`source`: the file it came from);
    # a script's config (kbert_tui.init(config=...)) is all settings
    script_keys: set[str] = set()
    for record in records:
        if not _is_builtin_run(record):
            script_keys.update(record.config)
    out = []
    for key in sorted(keys):
        if key in _NOISE_KEYS or (key.partition(".")[0] not in CONFIG_TABLES and key not in script_keys):
            continue
        values = [json.dumps(r.config.get(key), sort_keys=True, default=str) for r in records]
        if len(set(values)) > 1:
            out.append(key)
    return out


@dataclass
class CompareTable:
    """The comparison as rows of cells (strings) under `header`, and the same as plain values in `data`."""

    header: list[str]
    rows: list[list[str]]
    data: list[dict[str, Any]]


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def compare_table(records: Sequence[RunRecord]) -> CompareTable:
    """Final and best metrics, wall time, samples/s and the differing config keys of each run."""
    differing = config_differences(records)
    metrics = [m for m in METRICS if any(m in r.final for r in records)]
    header = ["run", "status", "steps", "epochs"]
    header += [f"final {m}" for m in metrics]
    header += [f"best {m}" for m in metrics if m != "train_loss"]
    header += ["wall", "samples/s"] + differing
    rows, data = [], []
    for r in records:
        best = {m: r.best(m) for m in metrics if m != "train_loss"}
        row = [r.label, r.status, str(r.steps[-1] if r.steps else 0), str(len(r.epochs))]
        row += [_fmt(r.final.get(m)) for m in metrics]
        row += [f"{_fmt(b[0])} (e{b[1]})" if b else "—" for b in best.values()]
        row += [_duration(r.wall_s), _fmt(r.samples_per_sec, 1)]
        row += [config_cell(r.config.get(k)) for k in differing]
        rows.append(row)
        data.append({
            "run": r.label, "path": str(r.path), "run_id": r.run_id, "status": r.status,
            "steps": r.steps[-1] if r.steps else 0, "epochs": len(r.epochs),
            "final": {m: r.final[m] for m in metrics if m in r.final},
            "best": {m: {"value": b[0], "epoch": b[1]} for m, b in best.items() if b},
            "wall_s": r.wall_s, "samples_per_sec": r.samples_per_sec,
            "config": {k: r.config.get(k) for k in differing},
        })
    return CompareTable(header, rows, data)


def config_cell(value: Any) -> str:
    """A config value in a table cell: floats short (`0.0003`, not `0.00030000000000000003`)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


FORMATS = ("table", "markdown", "csv", "json")


def render_table(table: CompareTable, fmt: str) -> str:
    """The table as text: `table` (aligned columns), `markdown`, `csv` or `json`."""
    if fmt == "json":
        data = copy.deepcopy(table.data)
        _nan_to_none(data)
        return json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.header)
        writer.writerows(table.rows)
        return out.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(_md(c) for c in table.header) + " |",
                 "|" + "|".join("---" for _ in table.header) + "|"]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in table.rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(cell) for cell in column) for column in zip(table.header, *table.rows, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [table.header, *table.rows]]
    return "\n".join(lines) + "\n"


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def _nan_to_none(rows: Iterable[dict[str, Any]]) -> None:
    """JSON has no NaN: a NaN metric is written as null."""
    for row in rows:
        for key, value in list(row.items()):
            if isinstance(value, float) and math.isnan(value):
                row[key] = None
            elif isinstance(value, dict):
                _nan_to_none([value])
