"""Each config key is declared once (kbert_tui/config.py); the docs' tables and `kbert-tui init` follow from it."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from kbert_tui.config import SECTIONS
from kbert_tui.config_docs import example_config, sync_docs

ROOT = Path(__file__).resolve().parents[1]


def test_docs_tables_are_generated_from_the_declarations():
    for doc in ("docs/config.md", "README.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert sync_docs(text) == text, f"{doc} is stale: run python -m kbert_tui.config_docs docs/config.md README.md"
    docs = (ROOT / "docs/config.md").read_text(encoding="utf-8")
    for path, _ in SECTIONS:
        assert f"<!-- config:{path} -->" in docs


def test_every_declared_key_is_documented_and_in_the_example():
    example = tomllib.loads(example_config("x.toml"))
    text = example_config("x.toml")
    for path, cls in SECTIONS:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{path}.{f.name} has no doc"
            section = example
            for part in path.split("."):
                section = section.get(part, {})
            assert f.name in section or f"# {f.name} = " in text, f"{path}.{f.name} missing from the example"


def test_a_new_key_is_one_declaration(tmp_path):
    """Adding a field with _key() to a section is all it takes: parsed, bounded, documented."""
    from kbert_tui import config as config_module

    @dataclasses.dataclass(frozen=True)
    class Extended(config_module.ModelSection):
        attention_window: int = config_module._key(0, "attend to this many neighbours (0: all)", minimum=0,
                                                   maximum=4096)

    reader = config_module.TableReader({"attention_window": 64}, "model", "x.toml", tmp_path)
    assert config_module._read(Extended, reader).attention_window == 64
    bad = config_module.TableReader({"attention_window": -1}, "model", "x.toml", tmp_path)
    try:
        config_module._read(Extended, bad)
    except config_module.ConfigError as error:
        assert str(error) == "x.toml: model.attention_window: expected an integer >= 0 and <= 4096, got -1 (int)"
    else:
        raise AssertionError("a bound was not enforced")
