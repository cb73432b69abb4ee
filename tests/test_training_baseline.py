"""The bag-of-words baseline: its fit, its event from a real run, the Training pane's state and the headless lines."""

from __future__ import annotations

from datetime import datetime, UTC

import numpy as np
import pytest

from kbert_tui.cli import _Progress, main
from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.events.catalog import check_payload
from kbert_tui.events.store import read_events
from kbert_tui.state import RunState
from kbert_tui.training import Trainer
from kbert_tui.training.baseline import Vectorizer, bag_of_words_predictions, fit_logistic, ngrams
from kbert_tui.training.demo import demo_rows
from kbert_tui.training.testing import tiny_config, tiny_document, write_tiny_dataset
from test_cli import write_toml

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


def _labelled(rows: list[dict]) -> tuple[list[str], np.ndarray]:
    return [r["text"] for r in rows], np.array([r["label"] == "positive" for r in rows], dtype=np.int64)


def test_ngrams_are_lower_cased_words_and_their_pairs():
    assert ngrams("Not so GOOD, a b") == ["not", "so", "good", "not so", "so good"]


def test_the_baseline_beats_chance_on_the_tiny_datasets_texts():
    train_texts, train_y = _labelled(demo_rows(600, 1))
    val_texts, val_y = _labelled(demo_rows(200, 2, prefix="v"))
    predicted, features = bag_of_words_predictions(train_texts, train_y, val_texts, 2)
    majority = max(val_y.mean(), 1 - val_y.mean())
    assert (predicted == val_y).mean() > majority + 0.05
    assert features == len(Vectorizer(train_texts).vocabulary) > 100


def test_the_fit_separates_what_is_separable_and_the_penalty_shrinks_it():
    texts = ["good food"] * 20 + ["bad food"] * 20 + ["so so"] * 20
    y = np.array([0] * 20 + [1] * 20 + [2] * 20)
    vectorizer = Vectorizer(texts)
    x = vectorizer.transform(texts)
    w, b = fit_logistic(x, y, 3)
    assert (np.argmax(x.dot(w) + b, axis=1) == y).all()
    strong, _ = fit_logistic(x, y, 3, l2=1.0)
    assert np.linalg.norm(strong) < np.linalg.norm(w)


def test_a_run_emits_a_conforming_baseline_once_and_false_turns_it_off(tmp_path, recording_bus):
    config = tiny_config(tmp_path)
    trainer = Trainer(config, recording_bus, run_id="run-1", output_dir=config.run.output_dir)
    assert trainer.run() == "completed", trainer.failure
    (event,) = recording_bus.emitted(ev.DATA_BASELINE_COMPUTED)
    assert check_payload(event.name, event.data) == []
    assert event.data["model"] == "bag-of-words logistic regression" and event.source == "data"
    assert 0.0 <= event.data["val_f1"] <= 1.0 and 0.0 <= event.data["val_accuracy"] <= 1.0
    assert event.data["features"] > 0 and event.data["seconds"] >= 0
    recording_bus.assert_order(ev.TRAINING_STARTED, ev.DATA_BASELINE_COMPUTED, ev.TRAINING_EPOCH_STARTED)

    recording_bus.events.clear()
    off = tiny_config(tmp_path / "off", training={"baseline": False})
    assert Trainer(off, recording_bus, run_id="run-2", output_dir=off.run.output_dir).run() == "completed"
    assert recording_bus.emitted(ev.DATA_BASELINE_COMPUTED) == []


def test_the_baseline_scores_what_the_run_validates_on(tmp_path, recording_bus):
    files = write_tiny_dataset(tmp_path / "data", train=600, validation=200)
    config = tiny_config(tmp_path, data={k: str(path) for k, path in files.items()}, training={"epochs": 1})
    Trainer(config, recording_bus, run_id="run-1", output_dir=config.run.output_dir).run()
    (event,) = recording_bus.emitted(ev.DATA_BASELINE_COMPUTED)
    val_texts, val_y = _labelled(demo_rows(200, 2, prefix="v"))
    predicted, _ = bag_of_words_predictions(*_labelled(demo_rows(600, 1)), val_texts, 2)
    assert event.data["val_accuracy"] == pytest.approx((predicted == val_y).mean())


def _event(name: str, data: dict) -> Event:
    return Event(name=name, data=data, timestamp=T0, source="data", correlation_id="r")


BASELINE = {"model": "bag-of-words logistic regression", "val_accuracy": 0.77, "val_f1": 0.76, "features": 9,
            "seconds": 0.5}


def test_state_puts_the_models_accuracy_beside_the_baselines():
    state = RunState()
    assert state.training.versus_baseline is None
    before = state.training_version
    state.apply(_event(ev.DATA_BASELINE_COMPUTED, BASELINE))
    assert state.training_version > before  # the Training pane redraws
    t = state.training
    assert (t.baseline_model, t.baseline_accuracy, t.baseline_f1) == ("bag-of-words logistic regression", 0.77, 0.76)
    assert t.versus_baseline == "val_acc — · bag-of-words 0.770"
    state.apply(_event(ev.TRAINING_EPOCH_COMPLETED, {"epoch": 1, "metrics": {"val_accuracy": 0.7812}}))
    assert t.versus_baseline == "val_acc 0.781 · bag-of-words 0.770"


def test_the_training_pane_shows_the_comparison():
    from kbert_tui.tui.panes import TrainingPane
    from kbert_tui.tui.render import palette

    state = RunState()
    state.apply(_event(ev.DATA_BASELINE_COMPUTED, BASELINE))
    state.apply(_event(ev.TRAINING_EPOCH_COMPLETED, {"epoch": 1, "metrics": {"val_accuracy": 0.7812}}))
    pane = TrainingPane(state)
    rows = [line.plain for _, line in pane._rows(100, palette(True))]
    assert "val_acc 0.781 · bag-of-words 0.770" in rows


def test_headless_lines_say_the_baseline_and_carry_it_on_each_epoch(capsys):
    progress = _Progress()
    progress(_event(ev.DATA_BASELINE_COMPUTED, BASELINE))
    assert capsys.readouterr().out == ("baseline: bag-of-words logistic regression val_acc 0.7700  val_f1 0.7600 "
                                       "(9 features, 0.5 s)\n")
    progress(_event(ev.TRAINING_EPOCH_COMPLETED, {"epoch": 1, "duration": 1.0, "metrics": {
        "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.7812, "val_f1": 0.78, "samples_per_sec": 10.0}}))
    line = capsys.readouterr().out
    assert line.startswith("epoch 1: ") and "val_acc 0.7812" in line and line.endswith("· bag-of-words 0.770\n")


def test_a_headless_run_prints_the_baseline(tmp_path, capsys):
    config = write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path))
    assert main(["run", str(config), "--headless", "--output-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "baseline: bag-of-words logistic regression val_acc" in printed
    assert all("· bag-of-words 0." in line for line in printed.splitlines() if line.startswith("epoch "))
    assert any(e.name == ev.DATA_BASELINE_COMPUTED for e in read_events(tmp_path / "out" / "events.jsonl"))


def test_two_classes_weight_each_ngram_by_how_unevenly_it_falls_between_them():
    from kbert_tui.training.baseline import BagOfWords

    texts = ["great film", "great cast", "dull film", "dull cast"]
    y = np.array([1, 1, 0, 0])
    two = BagOfWords(texts, y, 2)
    columns = two.vectorizer.vocabulary
    assert two.scale[columns["great"]] == two.scale[columns["dull"]] > 0 == two.scale[columns["film"]]
    assert (np.argmax(two.log_proba(["great", "dull"]), axis=1) == [1, 0]).all()
    assert BagOfWords(texts, np.array([0, 1, 2, 0]), 3).scale is None  # several classes: plain TF-IDF
