"""BERT-style encoder classifiers in mlx.nn.

`BertClassifier`: the from-scratch model (embeddings, N post-LN layers, pooler, head). `BertEncoder` holds a
pretrained checkpoint under Hugging Face's `BertModel` attribute names (so its weights load by name, no
transposes: both store linear weights (out, in)); `FineTunedBert` is the part that trains on top of it:
its top layers, the pooling and a classification head.
"""

from __future__ import annotations

from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from kbert_tui.config import ModelSection


class Embeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, max_position: int, dropout: float) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(max_position, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, ids: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1])
        return self.dropout(self.norm(self.token(ids) + self.position(positions)))


ACTIVATIONS = {"gelu": nn.gelu, "gelu_approx": nn.gelu_approx, "gelu_fast": nn.gelu_fast_approx, "relu": nn.relu}


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float, activation: str = "gelu") -> None:
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.attention = nn.MultiHeadAttention(hidden, heads, bias=True)
        self.attention_norm = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, intermediate)
        self.down = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.attention_norm(x + self.dropout(self.attention(x, x, x, mask)))
        return self.output_norm(x + self.dropout(self.down(self.activation(self.up(x)))))


class BertClassifier(nn.Module):
    def __init__(self, config: ModelSection, vocab_size: int, num_labels: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.embeddings = Embeddings(vocab_size, h, config.max_position, config.dropout)
        self.layers = [
            EncoderLayer(h, config.num_heads, config.intermediate_size, config.dropout, config.activation)
            for _ in range(config.num_layers)
        ]
        self.pooling = config.pooling
        self.pooler = nn.Linear(h, h)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(h, num_labels)

    def __call__(self, ids: mx.array, attention_mask: mx.array) -> mx.array:
        mask = additive_mask(attention_mask)
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, mask)
        pooled = mx.tanh(self.pooler(pool(x, attention_mask, self.pooling)))
        return self.classifier(self.dropout(pooled))


def additive_mask(attention_mask: mx.array) -> mx.array:
    """Scores added over keys: padded positions get a large negative score."""
    return ((1.0 - attention_mask.astype(mx.float32)) * -1e9)[:, None, None, :]


def pool(x: mx.array, attention_mask: mx.array, how: str) -> mx.array:
    """One vector per text: its `[CLS]` position, or the mean over its real (unpadded) tokens."""
    if how == "cls":
        return x[:, 0]
    weights = attention_mask.astype(x.dtype)[:, :, None]
    return (x * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1.0)


# ---------------------------------------------------------------------- a pretrained checkpoint, HF names


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, t, h = x.shape
        d = h // self.heads
        q, k, v = (p(x).reshape(b, t, self.heads, d).transpose(0, 2, 1, 3) for p in (self.query, self.key, self.value))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=d ** -0.5, mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(b, t, h)


class DenseNorm(nn.Module):
    """HF's BertSelfOutput / BertOutput: LayerNorm(dropout(dense(x)) + residual)."""

    def __init__(self, inputs: int, hidden: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = DenseNorm(hidden, hidden, eps, dropout)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int, activation: str) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.dense = nn.Linear(hidden, intermediate)

    def __call__(self, x: mx.array) -> mx.array:
        return self.activation(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float, dropout: float, activation: str) -> None:
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps, dropout)
        self.intermediate = BertIntermediate(hidden, intermediate, activation)
        self.output = DenseNorm(intermediate, hidden, eps, dropout)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, max_position: int, type_vocab_size: int, eps: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_position, hidden)
        if type_vocab_size:
            self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def __call__(self, ids: mx.array) -> mx.array:
        x = self.word_embeddings(ids) + self.position_embeddings(mx.arange(ids.shape[1]))
        if "token_type_embeddings" in self:
            x = x + self.token_type_embeddings.weight[0]  # one text per row: every token is of type 0
        return self.LayerNorm(x)


class LayerList(nn.Module):
    """HF's BertEncoder: its layers under `layer`."""

    def __init__(self, layers: list[BertLayer]) -> None:
        super().__init__()
        self.layer = layers


class BertEncoder(nn.Module):
    """A pretrained BERT's embeddings and layers, named as HF's BertModel names them."""

    def __init__(self, vocab_size: int, hidden: int, heads: int, intermediate: int, max_position: int,
                 type_vocab_size: int, eps: float, num_layers: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_position, type_vocab_size, eps)
        self.encoder = LayerList([BertLayer(hidden, heads, intermediate, eps, dropout, activation)
                                  for _ in range(num_layers)])

    def hidden_states(self, ids: mx.array, attention_mask: mx.array, layers: int) -> mx.array:
        """The output of the first `layers` layers (0: of the embeddings)."""
        mask = additive_mask(attention_mask)
        x = self.embeddings(ids)
        for layer in self.encoder.layer[:layers]:
            x = layer(x, mask)
        return x


class FineTunedBert(nn.Module):
    """What trains: a pretrained BERT's top layers (fed the frozen layers' outputs), pooling, a linear head."""

    def __init__(self, layers: list[BertLayer], hidden: int, num_labels: int, pooling: str, dropout: float) -> None:
        super().__init__()
        self.layers = layers
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def __call__(self, features: mx.array, attention_mask: mx.array) -> mx.array:
        mask = additive_mask(attention_mask)
        x = features
        for layer in self.layers:
            x = layer(x, mask)
        return self.classifier(self.dropout(pool(x, attention_mask, self.pooling)))


def flat_arrays(tree: Any) -> list[tuple[str, mx.array]]:
    """A tree of parameters (or gradients, or optimizer state) as (dotted name, array) pairs.

    mlx.utils.tree_flatten returns this list; its annotation also admits the dict it fills when given one.
    """
    return cast(list[tuple[str, mx.array]], tree_flatten(tree))


def count_parameters(model: nn.Module) -> int:
    return sum(v.size for _, v in flat_arrays(model.parameters()))


def grouped_norms(grads: dict[str, Any]) -> dict[str, float]:
    """L2 norm of the gradients per top-level block (embeddings, layers.N, pooler, classifier)."""
    sums: dict[str, mx.array] = {}
    for name, g in flat_arrays(grads):
        parts = name.split(".")
        group = ".".join(parts[:2]) if parts[0] == "layers" else parts[0]
        sums[group] = sums.get(group, mx.array(0.0)) + mx.sum(g.astype(mx.float32) ** 2)
    mx.eval(list(sums.values()))
    return {k: float(mx.sqrt(v)) for k, v in sums.items()}
