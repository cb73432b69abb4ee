"""A WordPiece tokenizer trained offline on the training text, cached by a hash of text and settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID = 0
_FORMAT_VERSION = 2

Emit = Callable[..., None]


def cache_dir() -> Path:
    """KBERT_TUI_CACHE_DIR, else $XDG_CACHE_HOME/kbert-tui, else ~/.cache/kbert-tui."""
    explicit = os.environ.get("KBERT_TUI_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kbert-tui"


def cache_key(texts: Sequence[str], vocab_size: int) -> str:
    digest = hashlib.sha256(json.dumps({"v": _FORMAT_VERSION, "vocab_size": vocab_size, "lowercase": True}).encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def train_wordpiece(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return _finish(_canonical(tokenizer))


def _canonical(tokenizer: Tokenizer) -> Tokenizer:
    """Renumber the vocabulary (specials first, then sorted) so ids don't depend on the trainer's hash order."""
    vocab = tokenizer.get_vocab()
    ordered = SPECIAL_TOKENS + sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    tokenizer.model = models.WordPiece({t: i for i, t in enumerate(ordered)}, unk_token="[UNK]")
    return tokenizer


def _finish(tokenizer: Tokenizer) -> Tokenizer:
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    return _finish(Tokenizer.from_file(str(path)))


def get_tokenizer(texts: Sequence[str], vocab_size: int, emit: Emit, *, directory: Path | None = None) -> Tokenizer:
    """The cached tokenizer for these texts and settings, or a freshly trained (and cached) one."""
    key = cache_key(texts, vocab_size)
    folder = directory or cache_dir()
    path = folder / f"wordpiece-{key}.json"
    reason = "not cached"
    if path.is_file():
        try:
            tokenizer = load_tokenizer(path)
        except Exception as error:  # a damaged cache file is retrained, never fatal
            reason = f"cache file unreadable: {error}"
        else:
            emit("data.cache_hit", {"cache_key": key, "size_mb": path.stat().st_size / 2**20, "path": str(path)},
                 source="data")
            return tokenizer
    emit("data.cache_miss", {"cache_key": key, "reason": reason}, source="data")
    tokenizer = train_wordpiece(texts, vocab_size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tokenizer.save(str(tmp))
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs a retrain next time
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids with [CLS] … [SEP], cut to max_length (keeping [SEP] last)."""
    sep = tokenizer.token_to_id("[SEP]")
    out = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids = encoding.ids
        if len(ids) > max_length:
            ids = ids[: max_length - 1] + [sep]
        out.append(ids)
    return out
