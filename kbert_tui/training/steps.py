"""The training loop's pieces that need no bus: batches, one optimizer step, log-probabilities, metrics.

`Trainer` (trainer.py) strings them together and reports each step as an event; benchmarks and tests
call them directly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from kbert_tui.errors import DeviceError

from .baseline import log_softmax
from .pretrained import pad_features
from .tokenizer import PAD_ID


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class _Encoded:
    ids: list[list[int]]
    labels: np.ndarray | None
    features: list[np.ndarray] | None = None  # a pretrained model's frozen-layer outputs, one per text


# ---------------------------------------------------------------------- the loop's pieces (no bus)


def select_device(choice: str) -> str:
    """Make `choice` ("auto", "cpu", "gpu") MLX's default device; returns the one in use."""
    gpu = mx.is_available(mx.gpu)
    if choice == "gpu" and not gpu:
        raise DeviceError('training.device: "gpu", but this MLX has no GPU backend (on Linux with an NVIDIA GPU: '
                          'pip install "kbert-tui[cuda]"; or use "auto" or "cpu")')
    use_gpu = choice == "gpu" or (choice == "auto" and gpu)
    mx.set_default_device(mx.gpu if use_gpu else mx.cpu)
    return "gpu" if use_gpu else "cpu"


def make_batch(enc: _Encoded, rows: np.ndarray) -> tuple[mx.array, mx.array, mx.array | None]:
    """Token ids padded to the batch's longest text, its attention mask, and its labels (if any)."""
    length = max(len(enc.ids[i]) for i in rows)
    ids = np.full((len(rows), length), PAD_ID, dtype=np.int32)
    for r, i in enumerate(rows):
        seq = enc.ids[i]
        ids[r, : len(seq)] = seq
    mask = (ids != PAD_ID).astype(np.int32)
    labels = mx.array(enc.labels[rows]) if enc.labels is not None else None
    inputs = pad_features(enc.features, rows, length) if enc.features is not None else mx.array(ids)
    return inputs, mx.array(mask), labels


BUCKET_BATCHES = 50  # length bucketing sorts this many batches' worth of shuffled rows at a time


def epoch_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *,
                  bucket: bool = True) -> list[np.ndarray]:
    """The row indices of each batch of one epoch, in training order.

    Rows are shuffled; with `bucket`, each run of BUCKET_BATCHES batches' worth of rows is sorted by length
    before it is cut into batches and the batches are shuffled again, so a batch pads to little more than
    its own texts (each batch is still a random draw from a random chunk)."""
    order = rng.permutation(len(lengths))
    if not bucket:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start: start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i: i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def iterate_batches(batches: list[np.ndarray], start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(batch index, row indices) for the batches of one epoch, from batch `start` on."""
    for batch in range(start, len(batches)):
        yield batch, batches[batch]


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    grads: Any
    seconds: float


def train_step(model: nn.Module, optimizer: optim.Optimizer, loss_and_grad: Any, ids: mx.array, mask: mx.array,
               labels: mx.array, clip: float, where: str, *, group: Any = None, scale: float = 1.0) -> StepResult:
    """One optimizer step; raises NonFiniteLoss (before updating anything) when the loss or gradients blow up.

    With an MLX `group` of several ranks, `loss_and_grad` takes `scale` (world size / global batch rows, 0 for an
    empty shard) so that averaging the ranks' gradients gives exactly the whole batch's mean-loss gradient;
    the loss reported is the same on every rank."""
    started = time.perf_counter()
    if group is None:
        loss, grads = loss_and_grad(model, ids, mask, labels)
    else:
        loss, grads = loss_and_grad(model, ids, mask, labels, scale)
        grads = nn.utils.average_gradients(grads, group=group)
        loss = mx.distributed.all_sum(loss, group=group) / group.size()
    grads, norm = optim.clip_grad_norm(grads, clip if clip > 0 else float("inf"))
    mx.eval(loss, norm)
    loss_value, norm_value = loss.item(), norm.item()
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        what, bad = ("loss", loss_value) if not math.isfinite(loss_value) else ("gradient norm", norm_value)
        raise NonFiniteLoss(f"non-finite {what} ({bad}) at {where}")
    optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state)
    return StepResult(loss_value, norm_value, grads, time.perf_counter() - started)


def log_probabilities(model: nn.Module, enc: _Encoded, batch_size: int) -> np.ndarray:
    """The model's log-probability of each class for every row of `enc` (rows × classes, evaluation mode)."""
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, len(enc.ids), batch_size):
        ids, mask, _ = make_batch(enc, np.arange(start, min(len(enc.ids), start + batch_size)))
        parts.append(np.array(nn.log_softmax(model(ids, mask).astype(mx.float32), axis=-1), dtype=np.float64))
    if was_training:
        model.train()
    return np.concatenate(parts) if parts else np.zeros((0, model.classifier.weight.shape[0]))


def combine(log_p: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """The encoder's log-probabilities, times the bag-of-words model's probabilities when there is one
    (a product of the two experts), renormalized."""
    if prior is None:
        return log_p
    return log_softmax(log_p + prior)


def summed_loss(log_p: np.ndarray, labels: np.ndarray) -> float:
    """Summed cross-entropy of labelled rows given their log-probabilities."""
    return float(-log_p[np.arange(len(labels)), labels].sum())


def class_counts(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """True positives, false positives and false negatives per class, one after the other (3 × classes):
    sums of these over ranks give the whole set's accuracy and macro F1."""
    tp = np.bincount(y_true[y_pred == y_true], minlength=classes)
    fp = np.bincount(y_pred[y_pred != y_true], minlength=classes)
    fn = np.bincount(y_true[y_pred != y_true], minlength=classes)
    return np.concatenate([tp, fp, fn]).astype(np.float64)


def accuracy_f1(counts: np.ndarray, n: float) -> dict[str, float]:
    """Accuracy and macro F1 (over the classes seen) from class_counts' tp, fp, fn over `n` rows."""
    tp, fp, fn = counts.reshape(3, -1)
    present = tp + fp + fn > 0
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return {"val_accuracy": float(tp.sum() / n), "val_f1": float(np.mean(f1)) if present.any() else 0.0}
