"""The default recipe's pieces: length-bucketed batches, the bag-of-words expert, best-epoch weights, id column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from kbert_tui.cli import _print_progress
from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.state.run_state import RunState
from kbert_tui.training import Trainer
from kbert_tui.config import parse_config
from kbert_tui.training.testing import tiny_config, tiny_document, write_csv
from kbert_tui.training.steps import combine, epoch_batches


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


def run(config, bus):
    trainer = Trainer(config, bus, run_id="recipe", output_dir=config.run.output_dir)
    outcome = trainer.run()
    assert outcome == "completed", trainer.failure
    return trainer


# ---------------------------------------------------------------------- batches


def padded_tokens(batches: list[np.ndarray], lengths: np.ndarray) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in batches)


def test_length_buckets_cover_every_row_once_and_pad_far_less():
    lengths = np.random.default_rng(0).integers(3, 64, size=2000)
    bucketed = epoch_batches(lengths, 32, np.random.default_rng(1))
    plain = epoch_batches(lengths, 32, np.random.default_rng(1), bucket=False)
    for batches in (bucketed, plain):
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(2000)) and max(len(b) for b in batches) <= 32
    real = int(lengths.sum())
    assert padded_tokens(bucketed, lengths) < 1.1 * real < 1.5 * real < padded_tokens(plain, lengths)
    # the same generator state gives the same epoch (resume relies on it); another epoch's differs
    again = epoch_batches(lengths, 32, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again, strict=True))
    other = epoch_batches(lengths, 32, np.random.default_rng(2))
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, other, strict=False))


def test_the_two_experts_multiply_their_probabilities():
    encoder = np.log(np.array([[0.6, 0.4], [0.3, 0.7]]))
    prior = np.log(np.array([[0.2, 0.8], [0.5, 0.5]]))
    joined = np.exp(combine(encoder, prior))
    expected = np.array([[0.12, 0.32], [0.15, 0.35]])
    assert np.allclose(joined, expected / expected.sum(axis=1, keepdims=True))
    assert combine(encoder, None) is encoder


# ---------------------------------------------------------------------- a real (tiny) run


def test_the_run_predicts_with_the_bag_of_words_and_reports_the_encoder_alone(tmp_path, recording_bus):
    run(tiny_config(tmp_path, training={"epochs": 2}), recording_bus)
    epochs = [e.data["metrics"] for e in recording_bus.emitted(ev.TRAINING_EPOCH_COMPLETED)]
    assert all(0.0 <= m["encoder_val_accuracy"] <= 1.0 for m in epochs)
    assert recording_bus.emitted(ev.DATA_BASELINE_COMPUTED)

    state = RunState()
    for event in recording_bus.events:
        state.apply(event)
    final = state.training.final_metrics
    assert state.training.versus_baseline.startswith(
        f"val_acc {final['val_accuracy']:.3f} (encoder {final['encoder_val_accuracy']:.3f}) · bag-of-words ")


def test_without_the_bag_of_words_the_encoder_alone_predicts(tmp_path, recording_bus):
    run(tiny_config(tmp_path, model={"with_bag_of_words": False}), recording_bus)
    epochs = [e.data["metrics"] for e in recording_bus.emitted(ev.TRAINING_EPOCH_COMPLETED)]
    assert epochs and all("encoder_val_accuracy" not in m for m in epochs)
    assert recording_bus.emitted(ev.DATA_BASELINE_COMPUTED)  # still shown: training.baseline is its own switch


def test_the_best_epochs_weights_come_back_for_the_final_metrics_and_predictions(tmp_path, recording_bus):
    # "best" = the highest training loss: an early epoch, so the last one is surely worse
    config = tiny_config(tmp_path, training={"epochs": 3, "learning_rate": 0.01,
                                             "early_stopping": {"metric": "train_loss", "mode": "max"}})
    trainer = run(config, recording_bus)
    epochs = [e.data["metrics"] for e in recording_bus.emitted(ev.TRAINING_EPOCH_COMPLETED)]
    best = max(range(3), key=lambda i: epochs[i]["train_loss"])
    assert best < 2
    (done,) = recording_bus.emitted(ev.TRAINING_COMPLETED)
    assert done.data["restored_epoch"] == best + 1 and done.data["final_metrics"] == epochs[best]
    state = RunState()
    state.apply_all(recording_bus.events)
    assert state.training.restored_epoch == best + 1  # the Training pane's "weights of epoch N"
    # the weights themselves are that epoch's: validating them again gives its numbers
    again = trainer._evaluate(trainer._encode(trainer.data)[1])
    assert again["val_loss"] == pytest.approx(epochs[best]["val_loss"], rel=1e-6)
    assert again["val_accuracy"] == epochs[best]["val_accuracy"]
    assert epochs[-1]["val_loss"] != epochs[best]["val_loss"]


def test_with_restore_best_off_the_last_epoch_stands(tmp_path, recording_bus):
    config = tiny_config(tmp_path, training={"epochs": 3, "learning_rate": 0.01, "restore_best": False,
                                             "early_stopping": {"metric": "train_loss", "mode": "max"}})
    run(config, recording_bus)
    epochs = [e.data["metrics"] for e in recording_bus.emitted(ev.TRAINING_EPOCH_COMPLETED)]
    (done,) = recording_bus.emitted(ev.TRAINING_COMPLETED)
    assert "restored_epoch" not in done.data and done.data["final_metrics"] == epochs[-1]


# ---------------------------------------------------------------------- ids for predictions.csv


def without_id_column(tmp_path: Path, test_file: Path):
    document = tiny_document(tmp_path, data={"test": str(test_file)})
    del document["data"]["id_column"]
    return parse_config(document, origin=str(tmp_path / "tiny.toml"), base_dir=tmp_path)


def kaggle_test_file(tmp_path: Path, id_header: str) -> Path:
    rows = [{id_header: f"q{n}", "text": text} for n, text in enumerate(["a great film", "a dull film", "fine"])]
    return write_csv(tmp_path / "kaggle_test.csv", rows)


@pytest.mark.parametrize("header", ["id", "ID", "Id"])
def test_a_test_column_named_id_gives_the_predictions_their_ids(tmp_path, recording_bus, header):
    test_file = kaggle_test_file(tmp_path, header)
    trainer = run(without_id_column(tmp_path, test_file), recording_bus)
    (checked,) = recording_bus.emitted(ev.DATA_VALIDATION_COMPLETED)
    assert checked.data["id_column_detected"] == header
    with Path(trainer.output_dir / "predictions.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [header, "label"] and [r[0] for r in rows[1:]] == ["q0", "q1", "q2"]


def test_without_an_id_column_the_row_number_is_the_id_and_nothing_is_claimed(tmp_path, recording_bus):
    rows = [{"text": t} for t in ["a great film", "a dull film"]]
    test_file = write_csv(tmp_path / "plain_test.csv", rows)
    trainer = run(without_id_column(tmp_path, test_file), recording_bus)
    (checked,) = recording_bus.emitted(ev.DATA_VALIDATION_COMPLETED)
    assert "id_column_detected" not in checked.data
    with Path(trainer.output_dir / "predictions.csv").open(encoding="utf-8") as handle:
        assert [r[0] for r in csv.reader(handle)] == ["id", "0", "1"]


def test_the_headless_lines_name_the_id_column_the_encoder_and_the_restored_epoch(capsys):
    def line(name, data):
        _print_progress(Event(name=name, data=data), "bag-of-words 0.740")
        return capsys.readouterr().out.strip()

    assert "'Id' column" in line(ev.DATA_VALIDATION_COMPLETED, {"passed": True, "id_column_detected": "Id"})
    metrics = {"train_loss": 0.3, "val_loss": 0.4, "val_accuracy": 0.81, "val_f1": 0.8, "encoder_val_accuracy": 0.79}
    assert "val_acc 0.8100 (encoder 0.7900)" in line(ev.TRAINING_EPOCH_COMPLETED,
                                                     {"epoch": 2, "metrics": metrics, "duration": 1.0})
    done = line(ev.TRAINING_COMPLETED, {"final_metrics": metrics, "total_duration": 9.0, "restored_epoch": 2,
                                        "best": {"metric": "val_accuracy", "value": 0.81, "epoch": 2}})
    assert done == ("completed in 9.0 s: val_acc 0.8100 (encoder 0.7900) · bag-of-words 0.740, "
                    "weights of epoch 2 (best val_accuracy)")


def test_the_default_monitored_metric_and_its_direction_agree(tmp_path):
    # the built-in demo's config is built in code, not parsed: its mode must follow the metric too
    from kbert_tui.config import default_config

    parsed = parse_config({}, origin=str(tmp_path / "empty.toml"), base_dir=tmp_path).training.early_stopping
    for section in (default_config().training.early_stopping, parsed):
        assert section.metric == "val_accuracy" and section.mode == "max"
    loss = parse_config({"training": {"early_stopping": {"metric": "val_loss"}}}, origin="x.toml",
                        base_dir=tmp_path).training.early_stopping
    assert loss.mode == "min"


def test_resuming_ignores_the_bag_of_words_switch_and_names_an_activation_change(tmp_path, recording_bus):
    run(tiny_config(tmp_path, training={"epochs": 1}), recording_bus)
    checkpoint = recording_bus.emitted(ev.MODEL_CHECKPOINT_SAVED)[-1].data["path"]
    recording_bus.clear()
    # the switch changes no weight: the checkpoint resumes without it
    run(tiny_config(tmp_path, model={"with_bag_of_words": False},
                    training={"epochs": 2, "resume_from": checkpoint}, run={"output_dir": str(tmp_path / "o2")}),
        recording_bus)
    recording_bus.clear()
    other = tiny_config(tmp_path, model={"activation": "relu"}, training={"epochs": 2, "resume_from": checkpoint},
                        run={"output_dir": str(tmp_path / "o3")})
    trainer = Trainer(other, recording_bus, run_id="r3", output_dir=other.run.output_dir)
    assert trainer.run() == "failed"
    assert "activation gelu_fast (checkpoint) vs relu (config)" in trainer.failure["error"]
    assert trainer.failure["bad_input"] is True


def test_a_headless_run_says_which_test_column_gave_the_ids(tmp_path, capsys):
    from kbert_tui.headless import run_headless

    config = without_id_column(tmp_path, kaggle_test_file(tmp_path, "Id"))
    assert run_headless(config, None) == 0
    out = capsys.readouterr().out
    assert "predictions.csv takes its ids from the test file's 'Id' column (data.id_column is not set)" in out
    completed = next(line for line in out.splitlines() if line.startswith("completed in"))
    assert "val_acc" in completed and "(encoder " in out


def test_a_best_epoch_from_before_a_resume_comes_back_from_its_checkpoint(tmp_path, recording_bus):
    watch = {"metric": "train_loss", "mode": "max"}  # the first epoch is the best: later ones are worse
    first = tiny_config(tmp_path, training={"epochs": 1, "checkpoint": {"policy": "best"}, "early_stopping": watch})
    run(first, recording_bus)
    epoch_one = recording_bus.emitted(ev.TRAINING_EPOCH_COMPLETED)[0].data["metrics"]
    best = first.run.output_dir / "checkpoints" / "best"
    recording_bus.clear()
    resumed = tiny_config(tmp_path, training={"epochs": 3, "learning_rate": 0.01, "resume_from": str(best),
                                              "checkpoint": {"policy": "best"}, "early_stopping": watch},
                          run={"output_dir": str(tmp_path / "resumed")})
    trainer = run(resumed, recording_bus)
    later = [e.data["metrics"] for e in recording_bus.emitted(ev.TRAINING_EPOCH_COMPLETED)]
    assert [m["train_loss"] < epoch_one["train_loss"] for m in later] == [True, True]
    (done,) = recording_bus.emitted(ev.TRAINING_COMPLETED)
    assert done.data["restored_epoch"] == 1 and done.data["final_metrics"] == epoch_one
    again = trainer._evaluate(trainer._encode(trainer.data)[1])
    assert again["val_loss"] == pytest.approx(epoch_one["val_loss"], rel=1e-6)


def test_an_empty_shard_has_no_rows_but_every_class(tmp_path):
    # a rank whose share of a small validation set is empty still joins the pair (and the sums) cleanly
    from kbert_tui.training.model import BertClassifier
    from kbert_tui.training.steps import _Encoded, log_probabilities

    model = BertClassifier(tiny_config(tmp_path).model, vocab_size=50, num_labels=3)
    empty = log_probabilities(model, _Encoded([], None), 8)
    assert empty.shape == (0, 3) and combine(empty, np.zeros((0, 3))).shape == (0, 3)
