"""Data loading and validation: clear errors or listed issues, never a traceback."""

from __future__ import annotations

import re

import pytest

from kbert_tui.config import DataSection
from kbert_tui.training.data import DataError, TextBuilder, load_data
from kbert_tui.training.demo import demo_rows, demo_splits
from kbert_tui.training.testing import write_csv


def section(tmp_path, **values):
    return DataSection(**values)


def load(recording_bus, data_section, **kw):
    return load_data(data_section, 0, recording_bus.emit_sync, **kw)


def test_empty_file(tmp_path, recording_bus):
    (tmp_path / "t.csv").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load(recording_bus, DataSection(train=tmp_path / "t.csv"))
    (done,) = recording_bus.assert_emitted("data.validation_completed", passed=False)
    assert "empty" in done.data["issues"][-1]["problem"]


def test_header_only(tmp_path, recording_bus):
    (tmp_path / "t.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="no data rows"):
        load(recording_bus, DataSection(train=tmp_path / "t.csv"))


def test_non_utf8(tmp_path, recording_bus):
    (tmp_path / "t.csv").write_bytes(b"text,label\ngood,1\ncaf\xe9 bad,0\n")
    with pytest.raises(DataError, match=r"not UTF-8.*0xe9 on line 3"):
        load(recording_bus, DataSection(train=tmp_path / "t.csv"))


def test_missing_column_emits_schema_mismatch(tmp_path, recording_bus):
    write_csv(tmp_path / "t.csv", [{"review": "x", "label": "a"}])
    with pytest.raises(DataError, match="missing column.*'text'"):
        load(recording_bus, DataSection(train=tmp_path / "t.csv"))
    (event,) = recording_bus.assert_emitted("data.schema_mismatch")
    assert event.data["expected"] == {"columns": ["text", "label"]}
    assert event.data["actual"] == {"columns": ["review", "label"]}
    assert event.data["missing"] == ["text"]
    assert event.source == "data"


def test_row_problems_are_listed_issues(tmp_path, recording_bus):
    rows = [{"text": f"row {i}", "label": "a" if i % 2 else "b"} for i in range(10)]
    rows[3]["text"] = "   "
    rows[5]["label"] = ""
    write_csv(tmp_path / "t.csv", rows)
    write_csv(tmp_path / "v.csv", [{"text": "seen", "label": "a"}, {"text": "unseen", "label": "zzz"}])
    prepared = load(recording_bus, DataSection(train=tmp_path / "t.csv", validation=tmp_path / "v.csv"))
    assert len(prepared.train.texts) == 8 and prepared.validation.texts == ["seen"]
    (done,) = recording_bus.assert_emitted("data.validation_completed", passed=True)
    problems = {(i["row"], i["problem"].split(";")[0]) for i in done.data["issues"]}
    assert (5, "empty text") in problems
    assert (7, "missing label (label)") in problems
    assert (3, "label 'zzz' never seen in training") in problems
    assert done.data["rows"] == {"train": 8, "validation": 1, "test": 0}


def test_single_class_is_an_error(tmp_path, recording_bus):
    write_csv(tmp_path / "t.csv", [{"text": f"r{i}", "label": "same"} for i in range(5)])
    with pytest.raises(DataError, match="only one class"):
        load(recording_bus, DataSection(train=tmp_path / "t.csv"))


def test_int_labels_multiclass_are_ordered_numerically(tmp_path, recording_bus):
    write_csv(tmp_path / "t.csv", [{"text": f"r{i}", "label": str(i % 3 * 5)} for i in range(30)])
    prepared = load(recording_bus, DataSection(train=tmp_path / "t.csv", validation_split=0.2))
    assert prepared.label_names == ["0", "5", "10"]
    assert len(prepared.validation.texts) == 6 and len(prepared.train.texts) == 24


def test_template_and_key_value_rows(tmp_path, recording_bus):
    rows = [{"PassengerId": str(i), "Name": f"N{i}", "Age": "" if i == 0 else "30", "Sex": "f",
             "Survived": str(i % 2)} for i in range(4)]
    write_csv(tmp_path / "titanic.csv", rows)
    prepared = load(recording_bus, DataSection(train=tmp_path / "titanic.csv",
                                               template="{Name} is {Age} years old, {Sex}",
                                               label_column="Survived", id_column="PassengerId",
                                               validation_split=0.25))
    texts = sorted(prepared.train.texts + prepared.validation.texts)
    assert "N1 is 30 years old, f" in texts and "N0 is  years old, f" in texts
    kv = TextBuilder(DataSection(template="{*}", label_column="Survived", id_column="PassengerId"),
                     ("Survived", "PassengerId"))
    assert kv(rows[0]) == "Name: N0, Sex: f"


def test_template_column_missing_is_schema_mismatch(tmp_path, recording_bus):
    write_csv(tmp_path / "t.csv", [{"Name": "a", "label": "1"}])
    with pytest.raises(DataError, match="'Age'"):
        load(recording_bus, DataSection(train=tmp_path / "t.csv", template="{Name} {Age}"))
    recording_bus.assert_emitted("data.schema_mismatch", missing=["Age"])


def test_demo_is_deterministic_balanced_and_needs_word_order():
    assert demo_rows(50, 1) == demo_rows(50, 1)
    splits = demo_splits(42)
    train = splits["train"]
    positives = sum(r["label"] == "positive" for r in train)
    assert abs(positives / len(train) - 0.5) < 0.05
    # Polarity words lean towards their class but never decide it: negations and distractors flip them.
    for word in ("great", "terrible", "excellent", "awful"):
        with_word = [r for r in train if f" {word}" in r["text"]]
        share = sum(r["label"] == "positive" for r in with_word) / len(with_word)
        assert 0.2 < share < 0.8, (word, share)


@pytest.mark.parametrize(("template", "fragment"), [
    ("{Name", "expected '}'"),
    ("{Name:>>>}", "{Name:>>>}: Unknown format code '>'"),
    ("{Name:d}", "{Name:d}: Unknown format code 'd'"),
    ("{Name!r}", "{Name!r}: a field takes no !conversion"),
])
def test_a_template_that_cannot_build_a_text_is_a_data_error_before_any_row(template, fragment):
    # "{Name:>>>}" was accepted and raised a bare ValueError on the first row
    with pytest.raises(DataError, match=r"^data\.template: .*" + re.escape(fragment)):
        TextBuilder(DataSection(template=template), ("label",))
