"""What the config's declarations give besides the parser: the docs tables, the README's key list and
`kbert-tui init`'s example file, each generated from the sections in kbert_tui.config.

`python -m kbert_tui.config_docs FILE...` regenerates the `<!-- config:PATH -->` blocks in those files
(docs/config.md, README.md); tests/test_config_docs.py keeps them equal.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from kbert_tui.config import _NEED_TRAIN, SECTIONS, _hints, default_config

__all__ = ["config_table", "example_config", "key_list", "sync_docs"]


def _keys(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(_hints(cls)[f.name])]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _type_text(cls: type, f: dataclasses.Field[Any]) -> str:
    kind, meta = _hints(cls)[f.name], f.metadata
    if meta["typed"]:
        return meta["typed"]
    if meta["choices"]:
        return ", ".join(f'`"{c}"`' for c in meta["choices"])
    if meta["path"]:
        return {"file": "path to a file", "directory": "path to a folder", "out": "path"}[meta["path"]]
    if kind in (int, float):
        name = "int" if kind is int else "number"
        low, high = meta["minimum"], meta["maximum"]
        if low is not None and high is not None:
            return f"{name} in ({low}, {high}]" if meta["exclusive_min"] else f"{name} {low} … {high}"
        if low is not None:
            return f"{name} {'>' if meta['exclusive_min'] else '≥'} {low}"
        return name
    if kind is bool:
        return "bool"
    return "string or list of strings" if getattr(kind, "__origin__", kind) is tuple else "string"


def config_table(path: str) -> str:
    """The docs table of one section's keys (docs/config.md holds these; a test keeps them equal)."""
    cls = dict(SECTIONS)[path]
    demo = default_config()
    demo_section: Any = demo
    for part in path.split("."):
        demo_section = getattr(demo_section, part)
    rows = ["| key | type / range | default (demo) | meaning |", "|---|---|---|---|"]
    for f in _keys(cls):
        default = f.metadata["shown"] or ("—" if f.default is None else f"`{_toml(f.default)}`")
        ours = getattr(demo_section, f.name)
        if f.metadata["shown"] is None and ours != f.default and ours is not None:
            default += f" (`{_toml(ours)}`)"
        rows.append(f"| `{f.name}` | {_type_text(cls, f)} | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)


def key_list() -> str:
    """The README's one-line-per-section key list."""
    rows = ["| section | keys |", "| --- | --- |"]
    for path, cls in SECTIONS:
        if "." in path:
            continue
        parts = [", ".join(f"`{f.name}`" for f in _keys(cls))]
        for sub, sub_cls in SECTIONS:
            if sub.startswith(path + "."):
                parts.append(f"`[{sub}]` " + ", ".join(f"`{f.name}`" for f in _keys(sub_cls)))
        rows.append(f"| `[{path}]` | " + "; ".join(parts) + " |")
    rows.append("| `[plugins.<name>]` | `plugin` (a built-in or entry-point name, or `package.module:Class`), "
                "`enabled`, `timeout_s`, `max_errors`, and the plugin's own keys |")
    from kbert_tui.state.rules import RULE_KEYS

    rows.append("| `[[rules]]` | " + ", ".join(f"`{key}`" for key in RULE_KEYS) + " |")
    return "\n".join(rows)


def _wrap_comment(text: str, width: int = 100) -> list[str]:
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def example_config(filename: str) -> str:
    """`kbert-tui init`'s file: every key with its doc, set to the built-in demo's value (paths commented)."""
    demo = default_config()
    lines = [f"# kbert-tui run configuration. Run it with:  kbert-tui run {filename}",
             "# Every key is optional; the values below are the built-in demo's. Paths are relative to this file.",
             "# Every key, its range and meaning: docs/config.md"]
    for path, cls in SECTIONS:
        section: Any = demo
        for part in path.split("."):
            section = getattr(section, part)
        lines += ["", f"[{path}]"]
        for f in _keys(cls):
            value = getattr(section, f.name)
            lines += _wrap_comment(f.metadata["doc"].replace("`", ""))
            if path == "data" and f.name in _NEED_TRAIN and value is not None and f.name != "template":
                lines.append(f"# {f.name} = {_toml(value)}")  # needs `train`: the demo has none
            elif value is None or f.name in ("template", "train_layers"):  # train_layers needs `pretrained`
                sample = {"train": "train.csv", "pretrained": "sentence-transformers/all-MiniLM-L6-v2",
                          "train_layers": value, "validation": "val.csv", "test": "test.csv", "id_column": "id",
                          "template": "{Name} is {Age} years old", "output_dir": "runs/demo",
                          "resume_from": "runs/demo/checkpoints/last", "path": "events.jsonl",
                          "broker": "redis://localhost:6379/0", "broker_token": "a-shared-secret"}.get(f.name, "")
                lines.append(f"# {f.name} = {_toml(sample)}")
            else:
                lines.append(f"{f.name} = {_toml(value)}")
    return "\n".join(lines) + "\n\n" + TAIL


TAIL = '''\
# Plugins: one table each; `plugin` is a built-in or entry-point name, or "package.module:Class".
# timeout_s / max_errors (per-call limit, error budget) are optional; other keys go to the plugin.
# See docs/plugins.md for the built-ins and how to write one.
[plugins.metrics_csv]
plugin = "metrics_csv"        # metrics.csv in the output directory
# path = "metrics.csv"

[plugins.error_threshold]
plugin = "error_threshold"    # system.error_threshold_exceeded when errors pile up
# threshold = 10
# window_s = 60

# [plugins.stop_on_f1]
# plugin = "early_stopping"   # a second early-stopping rule, besides [training.early_stopping]
# metric = "val_f1"
# patience = 2

# [plugins.summary]
# plugin = "metrics_aggregator"
# interval_s = 5

# Rules: act when an event matches a filter (the monitor's filter language). Actions: pause, stop,
# checkpoint, notify, emit (with event = "a.name"). See docs/config.md.
# [[rules]]
# name = "loss spike"
# when = "training.batch_completed (loss>5 OR loss=NaN)"
# action = ["pause", "checkpoint"]
# for = 1                     # matching events of that name in a row before it fires
# once = false                # true: at most once a run
'''



def sync_docs(text: str) -> str:
    """`text` with every `<!-- config:PATH -->` … `<!-- /config:PATH -->` block (and `config:keys`) regenerated."""
    import re

    def block(match: re.Match[str]) -> str:
        name = match.group(1)
        body = key_list() if name == "keys" else config_table(name)
        return f"<!-- config:{name} -->\n{body}\n<!-- /config:{name} -->"

    return re.sub(r"<!-- config:([a-z_.]+) -->\n.*?\n<!-- /config:\1 -->", block, text, flags=re.S)


if __name__ == "__main__":  # python -m kbert_tui.config_docs FILE...: regenerate the key tables in those docs
    import sys

    for name in sys.argv[1:]:
        doc = Path(name)
        doc.write_text(sync_docs(doc.read_text(encoding="utf-8")), encoding="utf-8")
