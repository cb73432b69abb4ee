"""Fine-tuning a pretrained BERT-family checkpoint (`[model] pretrained`) in MLX.

The checkpoint loads under Hugging Face's names (`BertEncoder`); the top `training.train_layers` layers and a
head train (`FineTunedBert`, the run's model: its checkpoints hold only these weights, plus a pointer to the
base in state.json); the embeddings and the layers below stay frozen, so their outputs for every text are
computed once per run (the cached-features pass, reported as `model.features_progress`) and each step runs
only the layers that train.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
from tokenizers import Tokenizer

from kbert_tui.config import RunConfig
from kbert_tui.events import catalog as ev

from .hf_checkpoint import (
    CheckpointInfo,
    PretrainedError,
    expected_shapes,
    inspect_checkpoint,
)
from .model import BertEncoder, FineTunedBert, count_parameters
from .tokenizer import PAD_ID, bert_tokenizer, load_tokenizer

Emit = Callable[..., None]
FEATURE_BATCH = 64  # texts per batch of the cached-features pass (sorted by length, so they pad little)
PROGRESS_EVERY_S = 1.0


def load_encoder(info: CheckpointInfo, dropout: float = 0.0) -> BertEncoder:
    """The checkpoint's embeddings and layers in MLX, float32, every weight checked by name and shape."""
    arrays: dict[str, mx.array] = {}
    for path in info.weight_files:
        try:
            loaded = mx.load(str(path))
        except (RuntimeError, ValueError, OSError) as error:
            raise PretrainedError(f"{path}: unreadable weights ({error})") from None
        if not isinstance(loaded, dict):
            raise PretrainedError(f"{path}: not a file of named tensors")
        arrays.update(loaded)
    weights = []
    for name, shape in expected_shapes(info).items():
        stored = info.weight_name(name)
        value = arrays.get(stored)
        if value is None:
            value = arrays.get(f"{info.model_type}.{stored}")
        if value is None or tuple(value.shape) != shape:
            raise PretrainedError(f"{info.weight_files[0]}: {stored} is missing or not of shape {list(shape)}")
        weights.append((name, value.astype(mx.float32)))
    encoder = BertEncoder(info.vocab_size, info.hidden_size, info.num_heads, info.intermediate_size,
                          info.max_position, info.type_vocab_size, info.layer_norm_eps, info.num_layers,
                          info.activation, dropout)
    encoder.load_weights(weights, strict=True)
    mx.eval(encoder.parameters())
    return encoder


def load_checkpoint_tokenizer(info: CheckpointInfo) -> Tokenizer:
    """The checkpoint's own tokenizer: tokenizer.json, else a BERT WordPiece over vocab.txt."""
    try:
        if info.tokenizer_file.name == "tokenizer.json":
            tokenizer = load_tokenizer(info.tokenizer_file)
        else:
            tokenizer = bert_tokenizer(info.tokenizer_file, lowercase=info.lowercase)
    except Exception as error:  # noqa: BLE001 - tokenizers raises plain Exceptions on a bad file
        raise PretrainedError(f"{info.tokenizer_file}: unreadable tokenizer ({error})") from None
    for token in ("[CLS]", "[SEP]", "[UNK]"):
        if tokenizer.token_to_id(token) is None:
            raise PretrainedError(f"{info.tokenizer_file}: no {token} token (a BERT WordPiece tokenizer is expected)")
    if tokenizer.token_to_id("[PAD]") != PAD_ID:
        raise PretrainedError(f"{info.tokenizer_file}: [PAD] should be token {PAD_ID}, is "
                              f"{tokenizer.token_to_id('[PAD]')}")
    if tokenizer.get_vocab_size() > info.vocab_size:
        raise PretrainedError(f"{info.tokenizer_file}: {tokenizer.get_vocab_size()} tokens, but the embeddings "
                              f"hold {info.vocab_size} (config.json vocab_size)")
    return tokenizer


@dataclass
class FineTune:
    """A run's pretrained checkpoint: the frozen part, the layers that train, its tokenizer."""

    info: CheckpointInfo
    encoder: BertEncoder
    tokenizer: Tokenizer
    train_layers: int
    pooling: str
    seconds: float  # spent loading

    @classmethod
    def load(cls, config: RunConfig) -> FineTune:
        assert config.model.pretrained is not None
        started = time.perf_counter()
        info = inspect_checkpoint(str(config.model.pretrained), config.model.pretrained)
        if config.training.train_layers > info.num_layers:
            raise PretrainedError(f"training.train_layers {config.training.train_layers}: {info.folder.name} has "
                                  f"{info.num_layers} layers")
        return cls(info, load_encoder(info, config.model.dropout), load_checkpoint_tokenizer(info),
                   config.training.train_layers, config.model.pooling, time.perf_counter() - started)

    @property
    def frozen_layers(self) -> int:
        return self.info.num_layers - self.train_layers

    def classifier(self, num_labels: int, dropout: float) -> FineTunedBert:
        """The run's model: the top layers (their pretrained weights) and a new head."""
        return FineTunedBert(list(self.encoder.encoder.layer[self.frozen_layers:]), self.info.hidden_size,
                             num_labels, self.pooling, dropout)

    def shape(self) -> dict[str, Any]:
        """What a checkpoint of this run must match to be resumed: the base model and what trains."""
        i = self.info
        return {"pretrained": str(i.folder), "base_fingerprint": i.fingerprint, "model_type": i.model_type,
                "num_layers": i.num_layers, "hidden_size": i.hidden_size, "train_layers": self.train_layers,
                "pooling": self.pooling, "vocab_size": i.vocab_size}

    def announce(self, emit: Emit, model: FineTunedBert) -> None:
        """model.pretrained_loaded: what is frozen and what trains, in parameters."""
        frozen = self.frozen_layers
        trainable = count_parameters(model)
        emit(ev.MODEL_PRETRAINED_LOADED, {
            "path": str(self.info.folder), "model_type": self.info.model_type, "num_layers": self.info.num_layers,
            "hidden_size": self.info.hidden_size, "train_layers": self.train_layers, "pooling": self.pooling,
            "frozen": ["embeddings"] + ([_layers(1, frozen)] if frozen else []),
            "trainable": ([_layers(frozen + 1, self.info.num_layers)] if self.train_layers else []) + ["head"],
            "trainable_parameters": trainable,
            "frozen_parameters": count_parameters(self.encoder) - (trainable - count_parameters(model.classifier)),
            "seconds": self.seconds,
        }, source="model")

    def features(self, splits: Sequence[list[list[int]]], emit: Emit) -> list[list[np.ndarray]]:
        """Each text's frozen-layer outputs (tokens × hidden, float32), for every split: computed once, in
        batches of texts of similar length, with `model.features_progress` about every second."""
        rows = [(s, r) for s, ids in enumerate(splits) for r in range(len(ids))]
        order = sorted(range(len(rows)), key=lambda k: len(splits[rows[k][0]][rows[k][1]]))
        total_tokens = sum(len(ids) for split in splits for ids in split) or 1
        out: list[list[np.ndarray]] = [[np.zeros(0, np.float32)] * len(ids) for ids in splits]
        self.encoder.eval()
        started = last = time.perf_counter()
        done_tokens = 0
        payload = {"done": 0, "total": len(rows), "layers": self.frozen_layers}
        emit(ev.MODEL_FEATURES_PROGRESS, {**payload, "seconds": 0.0, "eta_s": None}, source="model")
        for start in range(0, len(order), FEATURE_BATCH):
            batch = [rows[k] for k in order[start: start + FEATURE_BATCH]]
            seqs = [splits[s][r] for s, r in batch]
            ids = np.full((len(seqs), max(len(q) for q in seqs)), PAD_ID, dtype=np.int32)
            for n, q in enumerate(seqs):
                ids[n, : len(q)] = q
            hidden = self.encoder.hidden_states(mx.array(ids), mx.array((ids != PAD_ID).astype(np.int32)),
                                                self.frozen_layers)
            values = np.array(hidden, dtype=np.float32)
            for n, (s, r) in enumerate(batch):
                out[s][r] = values[n, : len(seqs[n])]
            done_tokens += sum(len(q) for q in seqs)
            now = time.perf_counter()
            if now - last >= PROGRESS_EVERY_S and start + FEATURE_BATCH < len(order):
                last = now
                eta_s = (now - started) * (total_tokens - done_tokens) / done_tokens
                emit(ev.MODEL_FEATURES_PROGRESS,
                     {**payload, "done": start + len(batch), "seconds": now - started, "eta_s": eta_s}, source="model")
        size = sum(f.nbytes for split in out for f in split) / 2**20
        emit(ev.MODEL_FEATURES_PROGRESS, {**payload, "done": len(rows), "seconds": time.perf_counter() - started,
                                          "eta_s": 0.0, "size_mb": size}, source="model")
        return out


def _layers(first: int, last: int) -> str:
    """"layer 3" or "layers 1-4" (counted from 1, the embeddings' side)."""
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def pad_features(features: list[np.ndarray], rows: np.ndarray, length: int) -> mx.array:
    """The cached features of `rows`, zero-padded to `length` tokens (batch × length × hidden)."""
    x = np.zeros((len(rows), length, features[rows[0]].shape[1]), dtype=np.float32)
    for n, i in enumerate(rows):
        x[n, : len(features[i])] = features[i]
    return mx.array(x)


def embed(encoder: BertEncoder, tokenizer: Tokenizer, texts: Sequence[str], pooling: str = "mean",
          max_length: int = 128) -> np.ndarray:
    """Sentence embeddings through every layer (texts × hidden): what a sentence-transformers model computes
    before its normalization; used to check a load against a reference."""
    from .model import pool
    from .tokenizer import encode

    seqs = encode(tokenizer, texts, max_length)
    ids = np.full((len(seqs), max(len(q) for q in seqs)), PAD_ID, dtype=np.int32)
    for n, q in enumerate(seqs):
        ids[n, : len(q)] = q
    mask = mx.array((ids != PAD_ID).astype(np.int32))
    encoder.eval()
    hidden = encoder.hidden_states(mx.array(ids), mask, len(encoder.encoder.layer))
    return np.array(pool(hidden, mask, pooling), dtype=np.float64)
