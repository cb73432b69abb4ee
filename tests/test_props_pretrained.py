"""Properties of the fine-tuning keys (model.pretrained, model.pooling, training.train_layers): every value
gives a config or one line naming the key, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pretrained_fixtures import tiny_checkpoint

from kbert_tui.config import ConfigError, parse_config

LAYERS = 3
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True),
                      st.text(max_size=12), st.lists(st.integers(), max_size=2))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("props") / "ckpt", layers=LAYERS)


def _parse(document: dict, base: Path):
    return parse_config({k: v for k, v in document.items() if v is not None}, origin="p.toml", base_dir=base)


def _one_line(error: ConfigError, key: str) -> None:
    message = str(error)
    assert message.startswith(f"p.toml: {key}: ") and "\n" not in message


@given(n=st.one_of(st.integers(-5, 2 * LAYERS), ANY_VALUE))
def test_train_layers_is_a_count_of_the_checkpoints_layers(checkpoint: Path, n: object) -> None:
    document = {"model": {"pretrained": str(checkpoint)}, "training": {"train_layers": n}}
    valid = isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= LAYERS
    if n is None:
        document["training"] = {}
    try:
        config = _parse(document, checkpoint.parent)
    except ConfigError as error:
        assert not valid and n is not None
        _one_line(error, "training.train_layers")
    else:
        assert valid or n is None
        assert config.training.train_layers == (2 if n is None else n)
        assert config.training.learning_rate == 1e-4  # a fine-tune's defaults: 1e-3 and 3 epochs from scratch
        assert config.training.epochs == 1  # one epoch fits 10,000 texts in 5 minutes on 2 cores


@given(rate=st.floats(1e-6, 1.0))
def test_a_learning_rate_given_is_kept_with_a_pretrained_model(checkpoint: Path, rate: float) -> None:
    config = _parse({"model": {"pretrained": str(checkpoint)}, "training": {"learning_rate": rate}}, checkpoint.parent)
    assert config.training.learning_rate == rate
    assert _parse({}, checkpoint.parent).training.learning_rate == 1e-3
    assert _parse({}, checkpoint.parent).training.epochs == 3


@given(n=st.integers(0, 5))
def test_train_layers_without_a_pretrained_model_is_refused(n: int) -> None:
    with pytest.raises(ConfigError, match="only meaningful with model.pretrained") as raised:
        _parse({"training": {"train_layers": n}}, Path.cwd())
    _one_line(raised.value, "training.train_layers")


@given(pooling=st.one_of(st.sampled_from(["cls", "mean"]), ANY_VALUE), pretrained=st.booleans())
def test_pooling_is_cls_or_mean_and_defaults_by_the_model(checkpoint: Path, pooling: object, pretrained: bool) -> None:
    model: dict = {"pooling": pooling} if pooling is not None else {}
    if pretrained:
        model["pretrained"] = str(checkpoint)
    try:
        config = _parse({"model": model}, checkpoint.parent)
    except ConfigError as error:
        assert pooling not in ("cls", "mean", None)
        _one_line(error, "model.pooling")
    else:
        assert config.model.pooling == (pooling or ("mean" if pretrained else "cls"))
        assert config.model.with_bag_of_words  # the product of experts either way (docs/model.md)
        assert (config.model.pretrained is not None) is pretrained


@given(value=ANY_VALUE)
def test_pretrained_is_a_folder_or_a_cached_name(checkpoint: Path, value: object) -> None:
    try:
        config = _parse({"model": {"pretrained": value}}, checkpoint.parent)
    except ConfigError as error:
        _one_line(error, "model.pretrained")
    else:
        # only the one checkpoint folder (a relative name of it) or nothing at all gives a config
        assert config.model.pretrained in (None, checkpoint.resolve())
        assert (config.model.pretrained is None) is (value is None)


@given(key=st.sampled_from(["hidden_size", "num_layers", "num_heads", "intermediate_size", "activation",
                            "vocab_size", "max_position"]))
def test_the_checkpoint_decides_its_sizes(checkpoint: Path, key: str) -> None:
    value = {"activation": "gelu", "num_layers": 2, "num_heads": 2, "vocab_size": 500}.get(key, 64)
    assert getattr(_parse({"model": {key: value}}, checkpoint.parent).model, key) == value  # fine from scratch
    with pytest.raises(ConfigError, match="set by the pretrained checkpoint's config.json") as raised:
        _parse({"model": {"pretrained": str(checkpoint), key: value}}, checkpoint.parent)
    _one_line(raised.value, f"model.{key}")
