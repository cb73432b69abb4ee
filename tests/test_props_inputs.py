"""The config reader and the CSV reader against generated files (issue 19).

A config file is read into a RunConfig or refused with a ConfigError in one line that names the file
and a key that was wrong, never a traceback: generated from the key declarations themselves (valid and
invalid values of each key, unknown keys, wrong types) and as arbitrary text. A CSV file is read into
data or refused with a DataError naming the file, never a traceback: quoting, BOM, CRLF, empty
fields, a missing label column, unknown labels, huge fields, non-UTF-8 bytes; a well-formed file's
rows come back as written.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import tempfile
import typing
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kbert_tui.config import SECTIONS, ConfigError, DataSection, UserInputError, load_config
from kbert_tui.training.data import DataError, TextBuilder, load_data

# ------------------------------------------------------------------ TOML written from a document


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_text(document: dict[str, Any], prefix: str = "") -> str:
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)]
    text = (f"[{prefix}]\n" if prefix else "") + "".join(line + "\n" for line in lines)
    for key, value in document.items():
        if isinstance(value, dict):
            text += toml_text(value, f"{prefix}.{key}" if prefix else key)
    return text


def write(document: dict[str, Any] | str | bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="props-config-"))
    path = folder / "run.toml"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document if isinstance(document, str) else toml_text(document), encoding="utf-8")
    return path


# ------------------------------------------------------------------ values from the declarations

# Keys a value can't be judged alone for: paths (must exist), keys read by custom code, keys that need
# data.train, and those bound to another key (num_heads | hidden_size, max_position >= max_length).
NOT_ALONE = {"data.validation", "data.test", "data.id_column", "data.text_columns", "data.template",
             "data.label_column", "data.max_length", "model.hidden_size", "model.num_heads", "model.max_position",
             "events.broker", "training.train_layers"}
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # TOML and UTF-8 hold no lone surrogates
SAFE_TEXT = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)


def declared() -> list[tuple[str, str, dataclasses.Field[Any], Any]]:
    """(section, key, field, type) for every declared scalar key."""
    out = []
    for section, cls in SECTIONS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if isinstance(kind, type) and dataclasses.is_dataclass(kind):
                continue
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            out.append((section, f.name, f, args[0] if args else kind))
    return out


KEYS = declared()
JUDGED_ALONE = [k for k in KEYS if f"{k[0]}.{k[1]}" not in NOT_ALONE and not k[2].metadata["custom"]
                and not k[2].metadata["path"]]


def valid_value(f: dataclasses.Field[Any], kind: Any) -> st.SearchStrategy[Any]:
    meta = f.metadata
    if meta["choices"]:
        return st.sampled_from(meta["choices"])
    if kind is bool:
        return st.booleans()
    low, high = meta["minimum"], meta["maximum"]
    if kind is int:
        return st.integers(low if low is not None else -(2**40), high if high is not None else 2**40)
    if kind is float:
        return st.floats(low if low is not None else -1e9, high if high is not None else 1e9,
                         exclude_min=bool(meta["exclusive_min"]), allow_nan=False)
    return SAFE_TEXT


def invalid_value(f: dataclasses.Field[Any], kind: Any) -> st.SearchStrategy[Any]:
    meta = f.metadata
    wrong_type: st.SearchStrategy[Any] = st.one_of(st.lists(st.integers(), max_size=2),
                                                   st.dictionaries(SAFE_TEXT, st.integers(), max_size=1))
    if meta["choices"]:
        return st.one_of(wrong_type, st.integers(), SAFE_TEXT.filter(lambda s: s not in meta["choices"]))
    if kind is bool:
        return st.one_of(wrong_type, st.integers(), st.just("true"))
    if kind in (int, float):
        low, high = meta["minimum"], meta["maximum"]
        outside = []
        if low is not None:
            outside.append(st.just(low) if meta["exclusive_min"] else st.just(low - 1))
        if high is not None:
            outside.append(st.just(high + 1) if kind is int else st.just(high * 2 + 1))
        extra: list[st.SearchStrategy[Any]] = [st.just(0.5)] if kind is int else [st.just(math.nan), st.just(math.inf)]
        return st.one_of(wrong_type, st.booleans(), st.just("3"), *outside, *extra)
    if meta["path"]:
        return st.one_of(wrong_type, st.just("no/such/file.csv") if meta["path"] != "out" else st.just(7),
                         st.just("bad\x00path"), st.just("~no_such_user_kbert/x"))
    return st.one_of(wrong_type, st.just(""), st.just("   "))


@st.composite
def valid_documents(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    chosen = draw(st.lists(st.sampled_from(JUDGED_ALONE), unique_by=lambda k: (k[0], k[1]), max_size=10))
    document: dict[str, Any] = {}
    expected = {}
    for section, key, f, kind in chosen:
        value = draw(valid_value(f, kind))
        table = document
        for part in section.split("."):
            table = table.setdefault(part, {})
        table[key] = value
        expected[f"{section}.{key}"] = value
    return document, expected


@st.composite
def invalid_documents(draw: Any) -> tuple[dict[str, Any], set[str]]:
    document, _ = draw(valid_documents())
    bad = set()
    for section, key, f, kind in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3,
                                               unique_by=lambda k: (k[0], k[1]))):
        table = document
        for part in section.split("."):
            table = table.setdefault(part, {})
        if draw(st.booleans()) or f"{section}.{key}" in NOT_ALONE:
            table[key + draw(st.sampled_from(["_", "s", "x"]))] = 1  # an unknown key (a typo)
            bad.add(f"{section}.{key}")
        else:
            table[key] = draw(invalid_value(f, kind))
            bad.add(f"{section}.{key}")
    return document, bad


# ------------------------------------------------------------------ config properties


@given(valid_documents())
def test_valid_values_of_every_key_load_as_written(case):
    document, expected = case
    config = load_config(write(document))
    for dotted, value in expected.items():
        got: Any = config
        for part in dotted.split("."):
            got = getattr(got, part)
        assert got == value, dotted


@given(invalid_documents())
def test_a_wrong_value_or_unknown_key_is_one_line_naming_the_file_and_a_wrong_key(case):
    document, bad = case
    path = write(document)
    try:
        load_config(path)
    except ConfigError as error:
        message = str(error)
    else:
        raise AssertionError(f"accepted {document}")
    assert message.startswith(f"{path}: ") and "\n" not in message and "\x00" not in message
    named = message[len(f"{path}: "):].split(":")[0]
    assert any(named.startswith(key) for key in bad), (message, bad)


TOML_BITS = st.sampled_from(["[run]\n", "[data]\n", "[model]\n", "[[rules]]\n", "[plugins.x]\n", "name = ",
                             '"x"', "1", "1e400", "nan", "[", "]", "{", "}", "=", "\n", "a.b.c = 1\n",
                             "plugin = \"metrics_csv\"\n", 'when = "training.*"\n', 'action = "stop"\n',
                             '"\\u0000"', "'''", "\ufeff", "\r\n", "~", "\x00"])


@settings(max_examples=80)
@given(st.one_of(st.binary(max_size=60), st.lists(TOML_BITS, max_size=14).map("".join).map(str.encode)))
def test_any_bytes_are_a_config_or_a_config_error(raw):
    path = write(raw)
    try:
        load_config(path)
    except UserInputError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)


def test_deep_nesting_and_an_unknown_home_are_config_errors():
    for text, expected in (("x = " + "[" * 5000 + "]" * 5000, "nested too deeply"),
                           ('[run]\noutput_dir = "~no_such_user_kbert/x"', "run.output_dir"),
                           ('[events]\npath = "~no_such_user_kbert/x"', "events.path"),
                           ('[run]\noutput_dir = "a\\u0000b"', "run.output_dir"),
                           ('[data]\ntrain = "t.csv"\ntemplate = "{text:>>>}"', "data.template"),
                           ('[data]\ntrain = "t.csv"\ntemplate = "{"', "data.template"),
                           ('[run]\nname = "a\\u001b[2J"', "run.name")):
        path = write(text)
        (path.parent / "t.csv").write_text("text,label\na,0\nb,1\n")
        try:
            load_config(path)
        except ConfigError as error:
            assert expected in str(error) and "\n" not in str(error), str(error)
        else:
            raise AssertionError(f"accepted {text!r}")


# ------------------------------------------------------------------ CSV files

CELL = st.one_of(st.sampled_from(["", " ", "a", "pos", "neg", "0", "1", "great film", 'say "hi"', "a,b", "x\ny",
                                  "\r", "\ufeffb", "été", "\x00", "  padded  "]),
                 TEXT)
LABELS = st.sampled_from(["pos", "neg", "0", "1", "2", "", " neg ", "nan"])


@st.composite
def csv_files(draw: Any) -> tuple[bytes, list[str], list[dict[str, str]], bool]:
    header = draw(st.lists(st.sampled_from(["text", "label", "id", "extra"]), min_size=1, max_size=4, unique=True))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        rows.append({c: draw(LABELS) if c == "label" else draw(CELL) for c in header})
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows([[row[c] for c in header] for row in rows])
    raw = out.getvalue().encode("utf-8")
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw  # a BOM, as Excel writes
    damaged = False
    damage = draw(st.sampled_from(["none", "none", "byte", "quote", "huge", "cut"]))
    if damage != "none" and raw:
        at = draw(st.integers(0, len(raw)))
        damaged = True
        raw = raw[:at] + {"byte": b"\xff\xfe", "quote": b'"', "huge": b"h" * 200_000, "cut": b""}[damage] + raw[at:] \
            if damage != "cut" else raw[:at]
    return raw, header, rows, damaged


def usable(header: list[str], rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """The (text, label) pairs a reader must keep: rows with some non-blank value, text and a label."""
    kept = []
    for row in rows:
        if not any(v.strip() for v in row.values()):
            continue
        text, label = row.get("text", "").strip(), row.get("label", "").strip()
        if text and label:
            kept.append((text, label))
    return kept


@settings(max_examples=100)
@given(csv_files(), st.sampled_from([None, "{text} / {extra}", "{*}"]))
def test_a_csv_file_is_data_or_an_error_naming_it(case, template):
    raw, header, rows, damaged = case
    folder = Path(tempfile.mkdtemp(prefix="props-csv-"))
    path = folder / "train.csv"
    path.write_bytes(raw)
    section = DataSection(train=path, template=template, label_column="label", validation_split=0.5)
    try:
        data = load_data(section, 1, lambda *args, **kwargs: None)
    except DataError as error:
        assert str(path) in str(error) and "\n" not in str(error).strip(), str(error)
        return
    assert len(data.label_names) >= 2 and data.train.texts and data.validation.texts
    if damaged or template is not None:
        return
    expected = Counter(usable(header, rows))
    got = Counter(zip(data.train.texts + data.validation.texts,
                      [data.label_names[i] for i in data.train.labels + data.validation.labels], strict=True))
    assert not got - expected  # nothing invented
    train_labels = {data.label_names[i] for i in data.train.labels}
    assert all(label not in train_labels for (_, label) in expected - got)  # only unseen labels dropped


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
       st.dictionaries(st.sampled_from(["text", "x", "{", "*"]), TEXT))
def test_a_template_the_config_accepts_builds_a_text_from_any_row(template, row):
    path = write(toml_text({"data": {"train": "t.csv", "template": template}}))
    (path.parent / "t.csv").write_text("text,label\na,0\nb,1\n")
    try:
        config = load_config(path)
    except ConfigError as error:
        assert "data.template" in str(error)
        return
    assume(config.data.template is not None)
    assert isinstance(TextBuilder(config.data, ("label",))(row), str)


# ------------------------------------------------------------------ the control file, read in bounded steps


@settings(max_examples=80)
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\x00", b"")) | st.sampled_from(
    [b"\n", b"\r\n", b"   \n", b"x" * 40, b"{\"a\": 1}\n"]), max_size=12), st.integers(1, 9), st.integers(8, 24))
def test_the_control_file_reader_gives_a_plain_split_of_what_was_appended(pieces, budget, longest):
    """Appended in pieces, read in steps of `budget` bytes, lines over `longest` bytes skipped: the same lines
    and the same count of skipped ones as splitting the whole file at once."""
    import kbert_tui.remote.local as local

    folder = Path(tempfile.mkdtemp(prefix="props-control-"))
    path = folder / "control.jsonl"
    with _patched(local, _READ_BUDGET=budget, MAX_REQUEST_BYTES=longest):
        reader = local.ControlFile(path)
        assert reader.open(from_end=True) is None
        got: list[bytes] = []
        for piece in pieces:
            with open(path, "ab") as fh:
                fh.write(piece)
            for _ in range(10_000):
                lines, more = reader.read_lines()
                got += lines
                if not more:
                    break
        reader.close()
    whole = b"".join(pieces)
    *complete, tail = whole.split(b"\n")
    expected = [line.strip() for line in complete if len(line) <= longest and line.strip()]
    skipped = sum(len(line) > longest for line in complete) + (len(tail) > longest)
    assert got == expected and reader.oversize == skipped


class _patched:
    """Module attributes set for a block (a monkeypatch usable inside a Hypothesis example)."""

    def __init__(self, module: Any, **values: Any) -> None:
        self.module, self.values, self.saved = module, values, {}

    def __enter__(self) -> None:
        for name, value in self.values.items():
            self.saved[name] = getattr(self.module, name)
            setattr(self.module, name, value)

    def __exit__(self, *exc: object) -> None:
        for name, value in self.saved.items():
            setattr(self.module, name, value)
