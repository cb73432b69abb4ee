"""TensorBoard logs in and out: `kbert-tui import TB_DIR` and `kbert-tui export RUN --format csv|parquet|tfevents`.

Reading uses TensorBoard's own `EventFileLoader` (the `tensorboard` package): it is the reader TensorBoard
itself runs, reads every record (no reservoir sampling, unlike `EventAccumulator` and TensorBoard's CSV
download, tensorboard#4047), and migrates old `simple_value` scalars and TF2 tensor scalars to one form.
Writing uses tensorboardX's `SummaryWriter`, the maintained stand-alone writer (numpy and protobuf only).
Both come with the `tensorboard` extra; parquet is written by pyarrow, a dependency (the log index uses it).

An imported run directory holds an events.jsonl like any other: `training.started` (config records the
source and the tag taken as the loss curve), a `training.batch_completed` per step holding the loss tag,
a `training.evaluation_completed` per step without it, then `training.completed`; timestamps are the
scalars' wall times, so replay and compare show the original pace.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.state.chart import loss_value

__all__ = [
    "Scalar",
    "export_command",
    "export_run",
    "find_runs",
    "import_command",
    "import_logdir",
    "read_scalars",
    "run_scalars",
]

EXIT_OK, EXIT_BAD_INPUT = 0, 2
_SOURCE = "tensorboard"
_LOSS_TAGS = ("loss", "train_loss", "train/loss", "loss/train", "Loss/train", "training_loss")
_INSTALL = "pip install 'kbert-tui[tensorboard]'"


@dataclass(frozen=True)
class Scalar:
    """One value of one metric: the row every export writes."""

    step: int
    wall_time: float
    tag: str
    value: float
    epoch: int | None = None
    kind: str = ""


class ImportProblem(Exception):
    """Why a path can't be imported or a run exported (one line for the user)."""


# ------------------------------------------------------------------------------------------ reading tfevents


def _is_tfevents(path: Path) -> bool:
    return path.is_file() and "tfevents" in path.name


def find_runs(root: Path) -> dict[str, list[Path]]:
    """Each directory under `root` holding tfevents files (a run, as TensorBoard sees it) → its files, oldest first."""
    if _is_tfevents(root):
        return {root.parent.name or "run": [root]}
    runs: dict[str, list[Path]] = {}
    for file in sorted(root.rglob("*tfevents*")):
        if file.is_file():
            relative = file.parent.relative_to(root)
            runs.setdefault(str(relative) if relative.parts else root.resolve().name, []).append(file)
    return runs


def read_scalars(files: list[Path]) -> list[Scalar]:
    """Every scalar in `files`, in file order (TensorBoard's loader: no sampling)."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import (  # type: ignore[import-untyped]
            EventFileLoader,
        )
        from tensorboard.util import tensor_util  # type: ignore[import-untyped]
    except ImportError:
        raise ImportProblem(f"reading tfevents needs the tensorboard package ({_INSTALL})") from None
    scalars: list[Scalar] = []
    for file in files:
        for record in EventFileLoader(str(file)).Load():
            if record.WhichOneof("what") != "summary":
                continue
            for value in record.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    number = float(value.simple_value)
                elif kind == "tensor" and value.metadata.plugin_data.plugin_name in ("scalars", ""):
                    array = tensor_util.make_ndarray(value.tensor)
                    if array.size != 1 or array.dtype.kind not in "fiu":
                        continue  # a histogram or an image logged as a tensor: not a scalar
                    number = float(array.reshape(-1)[0])
                else:
                    continue
                scalars.append(Scalar(int(record.step), float(record.wall_time), value.tag, number))
    return scalars


# ------------------------------------------------------------------------------------------ import


def _loss_tag(tags: set[str]) -> str | None:
    for tag in _LOSS_TAGS:
        if tag in tags:
            return tag
    candidates = sorted(t for t in tags if t.lower().endswith("loss") and not re.search(r"val|eval|test", t.lower()))
    return candidates[0] if candidates else None


def _stamp(wall_time: float) -> datetime:
    return datetime.fromtimestamp(wall_time, tz=UTC)


def scalar_events(name: str, run_id: str, scalars: list[Scalar], source: str) -> Iterator[Event]:
    """The run's events for `scalars`: the same catalogue events a script logging them would have sent."""
    loss_tag = _loss_tag({s.tag for s in scalars})
    by_step: dict[int, dict[str, float]] = {}
    wall: dict[int, float] = {}
    for s in scalars:
        by_step.setdefault(s.step, {})[s.tag] = s.value  # a value logged twice at one step: the last one counts
        wall[s.step] = max(wall.get(s.step, s.wall_time), s.wall_time)
    steps = sorted(by_step)
    first = min(wall.values()) if wall else 0.0
    last = max(wall.values()) if wall else 0.0

    def event(event_name: str, data: dict[str, Any], at: float) -> Event:
        return Event(event_name, data, timestamp=_stamp(at), source=_SOURCE, correlation_id=run_id)

    yield event(ev.TRAINING_STARTED, {
        "config": {"imported_from": source, "loss_tag": loss_tag}, "run_id": run_id, "run_name": name,
        "model_type": "tensorboard", "device": "unknown", "num_parameters": 0, "total_epochs": 0,
        "steps_per_epoch": 0, "total_steps": steps[-1] if steps else 0, "batch_size": 0, "blas": {"name": "unknown"},
        "labels": [], "output_dir": "", "resumed_from": None}, first)
    yield event(ev.TRAINING_EPOCH_STARTED, {"epoch": 1, "total_epochs": 0, "steps": 0}, first)
    batch = 0
    final: dict[str, float] = {}
    for step in steps:
        metrics = dict(by_step[step])
        final.update(metrics)
        if loss_tag is not None and loss_tag in metrics:
            batch += 1
            loss = metrics.pop(loss_tag)
            yield event(ev.TRAINING_BATCH_COMPLETED, {"batch": batch, "step": step, "epoch": 1, "loss": loss,
                                                      "metrics": metrics}, wall[step])
        else:
            yield event(ev.TRAINING_EVALUATION_COMPLETED, {"epoch": 1, "step": step, "metrics": metrics}, wall[step])
    yield event(ev.TRAINING_COMPLETED, {
        "final_metrics": final, "total_duration": last - first, "epochs_completed": 0,
        "total_steps": steps[-1] if steps else 0, "stopped_early": False, "best": None, "predictions_path": None,
        "output_dir": ""}, last)


def import_logdir(path: Path, output_dir: Path) -> list[tuple[Path, int]]:
    """Write a run directory under `output_dir` for each run in the TensorBoard log at `path`: [(dir, scalars)]."""
    from kbert_tui.events.store import JsonlStore
    from kbert_tui.session import make_run_id

    if not path.exists():
        raise ImportProblem(f"{path}: no such file or directory")
    runs = find_runs(path)
    if not runs:
        raise ImportProblem(f"{path}: no tfevents files in it (a TensorBoard log directory holds "
                            "events.out.tfevents.* files)")
    targets = {name: output_dir / re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") for name in runs}
    taken = [str(t) for t in targets.values() if (t / "events.jsonl").exists()]
    if taken:
        raise ImportProblem(f"{taken[0]} already holds a run (import into another --output-dir)")
    written = []
    for name, files in runs.items():
        scalars = read_scalars(files)
        target = targets[name]
        target.mkdir(parents=True, exist_ok=True)
        store = JsonlStore(target / "events.jsonl")
        try:
            for event in scalar_events(name, make_run_id(name), scalars, str(path.resolve() / name)):
                store.append(event)
        finally:
            store.close()
        written.append((target, len(scalars)))
    return written


def import_command(args: argparse.Namespace) -> int:
    from kbert_tui.cli import _error

    try:
        written = import_logdir(Path(args.path).expanduser(), Path(args.output_dir).expanduser())
    except ImportProblem as problem:
        return _error(f"import: {problem}")
    except OSError as error:
        return _error(f"import: {error.filename or args.path}: {error.strerror or error}")
    for target, count in written:
        print(f"{target}: {count:,} scalars")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ export


_number = loss_value  # a metric as logged: a number, or NaN/±inf spelled out (any integer size)


def run_scalars(events_path: Path) -> list[Scalar]:
    """Every metric value a run's log holds, in log order: step losses and metrics, evaluations, epoch results."""
    from kbert_tui.events.store import read_events
    from kbert_tui.state.story import resumed_at_step

    loss_tag = "loss"
    out: list[Scalar] = []
    step = 0
    for event in read_events(events_path):
        d = event.data
        if event.name == ev.TRAINING_STARTED:
            config = d.get("config")
            config = config if isinstance(config, dict) else {}
            loss_tag = str(config.get("loss_tag") or "loss")
            if (resumed_at := resumed_at_step(d)) is not None:  # `run --resume`: what was logged past it is redone
                out = [s for s in out if s.step <= resumed_at]
            continue
        if event.name == ev.TRAINING_BATCH_COMPLETED:
            kind, metrics = "batch", dict(d.get("metrics") or {})
            loss = d.get("loss")
            metrics = {loss_tag: loss, **metrics} if loss is not None else metrics
        elif event.name == ev.TRAINING_EVALUATION_COMPLETED:
            kind, metrics = "eval", dict(d.get("metrics") or {})
        elif event.name == ev.TRAINING_EPOCH_COMPLETED:
            kind, metrics = "epoch", dict(d.get("metrics") or {})
        else:
            continue
        if isinstance(d.get("step"), int):
            step = d["step"]
        wall = event.timestamp.timestamp()
        epoch = d.get("epoch") if isinstance(d.get("epoch"), int) else None
        for tag, value in metrics.items():
            number = _number(value)
            if number is not None:
                out.append(Scalar(step, wall, str(tag), number, epoch, kind))
    return out


def export_run(events_path: Path, fmt: str, output: Path) -> int:
    """Write every scalar of the run to `output` as csv, parquet or a tfevents directory; returns how many."""
    scalars = run_scalars(events_path)
    if not scalars:
        raise ImportProblem(f"{events_path}: no metrics in this log (no training.batch_completed, "
                            "evaluation_completed or epoch_completed with numbers)")
    columns = ("step", "epoch", "kind", "metric", "value", "wall_time")
    rows = [(s.step, s.epoch, s.kind, s.tag, s.value, s.wall_time) for s in scalars]
    if fmt == "csv":
        import csv

        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(("" if v is None else v for v in row) for row in rows)
    elif fmt == "parquet":
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        output.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)},
                         schema=pa.schema([("step", pa.int64()), ("epoch", pa.int64()), ("kind", pa.string()),
                                           ("metric", pa.string()), ("value", pa.float64()),
                                           ("wall_time", pa.float64())]))
        pq.write_table(table, output)
    else:
        try:
            from tensorboardX import SummaryWriter  # type: ignore[import-untyped]
        except ImportError:
            raise ImportProblem(f"tfevents needs tensorboardX ({_INSTALL})") from None
        writer = SummaryWriter(logdir=str(output))
        try:
            for s in scalars:
                writer.add_scalar(s.tag, s.value, global_step=s.step, walltime=s.wall_time)
        finally:
            writer.close()
    return len(scalars)


def export_command(args: argparse.Namespace) -> int:
    from kbert_tui.cli import _error
    from kbert_tui.remote import resolve_run

    try:
        events_path = resolve_run(args.run).events_path
        if not events_path.exists():
            raise ImportProblem(f"{events_path}: no such file")
        default = {"csv": "metrics-export.csv", "parquet": "metrics-export.parquet", "tfevents": "tfevents"}
        output = Path(args.output).expanduser() if args.output else events_path.parent / default[args.format]
        count = export_run(events_path, args.format, output)
    except ImportProblem as problem:
        return _error(f"export: {problem}")
    except OSError as error:
        return _error(f"export: {error.filename or args.run}: {error.strerror or error}")
    print(f"{output}: {count:,} values ({args.format})")
    return EXIT_OK

