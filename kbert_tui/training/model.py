"""A BERT-style encoder classifier in mlx.nn: embeddings, N post-LN transformer layers, pooler, head."""

from __future__ import annotations

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
            EncoderLayer(h, config.num_heads, config.intermediate_size, config.dropout, config.activation) for _ in range(config.num_layers)
        ]
        self.pooler = nn.Linear(h, h)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(h, num_labels)

    def __call__(self, ids: mx.array, attention_mask: mx.array) -> mx.array:
        # Additive mask over keys: padded positions get a large negative score.
        mask = ((1.0 - attention_mask.astype(mx.float32)) * -1e9)[:, None, None, :]
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, mask)
        pooled = mx.tanh(self.pooler(x[:, 0]))
        return self.classifier(self.dropout(pooled))


def count_parameters(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def grouped_norms(grads: dict) -> dict[str, float]:
    """L2 norm of the gradients per top-level block (embeddings, layers.N, pooler, classifier)."""
    sums: dict[str, mx.array] = {}
    for name, g in tree_flatten(grads):
        parts = name.split(".")
        group = ".".join(parts[:2]) if parts[0] == "layers" else parts[0]
        sums[group] = sums.get(group, mx.array(0.0)) + mx.sum(g.astype(mx.float32) ** 2)
    mx.eval(list(sums.values()))
    return {k: float(mx.sqrt(v).item()) for k, v in sums.items()}
