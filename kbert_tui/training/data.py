"""Kaggle-style CSVs (or the built-in demo) → checked texts and label ids, reported as data.* events.

Fatal problems (empty or non-UTF-8 file, missing columns, nothing left to train on) raise DataError
with a message a user can act on; row-level problems (empty text, missing label, a validation label
never seen in training) drop the row and are listed in `data.validation_completed`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbert_tui.config import DataSection, template_problem
from kbert_tui.errors import DataError
from kbert_tui.events import catalog as ev

from .demo import demo_splits

Emit = Callable[..., None]
MAX_LISTED_ISSUES = 50


@dataclass
class Split:
    texts: list[str]
    labels: list[int] | None  # None for a test split
    ids: list[str]


@dataclass
class PreparedData:
    train: Split
    validation: Split
    test: Split | None
    label_names: list[str]
    issues: list[dict[str, Any]] = field(default_factory=list)
    id_header: str = "id"
    label_header: str = "label"
    id_column_detected: str | None = None  # the test file's `id` column, used with data.id_column unset


@dataclass
class _Table:
    path: str
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (line number, row)


def read_csv(path: Path) -> _Table:
    """Read a CSV with a header row; DataError for empty, non-UTF-8 or malformed files."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty (expected a CSV with a header row)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text: byte 0x{raw[error.start]:02x} on line {line}; save the file as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            rows.append((reader.line_num, dict(zip(header, values, strict=False))))
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV on line {reader.line_num}: {error}") from None
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")
    return _Table(str(path), header, rows)


class TextBuilder:
    """Turns a row into text: joined text columns, or a template with {Column} and {*} (key: value pairs)."""

    def __init__(self, section: DataSection, exclude: tuple[str, ...]) -> None:
        self.template = section.template
        self.columns = section.text_columns
        self.exclude = exclude
        if self.template is not None:
            if problem := template_problem(self.template):
                raise DataError(f"data.template: {problem} in {self.template!r}")
            self.parts = list(string.Formatter().parse(self.template))
        else:
            self.parts = []

    def required_columns(self) -> list[str]:
        if self.template is None:
            return list(self.columns)
        return [name for _, name, _, _ in self.parts if name and name != "*"]

    def __call__(self, row: dict[str, str]) -> str:
        if self.template is None:
            return " ; ".join(row.get(c, "").strip() for c in self.columns if row.get(c, "").strip())
        out = []
        for literal, name, spec, _ in self.parts:
            out.append(literal)
            if name == "*":
                out.append(", ".join(f"{k}: {v.strip()}" for k, v in row.items()
                                     if k not in self.exclude and v.strip()))
            elif name:
                out.append(format(row.get(name, "").strip(), spec or ""))
        return "".join(out).strip()


def _label_order(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(labels)


def load_data(section: DataSection, seed: int, emit: Emit, *, label_names: list[str] | None = None) -> PreparedData:
    """Read, check and split the data; `label_names` (from a checkpoint) fixes the label ids."""
    emit(ev.DATA_VALIDATION_STARTED, {"validation_type": "schema_and_rows", "files": _files(section)}, source="data")
    issues: list[dict[str, Any]] = []
    try:
        prepared = _load(section, seed, emit, issues, label_names)
    except DataError as error:
        issues.append({"file": None, "row": None, "problem": str(error), "severity": "error"})
        emit(ev.DATA_VALIDATION_COMPLETED, _summary(False, issues, None), source="data")
        raise
    emit(ev.DATA_VALIDATION_COMPLETED, _summary(True, issues, prepared), source="data")
    prepared.issues = issues
    return prepared


def _files(section: DataSection) -> dict[str, str | None]:
    if section.is_builtin_demo:
        return {"train": "<built-in demo>", "validation": "<built-in demo>", "test": "<built-in demo>"}
    return {k: str(getattr(section, k)) if getattr(section, k) else None for k in ("train", "validation", "test")}


def _summary(passed: bool, issues: list[dict[str, Any]], prepared: PreparedData | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "passed": passed,
        "issues": issues[:MAX_LISTED_ISSUES],
        "num_issues": len(issues),
    }
    if prepared is not None:
        data["rows"] = {
            "train": len(prepared.train.texts),
            "validation": len(prepared.validation.texts),
            "test": len(prepared.test.texts) if prepared.test else 0,
        }
        data["labels"] = prepared.label_names
        if prepared.id_column_detected:
            data["id_column_detected"] = prepared.id_column_detected
        data["num_labels"] = len(prepared.label_names)
    return data


def _load(
    section: DataSection, seed: int, emit: Emit, issues: list[dict[str, Any]], fixed_labels: list[str] | None
) -> PreparedData:
    detected = None
    if section.is_builtin_demo:
        splits = demo_splits(seed)
        header = ["id", "text", "label"]
        tables = {
            name: _Table(f"<demo:{name}>", header, [(i + 2, r) for i, r in enumerate(rows)])
            for name, rows in splits.items()
        }
        section = DataSection(id_column="id", text_columns=("text",), label_column="label",
                              max_length=section.max_length, batch_size=section.batch_size)
    else:
        tables = {"train": read_csv(section.train)}  # type: ignore[arg-type]
        if section.validation is not None:
            tables["validation"] = read_csv(section.validation)
        if section.test is not None:
            tables["test"] = read_csv(section.test)
            detected = _detect_id_column(section, tables["test"])
            if detected is not None:
                section = dataclasses.replace(section, id_column=detected)

    exclude = tuple(c for c in (section.label_column, section.id_column) if c)
    builder = TextBuilder(section, exclude)
    for name, table in tables.items():
        needed = builder.required_columns() + ([section.label_column] if name != "test" else [])
        if section.id_column and name == "test":
            needed.append(section.id_column)
        missing = [c for c in needed if c not in table.header]
        if missing:
            emit(
                ev.DATA_SCHEMA_MISMATCH,
                {
                    "file": table.path,
                    "split": name,
                    "expected": {"columns": needed},
                    "actual": {"columns": table.header},
                    "missing": missing,
                },
                source="data",
            )
            raise DataError(
                f"{table.path}: missing column(s) {', '.join(repr(m) for m in missing)}; "
                f"the file has {', '.join(repr(h) for h in table.header)} (see data.text_columns, data.template, "
                f"data.label_column, data.id_column)"
            )

    train_rows = _labelled(tables["train"], builder, section, issues)
    if not train_rows:
        raise DataError(f"{tables['train'].path}: no usable rows (every row lacks text or a label)")
    if "validation" in tables:
        val_rows = _labelled(tables["validation"], builder, section, issues)
    else:
        order = list(range(len(train_rows)))
        random.Random(seed).shuffle(order)
        n_val = max(1, round(len(train_rows) * section.validation_split))
        if len(train_rows) - n_val < 1:
            raise DataError(f"{tables['train'].path}: too few rows ({len(train_rows)}) to hold out a validation split")
        held = set(order[:n_val])
        val_rows = [r for i, r in enumerate(train_rows) if i in held]
        train_rows = [r for i, r in enumerate(train_rows) if i not in held]

    names = fixed_labels or _label_order({label for _, _, label, _ in train_rows})
    if len(names) < 2:
        raise DataError(f"{tables['train'].path}: the training labels hold only one class ({names[0]!r}); "
                        "need two or more")
    index = {n: i for i, n in enumerate(names)}
    for split_name, rows in (("train", train_rows), ("validation", val_rows)):
        for line, _, label, path in rows:
            if label not in index:
                issues.append({"file": path, "row": line,
                               "problem": f"label {label!r} never seen in training; row skipped",
                               "severity": "warning", "split": split_name})
    train_rows = [r for r in train_rows if r[2] in index]
    val_rows = [r for r in val_rows if r[2] in index]
    if not val_rows:
        raise DataError(f"{tables.get('validation', tables['train']).path}: no usable validation rows")

    test = None
    if "test" in tables:
        t = tables["test"]
        ids, texts = [], []
        for position, (line, row) in enumerate(t.rows):
            text = builder(row)
            if not text:
                issues.append({"file": t.path, "row": line, "problem": "empty text; predicted from an empty input",
                               "severity": "warning"})
            ids.append(row.get(section.id_column, "").strip() if section.id_column else str(position))
            texts.append(text)
        test = Split(texts, None, ids)

    return PreparedData(
        train=_split(train_rows, index),
        validation=_split(val_rows, index),
        test=test,
        label_names=names,
        id_header=section.id_column or "id",
        label_header=section.label_column,
        id_column_detected=detected,
    )


def _detect_id_column(section: DataSection, test: _Table) -> str | None:
    """With `id_column` unset, the test file's column named `id` (any case), unless it is a text column:
    it gives predictions.csv its ids, as a Kaggle-style user expects (`data.validation_completed` says so)."""
    if section.id_column is not None:
        return None
    found = next((h for h in test.header if h.lower() == "id"), None)
    if found is None or (section.template is None and found in section.text_columns):
        return None
    return found


def _labelled(table: _Table, builder: TextBuilder, section: DataSection, issues: list[dict[str, Any]]):
    rows = []
    for position, (line, row) in enumerate(table.rows):
        text = builder(row)
        label = row.get(section.label_column, "").strip()
        if not text:
            issues.append({"file": table.path, "row": line, "problem": "empty text; row skipped",
                           "severity": "warning"})
            continue
        if not label:
            issues.append({"file": table.path, "row": line,
                           "problem": f"missing label ({section.label_column}); row skipped", "severity": "warning"})
            continue
        row_id = row.get(section.id_column, "").strip() if section.id_column else str(position)
        rows.append((line, (text, row_id), label, table.path))
    return rows


def _split(rows, index: dict[str, int]) -> Split:
    return Split(
        texts=[r[1][0] for r in rows],
        labels=[index[r[2]] for r in rows],
        ids=[r[1][1] for r in rows],
    )
