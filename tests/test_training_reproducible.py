"""Same text, settings and seed, same result: the WordPiece vocabulary byte for byte in any process, and
the loss curve of a short run trained twice, each time in a fresh process with an empty cache."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from kbert_tui.training import tokenizer as tk
from kbert_tui.training.demo import demo_splits

TRAIN_IN_A_PROCESS = (
    "import sys; from kbert_tui.training.demo import demo_splits; "
    "from kbert_tui.training.tokenizer import train_wordpiece; "
    "texts = [r['text'] for r in demo_splits(42)['train']]; "
    "sys.stdout.write(train_wordpiece(texts, 1000).to_str())"
)


def test_two_processes_learn_byte_identical_vocabularies():
    # Separate interpreters get separate hash seeds: the order tokenizers' own trainer depended on.
    runs = [subprocess.run([sys.executable, "-c", TRAIN_IN_A_PROCESS], capture_output=True, text=True, check=True,
                           timeout=120, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout
            for seed in ("1", "2")]
    assert runs[0] == runs[1] and '"[UNK]"' in runs[0]
    in_process = tk.train_wordpiece([r["text"] for r in demo_splits(42)["train"]], 1000).to_str()
    assert in_process == runs[0]


def test_merges_follow_frequency_and_ties_go_to_the_smaller_pair():
    counts = Counter({"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5})
    vocab = tk.wordpiece_vocabulary(counts, len(tk.SPECIAL_TOKENS) + 7 + 4)
    assert vocab[: len(tk.SPECIAL_TOKENS)] == tk.SPECIAL_TOKENS
    assert vocab[len(tk.SPECIAL_TOKENS): -4] == ["##g", "##n", "##s", "##u", "b", "h", "p"]
    # ##u ##g (20), then ##u ##n (16), then h ##ug (15), then p ##un (12)
    assert vocab[-4:] == ["##ug", "##un", "hug", "pun"]
    for order in (["ab", "cd"], ["cd", "ab"]):  # a tie (3 each): "a" < "c" goes first, whatever the input order
        tied = Counter(dict.fromkeys(order, 3))
        assert tk.wordpiece_vocabulary(tied, len(tk.SPECIAL_TOKENS) + 5)[-1] == "ab"
    assert len(tk.wordpiece_vocabulary(counts, 100)) < 100  # merges run out: every word is one token


def test_every_word_is_encodable_and_the_cache_key_names_the_library_version(monkeypatch):
    tokenizer = tk.train_wordpiece(["Not at all great.", "far from terrible"], 60)
    assert "[UNK]" not in tokenizer.encode("great terrible far").tokens
    key = tk.cache_key(["a b"], 60)
    monkeypatch.setattr(tk, "_TOKENIZERS_VERSION", "0.0.1")
    assert tk.cache_key(["a b"], 60) != key


LOSS_CURVE = (
    "import json, sys; from pathlib import Path; from kbert_tui.training import Trainer; "
    "from kbert_tui.training.testing import tiny_config; from kbert_tui.events.testing import RecordingBus; "
    "folder = Path(sys.argv[1]); bus = RecordingBus(); config = tiny_config(folder); "
    "Trainer(config, bus, run_id='r', output_dir=folder / 'out').run(); "
    "print(json.dumps([[e.data['loss'], e.data['metrics']['grad_norm']] "
    "for e in bus.emitted('training.batch_completed')] "
    "+ [[e.data['metrics'][k] for k in ('train_loss', 'val_loss', 'val_accuracy', 'val_f1')] "
    "for e in bus.emitted('training.epoch_completed')]))"
)


def test_a_short_run_gives_the_same_loss_curve_twice(tmp_path: Path):
    curves = []
    for run in ("first", "second"):
        folder = tmp_path / run  # its own data copy, output and an empty tokenizer cache
        env = {"PATH": "/usr/bin:/bin", "KBERT_TUI_CACHE_DIR": str(folder / "cache"), "PYTHONHASHSEED": str(len(run))}
        out = subprocess.run([sys.executable, "-c", LOSS_CURVE, str(folder)], capture_output=True, text=True,
                             check=True, timeout=180, env=env)
        curves.append(out.stdout.strip().splitlines()[-1])
        assert any((folder / "cache").glob("wordpiece-*.json"))  # trained afresh, not read from a cache
    assert curves[0] == curves[1] and len(json.loads(curves[0])) > 10
