"""Config loading: every problem is one ConfigError naming the file, the key path and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbert_tui.config import ConfigError, default_config, load_config
from kbert_tui.config_docs import example_config


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_empty_file_is_the_demo(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.data.is_builtin_demo
    assert config.source == (tmp_path / "run.toml").resolve()


def test_example_config_loads_and_equals_the_builtin_demo(tmp_path):
    config = load_config(write(tmp_path, example_config("run.toml")))
    assert config.replace(source=None) == default_config()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[training]\nlerning_rate = 0.1\n", ["training.lerning_rate", "unknown key", "learning_rate"]),
        ("[traning]\nepochs = 1\n", ["traning", "unknown key"]),
        ('[training]\nlearning_rate = "fast"\n', ["training.learning_rate", "a number > 0", "'fast'"]),
        ("[training]\nlearning_rate = -1\n", ["training.learning_rate", "a number > 0", "-1"]),
        ("[training]\nepochs = 0\n", ["training.epochs", "an integer >= 1"]),
        ("[training]\nepochs = 2.5\n", ["training.epochs", "an integer"]),
        ("[training]\nepochs = true\n", ["training.epochs", "an integer"]),
        ('[training.checkpoint]\npolicy = "sometimes"\n', ["training.checkpoint.policy", '"every_epoch"', "sometimes"]),
        ("[training.early_stopping]\npatience = 0\n", ["training.early_stopping.patience", ">= 1"]),
        ("[data]\nvalidation_split = 0.9\n", ["data.validation_split", "<= 0.5"]),
        ("[model]\nhidden_size = 30\nnum_heads = 4\n", ["model.num_heads", "divisor of model.hidden_size (30)"]),
        ("[model]\nmax_position = 16\n[data]\nmax_length = 64\n", ["model.max_position", "data.max_length"]),
        ('[data]\ntrain = "missing.csv"\n', ["data.train", "file not found", "missing.csv"]),
        ('[training]\nresume_from = "nowhere"\n', ["training.resume_from", "directory not found"]),
        ("[system]\ninterval_s = 0\n", ["system.interval_s", ">= 0.01"]),
        ("[system.thresholds]\ncpu_percent = 150\n", ["system.thresholds.cpu_percent", "<= 100"]),
        ("[plugins.mine]\nenabled = true\n", ["plugins.mine.plugin", "entry-point name"]),
        ("[events]\nmax_file_size_mb = 0\n", ["events.max_file_size_mb", "> 0"]),
        ("run = 3\n", ["run", "a table"]),
        ("[training\n", ["invalid TOML"]),
    ],
)
def test_errors_name_key_path_and_expectation(tmp_path, text, fragments):
    message = error_for(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message


def test_text_columns_and_template_are_exclusive(tmp_path):
    (tmp_path / "t.csv").write_text("a,label\nx,1\n")
    message = error_for(tmp_path, '[data]\ntrain = "t.csv"\ntext_columns = ["a"]\ntemplate = "{a}"\n')
    assert "data.template" in message and "not both" in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_non_utf8_config(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[run]\nname = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("text,label\nhi,a\n")
    config = load_config(write(tmp_path, '[data]\ntrain = "data/train.csv"\n[run]\noutput_dir = "out"\n'))
    assert config.data.train == tmp_path.resolve() / "data" / "train.csv"
    assert config.run.output_dir == tmp_path.resolve() / "out"


def test_plugins_keep_their_own_options(tmp_path):
    config = load_config(write(tmp_path, '[plugins.csv]\nplugin = "metrics_csv"\npath = "m.csv"\n[plugins.off]\n'
                                         'plugin = "a.b:C"\nenabled = false\n'))
    (first, second) = config.plugins
    assert (first.instance_name, first.plugin, first.enabled, dict(first.options)) == (
        "csv", "metrics_csv", True, {"path": "m.csv"})
    assert (second.plugin, second.enabled) == ("a.b:C", False)


def test_loading_writes_nothing(tmp_path):
    write(tmp_path, "[training]\nepochs = 0\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "run.toml")
    assert [p.name for p in tmp_path.iterdir()] == ["run.toml"]
