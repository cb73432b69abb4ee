"""Checkpoints: everything a resume or a prediction needs, in one folder.

model.safetensors (weights), optimizer.safetensors (AdamW state), config.json (the run config),
tokenizer.json, state.json (epoch, step, labels, best metric, model shape).

A fine-tune of a pretrained checkpoint (`model.pretrained`) saves only what trains — its top layers and the
head — and state.json's `model` points at the base: its folder (`pretrained`) and a fingerprint of its weights'
headers (`base_fingerprint`), which a resume checks before it loads the frozen part from there again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten
from tokenizers import Tokenizer

from kbert_tui.errors import CheckpointError

from .tokenizer import load_tokenizer


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: optim.Optimizer,
    tokenizer: Tokenizer,
    config: dict[str, Any],
    state: dict[str, Any],
) -> float:
    """Write a checkpoint atomically (a .tmp folder renamed into place); return its size in MB."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        mx.save_safetensors(str(tmp / "model.safetensors"), dict(tree_flatten(model.parameters())))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not leave a half checkpoint behind
        raise
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"training.resume_from: {folder} is not a readable checkpoint "
                              f"(state.json: {getattr(error, 'strerror', None) or error})") from None


def load_checkpoint_tokenizer(folder: Path) -> Tokenizer:
    return load_tokenizer(folder / "tokenizer.json")


def restore(folder: Path, model: nn.Module, optimizer: optim.Optimizer) -> None:
    model.load_weights(str(folder / "model.safetensors"), strict=True)
    state = mx.load(str(folder / "optimizer.safetensors"))
    if not isinstance(state, dict):  # a safetensors file is named tensors; anything else is not our checkpoint
        raise CheckpointError(f"training.resume_from: {folder}/optimizer.safetensors holds no named tensors")
    optimizer.state = tree_unflatten(list(state.items()))
    mx.eval(model.parameters(), optimizer.state)
