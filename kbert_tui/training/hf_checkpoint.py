"""A Hugging Face checkpoint folder, checked without loading it: config.json, the weights' names and shapes
(read from the safetensors headers), the tokenizer file.

`inspect_checkpoint("PATH or org/name", base_dir)` answers a `CheckpointInfo` or raises `PretrainedError`
with one line saying what is wrong; the config reader calls it, so a bad checkpoint stops a run before
anything is written. BERT-family models only: `bert` (MiniLM, bert-base, …) and `distilbert`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbert_tui.errors import PretrainedError

SUPPORTED_TYPES = ("bert", "distilbert")
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approx", "gelu_pytorch_tanh": "gelu_approx", "relu": "relu"}
_DTYPES = {"F32", "F16", "BF16"}
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name, as on the Hugging Face hub


@dataclass(frozen=True)
class CheckpointInfo:
    """What a run needs to know about a checkpoint before loading it."""

    folder: Path
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position: int
    type_vocab_size: int  # 0: no token-type embeddings (DistilBERT)
    layer_norm_eps: float
    activation: str  # one of model.ACTIVATIONS' names
    weight_files: tuple[Path, ...]
    tokenizer_file: Path  # tokenizer.json, else vocab.txt
    lowercase: bool
    fingerprint: str  # the weights' headers and sizes hashed: a resume checks it found the same base

    def weight_name(self, canonical: str) -> str:
        """The name `canonical` (BERT's, without the `bert.` prefix) has in this checkpoint's files."""
        return canonical if self.model_type == "bert" else _to_distilbert(canonical)


def hf_cache_dir() -> Path:
    """HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's own rule)."""
    if explicit := os.environ.get("HF_HUB_CACHE"):
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                            / "huggingface")
    return Path(home).expanduser() / "hub"


def resolve(value: str, base_dir: Path) -> Path:
    """A folder (relative to `base_dir`), else the cached snapshot of a hub model named `org/name`."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.is_dir():
        return path
    if not _NAME.match(value):
        raise PretrainedError(f"folder not found: {path}")
    repo = hf_cache_dir() / ("models--" + value.replace("/", "--"))
    revision = (repo / "refs" / "main").read_text().strip() if (repo / "refs" / "main").is_file() else None
    snapshots = sorted((repo / "snapshots").glob("*/config.json")) if (repo / "snapshots").is_dir() else []
    folder = repo / "snapshots" / revision if revision else (snapshots[-1].parent if snapshots else None)
    if folder is None or not folder.is_dir():
        raise PretrainedError(f"{value!r} is neither a folder nor in the Hugging Face cache ({hf_cache_dir()}); "
                              f"fetch it with `hf download {value}` (or give the folder's path)")
    return folder


def inspect_checkpoint(value: str, base_dir: Path) -> CheckpointInfo:
    return _inspect(resolve(value, base_dir).resolve())


def _inspect(folder: Path) -> CheckpointInfo:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PretrainedError(f"{folder}: no config.json (not a Hugging Face model folder)") from None
    except (OSError, ValueError) as error:
        raise PretrainedError(f"{config_path}: unreadable ({error})") from None
    if not isinstance(config, dict):
        raise PretrainedError(f"{config_path}: not a JSON object")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise PretrainedError(f"{config_path}: model_type {model_type!r} is not supported (supported: "
                              f"{', '.join(SUPPORTED_TYPES)}: BERT-family encoders such as MiniLM, bert-base, "
                              "DistilBERT)")
    sizes = _sizes(config, model_type, config_path)
    files = _weight_files(folder)
    headers = {name: (path, entry) for path in files for name, entry in _header(path).items()}
    info = CheckpointInfo(folder=folder, model_type=model_type, **sizes, weight_files=files,
                          tokenizer_file=_tokenizer_file(folder), lowercase=_lowercase(folder),
                          fingerprint=_fingerprint(files))
    for name, shape in expected_shapes(info).items():
        stored = info.weight_name(name)
        found = headers.get(stored) or headers.get(f"{model_type}.{stored}")
        if found is None:
            raise PretrainedError(f"{files[0]}: no weight {stored!r} (config.json describes {info.num_layers} "
                                  f"layers of {info.hidden_size})")
        path, entry = found
        if list(entry.get("shape", [])) != list(shape):
            raise PretrainedError(f"{path.name}: {stored} has shape {entry.get('shape')}, config.json says "
                                  f"{list(shape)}")
        if entry.get("dtype") not in _DTYPES:
            raise PretrainedError(f"{path.name}: {stored} is {entry.get('dtype')} (float32, float16 or bfloat16 "
                                  "weights are read)")
    return info


def _sizes(config: dict[str, Any], model_type: str, where: Path) -> dict[str, Any]:
    if model_type == "distilbert":
        keys = {"num_layers": "n_layers", "hidden_size": "dim", "num_heads": "n_heads",
                "intermediate_size": "hidden_dim", "activation": "activation"}
        fixed: dict[str, Any] = {"type_vocab_size": 0, "layer_norm_eps": 1e-12}
    else:
        keys = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size", "num_heads": "num_attention_heads",
                "intermediate_size": "intermediate_size", "activation": "hidden_act",
                "type_vocab_size": "type_vocab_size", "layer_norm_eps": "layer_norm_eps"}
        fixed = {}
    keys |= {"vocab_size": "vocab_size", "max_position": "max_position_embeddings"}
    defaults = {"hidden_act": "gelu", "activation": "gelu", "type_vocab_size": 2, "layer_norm_eps": 1e-12}
    sizes = dict(fixed)
    for ours, theirs in keys.items():
        value = config.get(theirs, defaults.get(theirs))
        if ours == "activation":
            if value not in _ACTIVATIONS:
                raise PretrainedError(f"{where}: {theirs} {value!r} is not supported (supported: "
                                      f"{', '.join(_ACTIVATIONS)})")
            sizes[ours] = _ACTIVATIONS[value]
        elif ours == "layer_norm_eps":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise PretrainedError(f"{where}: {theirs} should be a small positive number, got {value!r}")
            sizes[ours] = float(value)
        else:
            least = 0 if ours == "type_vocab_size" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise PretrainedError(f"{where}: {theirs} should be an integer >= {least}, got {value!r}")
            sizes[ours] = value
    if sizes["hidden_size"] % sizes["num_heads"]:
        raise PretrainedError(f"{where}: {keys['num_heads']} {sizes['num_heads']} does not divide "
                              f"{keys['hidden_size']} {sizes['hidden_size']}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise PretrainedError(f"{where}: position_embedding_type {config['position_embedding_type']!r} is not "
                              "supported (absolute only)")
    return sizes


def _weight_files(folder: Path) -> tuple[Path, ...]:
    single = folder / "model.safetensors"
    if single.is_file():
        return (single,)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as error:
            raise PretrainedError(f"{index}: unreadable ({error})") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise PretrainedError(f"{index}: shard {missing[0]} not found")
        return tuple(folder / s for s in shards)
    if any((folder / n).is_file() for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")):
        raise PretrainedError(f"{folder}: no model.safetensors (only safetensors weights are read: PyTorch's "
                              ".bin needs torch to unpickle; convert it once with safetensors' torch helpers)")
    raise PretrainedError(f"{folder}: no weights (model.safetensors)")


def _header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file holds (name → dtype, shape, offsets), read from its JSON header."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 2**20:
                raise ValueError(f"a header of {length} bytes")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as error:
        raise PretrainedError(f"{path}: not a readable safetensors file ({error})") from None
    if not isinstance(header, dict):
        raise PretrainedError(f"{path}: not a readable safetensors file (its header is not an object)")
    return {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def _fingerprint(files: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            digest.update(handle.read(length))
        digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:16]


def _tokenizer_file(folder: Path) -> Path:
    for name in ("tokenizer.json", "vocab.txt"):
        if (folder / name).is_file():
            return folder / name
    raise PretrainedError(f"{folder}: no tokenizer (tokenizer.json or vocab.txt)")


def _lowercase(folder: Path) -> bool:
    """tokenizer_config.json's do_lower_case (used with vocab.txt only: tokenizer.json says it itself)."""
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("do_lower_case",
                                                                                                      True))
    except (OSError, ValueError, AttributeError):
        return True


def expected_shapes(info: CheckpointInfo) -> dict[str, tuple[int, ...]]:
    """Every weight the encoder needs, by its BERT name, with the shape config.json implies."""
    h, i = info.hidden_size, info.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (info.vocab_size, h),
        "embeddings.position_embeddings.weight": (info.max_position, h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
    }
    if info.type_vocab_size:
        shapes["embeddings.token_type_embeddings.weight"] = (info.type_vocab_size, h)
    for n in range(info.num_layers):
        p = f"encoder.layer.{n}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (h, h), (h,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (i, h), (i,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (h, i), (h,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = (h,), (h,)
    return shapes


_DISTILBERT = [("encoder.layer.", "transformer.layer."), ("attention.self.query", "attention.q_lin"),
               ("attention.self.key", "attention.k_lin"), ("attention.self.value", "attention.v_lin"),
               ("attention.output.dense", "attention.out_lin"), ("attention.output.LayerNorm", "sa_layer_norm"),
               ("intermediate.dense", "ffn.lin1"), ("output.dense", "ffn.lin2"),
               ("output.LayerNorm", "output_layer_norm")]


def _to_distilbert(name: str) -> str:
    for bert, distil in _DISTILBERT:
        name = name.replace(bert, distil, 1)
    return name
