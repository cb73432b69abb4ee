"""The mlx-lm callback on a real (tiny, randomly initialised) LoRA fine-tune: mlx-lm's own llama classes and
trainer, no download."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbert_tui.events import catalog as ev
from kbert_tui.events.store import read_events

pytest.importorskip("mlx_lm")

import mlx.core as mx  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
from mlx_lm.models import llama  # noqa: E402
from mlx_lm.tuner.trainer import TrainingArgs, train  # noqa: E402
from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: E402

from kbert_tui.integrations.mlx_lm import Callback  # noqa: E402


@pytest.fixture(autouse=True)
def not_watched(monkeypatch):
    monkeypatch.delenv("KBERT_TUI_RUN_DIR", raising=False)
    monkeypatch.delenv("KBERT_TUI_RUN_ID", raising=False)


def tiny_lora_model() -> llama.Model:
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                                        num_attention_heads=4, rms_norm_eps=1e-5, vocab_size=64))
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
    return model


def dataset(rows: int) -> list[tuple[list[int], int]]:
    """Token sequences with a pattern to learn (each token + 1), mlx-lm's (tokens, prompt offset) items."""
    return [([(start + i) % 64 for i in range(12)], 0) for start in range(rows)]


def fine_tune(tmp_path: Path, callback: Callback, iters: int = 20) -> None:
    model = callback.model
    args = TrainingArgs(batch_size=2, iters=iters, val_batches=2, steps_per_report=5, steps_per_eval=10,
                        steps_per_save=1000, max_seq_length=32, adapter_file=str(tmp_path / "adapters.safetensors"))
    train(model, optim.Adam(learning_rate=1e-3), dataset(16), dataset(6), args=args, training_callback=callback)


def test_a_lora_fine_tune_reports_every_training_and_validation_report(tmp_path: Path):
    model = tiny_lora_model()
    with Callback(project="lora", config={"rank": 4}, model=model, dir=tmp_path) as callback:
        fine_tune(tmp_path, callback)
    events = list(read_events(callback.run.events_path))
    for event in events:
        assert ev.check_payload(event.name, event.data) == [], event.name
    batches = [e.data for e in events if e.name == ev.TRAINING_BATCH_COMPLETED]
    assert [(b["step"], b["batch"]) for b in batches] == [(5, 5), (10, 10), (15, 15), (20, 20)]  # iterations
    assert set(batches[0]["metrics"]) == {"learning_rate", "iterations_per_second", "tokens_per_second",
                                          "trained_tokens", "peak_memory_gb"}
    assert all(b["loss"] > 0 for b in batches) and batches[-1]["metrics"]["trained_tokens"] > 0
    evaluations = [(e.data["step"], sorted(e.data["metrics"])) for e in events
                   if e.name == ev.TRAINING_EVALUATION_COMPLETED]
    assert evaluations == [(0, ["val_loss", "val_time"]), (9, ["val_loss", "val_time"]),
                           (19, ["val_loss", "val_time"])]
    started = next(e.data for e in events if e.name == ev.TRAINING_STARTED)
    assert started["model_type"] == "Model" and started["num_parameters"] > 0
    assert events[-1].name != ev.TRAINING_FAILED and ev.TRAINING_COMPLETED in [e.name for e in events]


def test_a_stop_request_ends_train_at_the_next_report_and_saves_the_adapters(tmp_path: Path):
    model = tiny_lora_model()
    with Callback(project="lora", model=model, dir=tmp_path) as callback:
        callback.run.control.request_stop("enough", "test")  # as a monitor's request would, through the session
        fine_tune(tmp_path, callback, iters=40)
    events = list(read_events(callback.run.events_path))
    names = [e.name for e in events]
    assert ev.TRAINING_BATCH_COMPLETED not in names  # stopped at the first report: the validation at iteration 0
    stopped = next(e.data for e in events if e.name == ev.TRAINING_STOPPED)
    assert stopped["reason"] == "enough" and stopped["step"] == 0
    saved = Path(stopped["checkpoint_path"])
    assert saved == callback.run.dir / "checkpoints" / "step-0" / "adapters.safetensors"
    adapters = mx.load(str(saved))
    assert adapters and all("lora" in name for name in adapters)
