"""`kbert-tui run --headless` and `kbert-tui init` through main(argv): exit codes and messages."""

from __future__ import annotations

import json
import tomllib

import pytest

from kbert_tui import __version__
from kbert_tui.cli import main
from kbert_tui.config import load_config
from kbert_tui.events.store import read_events
from kbert_tui.training.testing import tiny_document


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


def toml_value(value):
    if isinstance(value, dict):
        raise TypeError
    return json.dumps(value)


def write_toml(path, document):
    lines = []
    for section, values in document.items():
        flat = {k: v for k, v in values.items() if not isinstance(v, dict)}
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in flat.items()]
        for k, v in values.items():
            if isinstance(v, dict):
                lines.append(f"[{section}.{k}]")
                lines += [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())
    return path


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    assert "--headless" in capsys.readouterr().out


def test_headless_run_succeeds(tmp_path, capsys):
    config = write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path))
    out = tmp_path / "cli-out"
    assert main(["run", str(config), "--headless", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"events → {out / 'events.jsonl'}" in printed
    assert "epoch 1: train_loss" in printed and "epoch 2: train_loss" in printed
    names = [e.name for e in read_events(out / "events.jsonl") if not e.name.startswith("plugin.")]
    assert names[0] == "data.validation_started" and "training.completed" in names
    assert (out / "predictions.csv").is_file()
    kinds = [line.split(",")[2] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert kinds.count("epoch") == 2  # metrics.csv is written without a [plugins] table


def test_bad_config_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[training]\nlearning_rate = 'x'\n")
    assert main(["run", str(path), "--headless", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "training.learning_rate" in err and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_config_and_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "none.toml"), "--headless"]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["run", "--no-such-flag"]) == 2


def test_data_error_exits_2(tmp_path, capsys):
    document = tiny_document(tmp_path)
    document["data"]["text_columns"] = ["review"]
    config = write_toml(tmp_path / "tiny.toml", document)
    assert main(["run", str(config), "--headless", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) 'review'" in err and "Traceback" not in err


def test_training_failure_exits_1(tmp_path, capsys, monkeypatch):
    from kbert_tui.training.model import BertClassifier

    monkeypatch.setattr(BertClassifier, "__call__", lambda self, ids, mask: (_ for _ in ()).throw(RuntimeError("boom")))
    config = write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path))
    assert main(["run", str(config), "--headless", "--output-dir", str(tmp_path / "o")]) == 1
    assert "error: boom" in capsys.readouterr().err
    names = [e.name for e in read_events(tmp_path / "o" / "events.jsonl") if not e.name.startswith("plugin.")]
    assert names[-1] == "training.failed"


def test_init_writes_a_config_that_loads(tmp_path, capsys):
    path = tmp_path / "conf" / "kbert.toml"
    assert main(["init", str(path)]) == 0
    assert "kbert-tui run" in capsys.readouterr().out
    config = load_config(path)
    assert config.data.is_builtin_demo and config.training.epochs >= 1
    assert main(["init", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["init", str(path), "--force"]) == 0


def test_output_dir_that_is_a_file_exits_2(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["run", "--headless", "--output-dir", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err
