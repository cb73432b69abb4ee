"""A WordPiece tokenizer trained offline on the training text, cached by a hash of text and settings.

The vocabulary is learnt here, not by `tokenizers`' WordPieceTrainer: that one breaks ties between
equally frequent pairs by ids that follow a per-process hash order, so two trainings on the same text
differed in a dozen sub-words (and the demo's accuracy with them). Here ties go to the smaller pair
of strings, so the same text and settings give the same vocabulary, byte for byte, in any process.
`tokenizers` still normalizes, pre-tokenizes and encodes; its version is part of the cache key.
"""

from __future__ import annotations

import hashlib
import heapq
import importlib.metadata
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from kbert_tui.events import catalog as ev
from kbert_tui.events.index import cache_root

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID = 0
CONTINUATION = "##"  # marks a sub-word that continues a word
_FORMAT_VERSION = 3  # 3: the vocabulary is learnt by wordpiece_vocabulary (deterministic)
_TOKENIZERS_VERSION = importlib.metadata.version("tokenizers")

Emit = Callable[..., None]


def cache_dir() -> Path:
    """KBERT_TUI_CACHE_DIR, else $XDG_CACHE_HOME/kbert-tui, else ~/.cache/kbert-tui."""
    return cache_root()


def cache_key(texts: Sequence[str], vocab_size: int) -> str:
    settings = {"v": _FORMAT_VERSION, "tokenizers": _TOKENIZERS_VERSION, "vocab_size": vocab_size, "lowercase": True}
    digest = hashlib.sha256(json.dumps(settings).encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def train_wordpiece(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    words: Counter[str] = Counter()
    for text in texts:
        normalized = tokenizer.normalizer.normalize_str(text)
        words.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    return _finish(_canonical(tokenizer, wordpiece_vocabulary(words, vocab_size)))


def wordpiece_vocabulary(word_counts: Counter[str], vocab_size: int) -> list[str]:
    """Special tokens, every character, then merges of the most frequent adjacent pair until `vocab_size`.

    The same merges as `tokenizers`' WordPieceTrainer (BPE with "##" continuations), but a tie between
    equally frequent pairs goes to the smaller pair of strings, so the result never depends on hash order.
    """
    ordered = sorted(word_counts)
    words = [[w[0]] + [CONTINUATION + c for c in w[1:]] for w in ordered]
    freq = [word_counts[w] for w in ordered]
    vocab = dict.fromkeys(SPECIAL_TOKENS)
    vocab.update(dict.fromkeys(sorted({symbol for word in words for symbol in word})))
    counts: Counter[tuple[str, str]] = Counter()
    holders: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        _count_pairs(word, freq[index], counts, index, holders)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -negative:
            continue  # a stale entry: this pair's count changed and was pushed again
        if -negative < 1:
            break
        merged = pair[0] + pair[1].removeprefix(CONTINUATION)
        vocab.setdefault(merged)
        changed: set[tuple[str, str]] = set()
        for index in sorted(holders.pop(pair)):
            word = words[index]
            _count_pairs(word, -freq[index], counts, None, None, changed)
            words[index] = word = _merge(word, pair, merged)
            _count_pairs(word, freq[index], counts, index, holders, changed)
        for other in sorted(changed):
            if counts.get(other, 0) > 0:
                heapq.heappush(heap, (-counts[other], other))
            else:
                counts.pop(other, None)
    return list(vocab)


def _count_pairs(word: list[str], weight: int, counts: Counter[tuple[str, str]], index: int | None,
                 holders: defaultdict[tuple[str, str], set[int]] | None, changed: set | None = None) -> None:
    for pair in pairwise(word):
        counts[pair] += weight
        if holders is not None:
            holders[pair].add(index)  # type: ignore[arg-type]
        if changed is not None:
            changed.add(pair)


def _merge(word: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _canonical(tokenizer: Tokenizer, vocab: Iterable[str]) -> Tokenizer:
    """Number the vocabulary specials first, then sorted: ids follow the set of tokens, not the merge order."""
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


def bert_tokenizer(vocab: Path, *, lowercase: bool) -> Tokenizer:
    """BERT's WordPiece tokenizer over a checkpoint's vocab.txt (one token a line, ids in line order)."""
    tokenizer = Tokenizer(models.WordPiece.from_file(str(vocab), unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return _finish(tokenizer)


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
            emit(ev.DATA_CACHE_HIT, {"cache_key": key, "size_mb": path.stat().st_size / 2**20, "path": str(path)},
                 source="data")
            return tokenizer
    emit(ev.DATA_CACHE_MISS, {"cache_key": key, "reason": reason}, source="data")
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
    if sep is None:
        raise ValueError("the tokenizer has no [SEP] token")
    out = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids = encoding.ids
        if len(ids) > max_length:
            ids = ids[: max_length - 1] + [sep]
        out.append(ids)
    return out
