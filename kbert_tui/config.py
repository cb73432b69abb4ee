"""The run configuration: one TOML file, checked completely before any work starts.

`load_config(path)` reads and validates a file; `default_config()` is the built-in demo.
Every problem raises `ConfigError` with one message naming the file, the key path
(``training.learning_rate``) and what was expected. Nothing here writes to disk.
Paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kbert_tui.state.rules import Rule

__all__ = [
    "ConfigError",
    "UserInputError",
    "RunConfig",
    "RunSection",
    "DataSection",
    "ModelSection",
    "TrainingSection",
    "CheckpointSection",
    "EarlyStoppingSection",
    "EventsSection",
    "SystemSection",
    "SystemThresholds",
    "PluginSpec",
    "load_config",
    "parse_config",
    "default_config",
    "config_to_dict",
    "EXAMPLE_CONFIG",
]


class UserInputError(Exception):
    """Bad input from the user (config, data, checkpoint): the message says where and what; exit status 2."""


class ConfigError(UserInputError, ValueError):
    """A configuration problem; the message names the file, the key path and the expectation."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class RunSection:
    name: str = "demo"
    output_dir: Path | None = None  # None: runs/<name>-<timestamp> under the current directory
    seed: int = 42


@dataclass(frozen=True)
class DataSection:
    train: Path | None = None  # None: the built-in demo dataset
    validation: Path | None = None
    test: Path | None = None
    id_column: str | None = None
    text_columns: tuple[str, ...] = ("text",)
    template: str | None = None
    label_column: str = "label"
    max_length: int = 64
    batch_size: int = 32
    validation_split: float = 0.1
    batch_event_every: int = 10
    load_time_warning_s: float = 1.0

    @property
    def is_builtin_demo(self) -> bool:
        return self.train is None


@dataclass(frozen=True)
class ModelSection:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    dropout: float = 0.1
    vocab_size: int = 2000
    max_position: int = 128


@dataclass(frozen=True)
class CheckpointSection:
    policy: str = "best"  # every_epoch | best | last | none
    keep: int = 2  # every_epoch: how many epoch checkpoints to keep (0 = all)


@dataclass(frozen=True)
class EarlyStoppingSection:
    enabled: bool = False
    metric: str = "val_loss"
    mode: str = "min"  # min | max
    patience: int = 3
    min_delta: float = 0.0


@dataclass(frozen=True)
class TrainingSection:
    epochs: int = 3
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    eval_every: int = 0  # 0: only at the end of each epoch
    blas_threads: int = 0  # OpenBLAS threads on CPU; 0: the cores less one for the monitor (at least 1)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    early_stopping: EarlyStoppingSection = field(default_factory=EarlyStoppingSection)
    resume_from: Path | None = None


@dataclass(frozen=True)
class EventsSection:
    path: Path | None = None  # None: <output_dir>/events.jsonl; relative: under output_dir
    max_file_size_mb: float = 100.0
    model_events_every: int = 10
    broker: str | None = None  # "redis://host:6379/0": also publish every event to a Redis stream
    broker_maxlen: int = 100_000  # the stream keeps about this many newest events (XADD MAXLEN ~)
    broker_token: str | None = None  # control through the broker is off unless set (viewers present it)


@dataclass(frozen=True)
class SystemThresholds:
    cpu_percent: float = 95.0
    memory_percent: float = 90.0
    disk_percent: float = 95.0
    gpu_memory_percent: float = 95.0
    gpu_temperature_c: float = 85.0
    data_load_share: float = 0.5


@dataclass(frozen=True)
class SystemSection:
    enabled: bool = True
    interval_s: float = 1.0
    gpu: bool = True
    thresholds: SystemThresholds = field(default_factory=SystemThresholds)
    hysteresis: float = 0.05  # a warning clears below threshold * (1 - hysteresis)
    sustain_samples: int = 3  # samples in a row at/over a threshold before it warns


@dataclass(frozen=True)
class PluginSpec:
    instance_name: str
    plugin: str
    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    events: EventsSection = field(default_factory=EventsSection)
    system: SystemSection = field(default_factory=SystemSection)
    plugins: tuple[PluginSpec, ...] = ()
    source: Path | None = None  # the file it was read from; None for the built-in demo
    rules: tuple[Rule, ...] = ()  # [[rules]]: act on events (kbert_tui.state.rules)

    def replace(self, **sections: Any) -> RunConfig:
        return dataclasses.replace(self, **sections)


# --------------------------------------------------------------------------- validation helpers

_Check = Callable[[Any], bool]


class _Reader:
    """Reads one TOML table, tracking the key path and the file for error messages."""

    def __init__(self, table: Mapping[str, Any], path: str, origin: str, base_dir: Path) -> None:
        self.table = table
        self.path = path
        self.origin = origin
        self.base_dir = base_dir
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, expectation: str, got: Any = dataclasses.MISSING) -> ConfigError:
        where = f"{self.origin}: {self.key(name)}"
        if got is dataclasses.MISSING:
            return ConfigError(f"{where}: {expectation}")
        return ConfigError(f"{where}: expected {expectation}, got {_show(got)}")

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.table.get(name, dataclasses.MISSING)

    def int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        expectation = "an integer" + _range_text(minimum, maximum)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, expectation, value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.fail(name, expectation, value)
        return value

    def float(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_min: bool = False,
    ) -> float:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        low = (">" if exclusive_min else ">=") if minimum is not None else None
        expectation = "a number" + _range_text(minimum, maximum, low)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(name, expectation, value)
        too_low = minimum is not None and (value <= minimum if exclusive_min else value < minimum)
        if too_low or (maximum is not None and value > maximum):
            raise self.fail(name, expectation, value)
        return float(value)

    def bool(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, "true or false", value)
        return value

    def str(self, name: str, default: str | None, *, choices: tuple[str, ...] | None = None) -> str | None:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        if choices is not None:
            if value not in choices:
                raise self.fail(name, "one of " + ", ".join(f'"{c}"' for c in choices), value)
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "a non-empty string", value)
        return value

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...] | None:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return None
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
        if not ok:
            raise self.fail(name, "a non-empty list of column names", value)
        return tuple(value)

    def path_value(self, name: str, *, must_exist: bool, kind: str = "file") -> Path | None:
        value = self.str(name, None)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if must_exist:
            exists = path.is_file() if kind == "file" else path.is_dir()
            if not exists:
                raise self.fail(name, f"{kind} not found: {path} (relative paths start at the config file's folder)")
        return path

    def table_of(self, name: str) -> _Reader:
        value = self._get(name)
        if value is dataclasses.MISSING:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(name, "a table", value)
        return _Reader(value, self.key(name), self.origin, self.base_dir)

    def done(self) -> None:
        """Reject keys nobody asked for."""
        for name in self.table:
            if name not in self.seen:
                known = ", ".join(sorted(self.seen)) or "none"
                raise self.fail(name, f"unknown key (known keys here: {known})")


def _range_text(minimum: Any, maximum: Any, low: str | None = ">=") -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{low or '>='} {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return (" " + " and ".join(parts)) if parts else ""


def _show(value: Any) -> str:
    text = repr(value)
    kind = type(value).__name__
    return f"{text[:60]}{'…' if len(text) > 60 else ''} ({kind})"


# --------------------------------------------------------------------------- parsing


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML config file; raise ConfigError naming the file, key and expectation."""
    path = Path(path).expanduser()
    origin = str(path)
    if not path.is_file():
        raise ConfigError(f"{origin}: config file not found")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{origin}: cannot read the config file: {error.strerror or error}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{origin}: not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: invalid TOML: {error}") from None
    return parse_config(document, origin=origin, base_dir=path.resolve().parent, source=path.resolve())


def parse_config(
    document: Mapping[str, Any],
    *,
    origin: str = "<config>",
    base_dir: Path | None = None,
    source: Path | None = None,
) -> RunConfig:
    """Validate an already-parsed TOML document (a dict of tables)."""
    root = _Reader(document, "", origin, base_dir or Path.cwd())
    run = _parse_run(root.table_of("run"))
    data = _parse_data(root.table_of("data"))
    model = _parse_model(root.table_of("model"), data)
    training = _parse_training(root.table_of("training"))
    events = _parse_events(root.table_of("events"))
    if "name" not in root.table.get("run", {}) and not data.is_builtin_demo:
        # a CSV run without [run] name is named after its config file, not "demo"
        run = dataclasses.replace(run, name=source.stem if source is not None else "run")
    system = _parse_system(root.table_of("system"))
    plugins = _parse_plugins(root.table_of("plugins"))
    rules = _parse_rules(root)
    root.done()
    return RunConfig(run, data, model, training, events, system, plugins, source, rules=rules)


def _parse_rules(root: _Reader) -> tuple[Rule, ...]:
    """[[rules]]: each checked whole (its filter parsed), so a bad one stops the run before it starts."""
    from kbert_tui.state.rules import RuleProblem, parse_rule

    raw = root._get("rules")
    if raw is dataclasses.MISSING:
        return ()
    if not isinstance(raw, list):
        raise root.fail("rules", "an array of tables ([[rules]])", raw)
    rules = []
    for number, table in enumerate(raw, 1):
        try:
            rules.append(parse_rule(table, number))
        except RuleProblem as problem:
            key = f"rules[{number}]" + (f".{problem.key}" if problem.key else "")
            raise ConfigError(f"{root.origin}: {key}: {problem.message}") from None
    return tuple(rules)


def _parse_run(t: _Reader) -> RunSection:
    d = RunSection()
    section = RunSection(
        name=t.str("name", d.name),
        output_dir=t.path_value("output_dir", must_exist=False),
        seed=t.int("seed", d.seed, minimum=0, maximum=2**32 - 1),
    )
    t.done()
    return section


def _parse_data(t: _Reader) -> DataSection:
    d = DataSection()
    train = t.path_value("train", must_exist=True)
    validation = t.path_value("validation", must_exist=True)
    test = t.path_value("test", must_exist=True)
    text_columns = t.str_list("text_columns", d.text_columns)
    template = t.str("template", None)
    if text_columns is not None and template is not None:
        raise t.fail("template", "either data.text_columns or data.template, not both")
    if train is None:
        for name in ("validation", "test", "id_column", "text_columns", "template", "label_column"):
            if name in t.table:
                raise t.fail(name, "only meaningful with data.train (without it the built-in demo data is used)")
    section = DataSection(
        train=train,
        validation=validation,
        test=test,
        id_column=t.str("id_column", None),
        text_columns=text_columns or d.text_columns,
        template=template,
        label_column=t.str("label_column", d.label_column),
        max_length=t.int("max_length", d.max_length, minimum=4, maximum=4096),
        batch_size=t.int("batch_size", d.batch_size, minimum=1, maximum=65536),
        validation_split=t.float("validation_split", d.validation_split, minimum=0.0, maximum=0.5, exclusive_min=True),
        batch_event_every=t.int("batch_event_every", d.batch_event_every, minimum=0),
        load_time_warning_s=t.float("load_time_warning_s", d.load_time_warning_s, minimum=0.0, exclusive_min=True),
    )
    t.done()
    return section


def _parse_model(t: _Reader, data: DataSection) -> ModelSection:
    d = ModelSection()
    hidden = t.int("hidden_size", d.hidden_size, minimum=8, maximum=8192)
    heads = t.int("num_heads", d.num_heads, minimum=1, maximum=128)
    if hidden % heads:
        raise t.fail("num_heads", f"a divisor of model.hidden_size ({hidden})", heads)
    max_position = t.int("max_position", d.max_position, minimum=8, maximum=8192)
    if max_position < data.max_length:
        raise t.fail("max_position", f"an integer >= data.max_length ({data.max_length})", max_position)
    section = ModelSection(
        hidden_size=hidden,
        num_layers=t.int("num_layers", d.num_layers, minimum=1, maximum=48),
        num_heads=heads,
        intermediate_size=t.int("intermediate_size", d.intermediate_size, minimum=8, maximum=65536),
        dropout=t.float("dropout", d.dropout, minimum=0.0, maximum=0.9),
        vocab_size=t.int("vocab_size", d.vocab_size, minimum=100, maximum=1_000_000),
        max_position=max_position,
    )
    t.done()
    return section


def _parse_training(t: _Reader) -> TrainingSection:
    d = TrainingSection()
    c = t.table_of("checkpoint")
    dc = CheckpointSection()
    checkpoint = CheckpointSection(
        policy=_choice(c, "policy", dc.policy, ("every_epoch", "best", "last", "none")),
        keep=c.int("keep", dc.keep, minimum=0),
    )
    c.done()
    e = t.table_of("early_stopping")
    de = EarlyStoppingSection()
    metric = _choice(e, "metric", de.metric, ("val_loss", "val_accuracy", "val_f1", "train_loss"))
    early = EarlyStoppingSection(
        enabled=e.bool("enabled", de.enabled),
        metric=metric,
        mode=_choice(e, "mode", "min" if metric.endswith("loss") else "max", ("min", "max")),
        patience=e.int("patience", de.patience, minimum=1),
        min_delta=e.float("min_delta", de.min_delta, minimum=0.0),
    )
    e.done()
    section = TrainingSection(
        epochs=t.int("epochs", d.epochs, minimum=1, maximum=10_000),
        learning_rate=t.float("learning_rate", d.learning_rate, minimum=0.0, maximum=10.0, exclusive_min=True),
        weight_decay=t.float("weight_decay", d.weight_decay, minimum=0.0, maximum=1.0),
        warmup_ratio=t.float("warmup_ratio", d.warmup_ratio, minimum=0.0, maximum=1.0),
        max_grad_norm=t.float("max_grad_norm", d.max_grad_norm, minimum=0.0),
        eval_every=t.int("eval_every", d.eval_every, minimum=0),
        blas_threads=t.int("blas_threads", d.blas_threads, minimum=0, maximum=256),
        checkpoint=checkpoint,
        early_stopping=early,
        resume_from=t.path_value("resume_from", must_exist=True, kind="directory"),
    )
    if section.resume_from is not None and not (section.resume_from / "state.json").is_file():
        raise t.fail("resume_from", f"a checkpoint folder holding state.json: {section.resume_from}")
    t.done()
    return section


def _choice(t: _Reader, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = t.str(name, default, choices=choices)
    assert value is not None
    return value


def _parse_events(t: _Reader) -> EventsSection:
    d = EventsSection()
    value = t.str("path", None)
    section = EventsSection(
        path=Path(value).expanduser() if value is not None else None,
        max_file_size_mb=t.float("max_file_size_mb", d.max_file_size_mb, minimum=0.0, exclusive_min=True),
        model_events_every=t.int("model_events_every", d.model_events_every, minimum=0),
        broker=t.str("broker", None),
        broker_maxlen=t.int("broker_maxlen", d.broker_maxlen, minimum=100),
        broker_token=t.str("broker_token", None),
    )
    if section.broker is not None and (problem := broker_url_problem(section.broker)):
        raise t.fail("broker", problem)
    t.done()
    return section


def broker_url_problem(url: str) -> str | None:
    """Why `url` is not a broker URL kbert-tui can use (None when it is)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        return f'expected a URL starting with redis://, rediss:// or unix://, got {url[:60]!r}'
    if scheme != "unix" and not rest.split("/", 1)[0].rpartition("@")[2]:
        return f"no host in {url[:60]!r}"
    return None


# --- [system] and [plugins] ---


def _parse_system(t: _Reader) -> SystemSection:
    d = SystemSection()
    th = t.table_of("thresholds")
    dt = SystemThresholds()
    thresholds = SystemThresholds(
        cpu_percent=th.float("cpu_percent", dt.cpu_percent, minimum=0.0, maximum=100.0),
        memory_percent=th.float("memory_percent", dt.memory_percent, minimum=0.0, maximum=100.0),
        disk_percent=th.float("disk_percent", dt.disk_percent, minimum=0.0, maximum=100.0),
        gpu_memory_percent=th.float("gpu_memory_percent", dt.gpu_memory_percent, minimum=0.0, maximum=100.0),
        gpu_temperature_c=th.float("gpu_temperature_c", dt.gpu_temperature_c, minimum=0.0, maximum=150.0),
        data_load_share=th.float("data_load_share", dt.data_load_share, minimum=0.0, maximum=1.0),
    )
    th.done()
    section = SystemSection(
        enabled=t.bool("enabled", d.enabled),
        interval_s=t.float("interval_s", d.interval_s, minimum=0.01, maximum=3600.0),
        gpu=t.bool("gpu", d.gpu),
        thresholds=thresholds,
        hysteresis=t.float("hysteresis", d.hysteresis, minimum=0.0, maximum=0.5),
        sustain_samples=t.int("sustain_samples", d.sustain_samples, minimum=1, maximum=1000),
    )
    t.done()
    return section


def _parse_plugins(t: _Reader) -> tuple[PluginSpec, ...]:
    specs = []
    for instance_name in list(t.table):
        p = t.table_of(instance_name)
        plugin = p.str("plugin", None)
        if plugin is None:
            raise p.fail("plugin", 'a plugin name: an entry-point name or "package.module:Class"')
        enabled = p.bool("enabled", True)
        # timeout_s / max_errors belong to the PluginManager (per-call limit, error budget); checked here.
        p.float("timeout_s", 5.0, minimum=0.0, exclusive_min=True)
        p.int("max_errors", 5, minimum=1)
        options = {k: v for k, v in p.table.items() if k not in ("plugin", "enabled")}
        specs.append(PluginSpec(instance_name, plugin, enabled, options))
    t.done()
    named = {spec.instance_name for spec in specs}
    if not any(spec.plugin == "metrics_csv" for spec in specs) and "metrics_csv" not in named:
        specs.append(PluginSpec("metrics_csv", "metrics_csv"))  # every run writes metrics.csv unless turned off
    return tuple(specs)


# --------------------------------------------------------------------------- defaults and export


def default_config() -> RunConfig:
    """The built-in demo: generated sentiment data, a small BERT, a few epochs (under 2 min on 2 cores)."""
    return RunConfig(
        run=RunSection(name="demo", seed=42),
        data=DataSection(max_length=32, batch_size=32),
        model=ModelSection(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256, vocab_size=1000),
        # 5e-4: at 1e-3 two of five seeds stalled near 84% (post-LN); at 5e-4 all five reached 99.25-100%
        training=TrainingSection(epochs=8, learning_rate=5e-4, warmup_ratio=0.1, eval_every=50),
        plugins=(PluginSpec("metrics_csv", "metrics_csv"), PluginSpec("error_threshold", "error_threshold")),
    )


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """A JSON-friendly copy (paths as strings), for events and checkpoints."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        return value

    return convert(config)


EXAMPLE_CONFIG = '''\
# kbert-tui run configuration. Run it with:  kbert-tui run {filename}
# Every key is optional; the values below are the built-in demo's. Paths are relative to this file.

[run]
name = "demo"                 # shows in the TUI and in the run id
# output_dir = "runs/demo"    # default: runs/<name>-<timestamp> in the current directory
seed = 42

[data]
# Without `train`, the built-in generated sentiment dataset is used (no download).
# train = "train.csv"         # Kaggle-style CSV with a header row
# validation = "val.csv"      # optional; otherwise validation_split of train is held out
# test = "test.csv"           # optional; predictions.csv (id, label) is written at the end
# id_column = "PassengerId"   # for predictions.csv; default: the row number
# text_columns = ["text"]     # one or more columns joined into the text ...
# template = "{{Name}} is {{Age}} years old, {{Sex}}, class {{Pclass}}"   # ... or a row template;
#                             # "{{*}}" expands to "column: value, ..." for every other column
# label_column = "label"      # strings or ints; binary or multi-class
max_length = 32               # tokens per text, [CLS] and [SEP] included
batch_size = 32
validation_split = 0.1
batch_event_every = 10        # a data.batch_loaded event every N batches (0: never)
load_time_warning_s = 1.0     # data.performance_warning when a batch takes longer to load

[model]
hidden_size = 128
num_layers = 2
num_heads = 4
intermediate_size = 256
dropout = 0.1
vocab_size = 1000             # WordPiece vocabulary, trained on the training text
max_position = 128

[training]
epochs = 8
learning_rate = 0.0005
weight_decay = 0.01
warmup_ratio = 0.1            # linear warm-up over this share of the steps, then linear decay
max_grad_norm = 1.0           # 0 turns clipping off
eval_every = 50               # validate every N steps as well as after each epoch (0: epochs only)
blas_threads = 0              # OpenBLAS threads for CPU training (0: the cores less one, at least 1)
# resume_from = "runs/demo/checkpoints/last"

[training.checkpoint]
policy = "best"               # "every_epoch", "best", "last" or "none"
keep = 2                      # every_epoch: keep the newest N (0: all)

[training.early_stopping]
enabled = false
metric = "val_loss"           # val_loss, val_accuracy, val_f1 or train_loss
mode = "min"
patience = 3
min_delta = 0.0

[events]
# path = "events.jsonl"       # default: <output_dir>/events.jsonl
max_file_size_mb = 100        # rotate the log past this size
model_events_every = 10       # model.forward_pass / model.backward_pass every N steps (0: never)
# broker = "redis://localhost:6379/0"   # also publish events to Redis (kbert-tui attach redis://...);
#                             # in clear text unless the URL is rediss://
# broker_maxlen = 100000      # the stream keeps about this many newest events
# broker_token = "..."        # allow pause/resume/stop through the broker to viewers presenting it

[system]
enabled = true
interval_s = 1.0              # system.* readings every N seconds
gpu = true                    # NVIDIA GPUs through NVML (system.gpu_unavailable without one)
hysteresis = 0.05             # a performance warning clears below threshold * (1 - hysteresis)
sustain_samples = 3           # samples in a row over a threshold before it warns

[system.thresholds]
cpu_percent = 95
memory_percent = 90
disk_percent = 95
gpu_memory_percent = 95
gpu_temperature_c = 85
data_load_share = 0.5

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
