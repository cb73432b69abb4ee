"""Hugging Face checkpoint folders for the tests, written here with numpy only, and a numpy BERT forward pass.

Neither uses kbert_tui: the safetensors files are written byte by byte as the format specifies (an 8-byte
little-endian header length, a JSON header of names, dtypes, shapes and offsets, then the raw tensors), and
`reference_embeddings` is BERT written out in float64 from the paper and HF's BertModel, so a match with the
MLX model is evidence the load is right, not that two copies of one mistake agree.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "is", "was", "not", "very", "plot", "acting",
         "fun", "dull", "love", "hate", "it", "and", "boring", "brilliant", "story", "ending", "i", "this", "."]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIALS + WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, object] = {}
    offset, blobs = 0, []
    for name, value in tensors.items():
        raw = np.ascontiguousarray(value, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + length])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        out[name] = np.frombuffer(data[8 + length + start: 8 + length + end],
                                  dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])
    return out


def bert_weights(rng: np.random.Generator, *, vocab: int, hidden: int, inter: int, layers: int, positions: int,
                 types: int) -> dict[str, np.ndarray]:
    """Random BERT weights under HF BertModel's names (LayerNorms near 1 so the signal survives)."""
    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": normal(vocab, hidden),
         "embeddings.position_embeddings.weight": normal(positions, hidden),
         "embeddings.LayerNorm.weight": 1 + normal(hidden), "embeddings.LayerNorm.bias": normal(hidden)}
    if types:
        w["embeddings.token_type_embeddings.weight"] = normal(types, hidden)
    for n in range(layers):
        p = f"encoder.layer.{n}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            w[p + name + ".weight"], w[p + name + ".bias"] = normal(hidden, hidden), normal(hidden)
        w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = normal(inter, hidden), normal(inter)
        w[p + "output.dense.weight"], w[p + "output.dense.bias"] = normal(hidden, inter), normal(hidden)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + norm + ".weight"], w[p + norm + ".bias"] = 1 + normal(hidden), normal(hidden)
    return w


DISTILBERT_NAMES = [("encoder.layer.", "transformer.layer."), ("attention.self.query", "attention.q_lin"),
                    ("attention.self.key", "attention.k_lin"), ("attention.self.value", "attention.v_lin"),
                    ("attention.output.dense", "attention.out_lin"), ("attention.output.LayerNorm", "sa_layer_norm"),
                    ("intermediate.dense", "ffn.lin1"), ("output.dense", "ffn.lin2"),
                    ("output.LayerNorm", "output_layer_norm")]


def tiny_checkpoint(folder: Path, *, model_type: str = "bert", layers: int = 3, hidden: int = 16, heads: int = 2,
                    inter: int = 32, seed: int = 0, prefix: str = "", extra: dict | None = None) -> Path:
    """A complete checkpoint folder: config.json, model.safetensors (random weights), vocab.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    types = 0 if model_type == "distilbert" else 2
    weights = bert_weights(rng, vocab=len(VOCAB), hidden=hidden, inter=inter, layers=layers, positions=64,
                           types=types)
    if model_type == "distilbert":
        renamed = {}
        for name, value in weights.items():
            for bert, distil in DISTILBERT_NAMES:
                name = name.replace(bert, distil, 1)
            renamed[name] = value
        weights = renamed
        config = {"model_type": "distilbert", "dim": hidden, "n_layers": layers, "n_heads": heads,
                  "hidden_dim": inter, "vocab_size": len(VOCAB), "max_position_embeddings": 64,
                  "activation": "gelu"}
    else:
        config = {"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
                  "num_attention_heads": heads, "intermediate_size": inter, "vocab_size": len(VOCAB),
                  "max_position_embeddings": 64, "type_vocab_size": types, "layer_norm_eps": 1e-12,
                  "hidden_act": "gelu"}
    config.update(extra or {})
    weights = {prefix + k: v for k, v in weights.items()}
    weights[prefix + "pooler.dense.weight"] = np.zeros((hidden, hidden), np.float32)  # present in bert-base: ignored
    write_safetensors(folder / "model.safetensors", weights)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


_erf = np.vectorize(math.erf)


def reference_embeddings(folder: Path, ids: list[list[int]], *, pooling: str = "mean") -> np.ndarray:
    """Each text's sentence embedding (float64), one text at a time (no padding), straight from the files."""
    config = json.loads((folder / "config.json").read_text())
    raw = read_safetensors(folder / "model.safetensors")
    distil = config["model_type"] == "distilbert"
    w: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        name = name.removeprefix("bert.").removeprefix("distilbert.")
        if distil:
            for bert, other in DISTILBERT_NAMES:
                name = name.replace(other, bert, 1)
        w[name] = value.astype(np.float64)
    heads = config["n_heads" if distil else "num_attention_heads"]
    layers = config["n_layers" if distil else "num_hidden_layers"]
    eps = config.get("layer_norm_eps", 1e-12)
    out = []
    for seq in ids:
        n = len(seq)
        x = w["embeddings.word_embeddings.weight"][seq] + w["embeddings.position_embeddings.weight"][:n]
        if "embeddings.token_type_embeddings.weight" in w:
            x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for layer in range(layers):
            p = f"encoder.layer.{layer}."

            def dense(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            d = x.shape[1] // heads
            q, k, v = (dense(x, f"attention.self.{m}").reshape(n, heads, d).transpose(1, 0, 2)
                       for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            attended = _layer_norm(dense(context.transpose(1, 0, 2).reshape(n, -1), "attention.output.dense") + x,
                                   w[p + "attention.output.LayerNorm.weight"],
                                   w[p + "attention.output.LayerNorm.bias"], eps)
            h = dense(attended, "intermediate.dense")
            h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
            x = _layer_norm(dense(h, "output.dense") + attended, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)
        out.append(x.mean(axis=0) if pooling == "mean" else x[0])
    return np.stack(out)
