"""The run configuration: one TOML file, checked completely before any work starts.

`load_config(path)` reads and validates a file; `default_config()` is the built-in demo.
Every problem raises `ConfigError` with one message naming the file, the key path
(``training.learning_rate``) and what was expected. Nothing here writes to disk.
Paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbert_tui.config_reader import TableReader, template_problem
from kbert_tui.errors import ConfigError, UserInputError

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
    "option",
    "read_section",
    "template_problem",
    "SECTIONS",
]


# --------------------------------------------------------------------------- sections
# Each key is declared once: its type (the annotation), default, bounds or choices, and one line of
# doc. The parser, `kbert-tui init`'s example, the docs tables and the README's key list follow from
# these declarations; cross-field rules are explicit code in the _parse_* functions.


def _key(default: Any = None, doc: str = "", *, minimum: Any = None, maximum: Any = None,
         exclusive_min: bool = False, choices: tuple[str, ...] | None = None, path: str | None = None,
         custom: bool = False, shown: str | None = None, typed: str | None = None,
         factory: Callable[[], Any] | None = None) -> Any:
    """A config key: `path` "file"/"directory" must exist, "out" may not; `custom` keys are read by
    explicit code; `shown` / `typed` are how the docs spell a default or a type the declaration can't."""
    meta = {"doc": doc, "minimum": minimum, "maximum": maximum, "exclusive_min": exclusive_min,
            "choices": choices, "path": path, "custom": custom, "shown": shown, "typed": typed}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSection:
    name: str = _key("demo", "shown in the TUI; starts the run id `<name>-<yyyymmdd-hhmmss>-<hex>`",
                     shown='`"demo"`; with `data.train`, the config file\'s name (`titanic.toml` → `titanic`)')
    output_dir: Path | None = _key(None, "events, checkpoints, predictions. An existing folder is reused (the "
                                   "events log is appended to)", path="out",
                                   shown="`runs/<run id>` in the current directory")
    seed: int = _key(42, "model init, dropout, shuffling, validation split, demo data", minimum=0, maximum=2**32 - 1,
                     typed="int 0 … 2³²-1")


@dataclass(frozen=True)
class DataSection:
    train: Path | None = _key(None, "Kaggle-style CSV with a header row, UTF-8", path="file",
                              shown="— (built-in demo)")
    validation: Path | None = _key(None, "without it, `validation_split` of the training rows is held out",
                                   path="file")
    test: Path | None = _key(None, "no label needed; `predictions.csv` (`<id_column>,<label_column>`) is written "
                             "at the end", path="file")
    id_column: str | None = _key(None, "the id written to `predictions.csv`", shown="the test file's `id` column "
                                 "(any case) when it has one, else the row number")
    text_columns: tuple[str, ...] = _key(("text",), "columns joined (with ` ; `) into the text; one string or a "
                                         "list", custom=True)
    template: str | None = _key(None, "instead of `text_columns`: a row template such as `\"{Name} is {Age} years "
                                "old, {Sex}, class {Pclass}\"`; `{*}` expands to `Column: value, …` for every "
                                "column but the id and label (empty cells skipped)", custom=True)
    label_column: str = _key("label", "labels may be strings or ints, two or more classes; numeric labels are "
                             "ordered numerically")
    max_length: int = _key(64, "tokens per text including `[CLS]` and `[SEP]`; longer texts are cut",
                           minimum=4, maximum=4096)
    batch_size: int = _key(32, "texts per training step", minimum=1, maximum=65536)
    length_buckets: bool = _key(True, "batch texts of similar length together (sorted within shuffled chunks of "
                                "50 batches, batch order shuffled), so batches pad less (docs/model.md)")
    validation_split: float = _key(0.1, "share held out when there is no validation file", minimum=0.0,
                                   maximum=0.5, exclusive_min=True)
    batch_event_every: int = _key(10, "a `data.batch_loaded` event every N batches (0: never)", minimum=0)
    load_time_warning_s: float = _key(1.0, "`data.performance_warning` when one batch takes longer to build",
                                      minimum=0.0, exclusive_min=True)

    @property
    def is_builtin_demo(self) -> bool:
        return self.train is None


@dataclass(frozen=True)
class ModelSection:
    hidden_size: int = _key(64, "width of every layer", minimum=8, maximum=8192)
    num_layers: int = _key(2, "transformer layers (post-LayerNorm, GELU, like BERT)", minimum=1, maximum=48)
    num_heads: int = _key(4, "attention heads; must divide `hidden_size`", minimum=1, maximum=128)
    intermediate_size: int = _key(128, "feed-forward width", minimum=8, maximum=65536)
    dropout: float = _key(0.1, "dropout rate", minimum=0.0, maximum=0.9)
    activation: str = _key("gelu_fast", "feed-forward activation: `gelu` (exact, erf), `gelu_approx` (tanh), "
                           "`gelu_fast` (x·σ(1.702x): MLX's exact erf is a third of a CPU step) or `relu`",
                           choices=("gelu", "gelu_approx", "gelu_fast", "relu"))
    vocab_size: int = _key(8000, "WordPiece vocabulary size, an upper bound: learning stops when every word of "
                           "the training texts is whole, so small corpora get fewer (whole words beat 2,000 "
                           "sub-words by 0–4.5 points on real text, docs/model.md)",
                           minimum=100, maximum=1_000_000)
    max_position: int = _key(128, "position embeddings; at least `data.max_length`", minimum=8, maximum=8192)
    with_bag_of_words: bool = _key(True, "predict with the encoder's and a bag-of-words logistic regression's "
                                   "class probabilities multiplied (a product of experts, both fitted on the "
                                   "training split): `val_accuracy` and `predictions.csv` are the pair's, "
                                   "`encoder_val_accuracy` the encoder's alone; `false`: the encoder alone")
    pretrained: Path | None = _key(None, "fine-tune a pretrained BERT-family checkpoint (`bert`, `distilbert`): a "
                                   "Hugging Face folder (config.json, model.safetensors, tokenizer.json or "
                                   "vocab.txt), or a model's name (`sentence-transformers/all-MiniLM-L6-v2`) in the "
                                   "local Hugging Face cache. Its config.json sets the sizes, activation and "
                                   "vocabulary (the keys above are then not allowed); see `training.train_layers`",
                                   custom=True, typed="path or name", shown="— (a model trained from scratch)")
    pooling: str = _key("cls", "one vector per text for the head: the `[CLS]` position or the `mean` of the "
                        "tokens", choices=("cls", "mean"), custom=True, shown="`mean` with `pretrained`, else `cls`")


@dataclass(frozen=True)
class CheckpointSection:
    policy: str = _key("best", "`checkpoints/epoch-NNN`, `checkpoints/best` (on a new best of the monitored "
                       "metric), `checkpoints/last` (overwritten each epoch), or none",
                       choices=("every_epoch", "best", "last", "none"))
    keep: int = _key(2, "with `every_epoch`: keep the newest N (0: all)", minimum=0)


@dataclass(frozen=True)
class EarlyStoppingSection:
    enabled: bool = _key(True, "stop when the metric has not improved for `patience` epochs "
                         "(`training.early_stopped`, then `training.completed` with `stopped_early: true`)")
    metric: str = _key("val_accuracy", "the monitored metric (also decides `training.new_best_model` and the `best` "
                       "checkpoint)", choices=("val_loss", "val_accuracy", "val_f1", "train_loss"))
    mode: str = _key("max", "which way is better", choices=("min", "max"), custom=True,
                     shown="`min` for losses, else `max`")
    patience: int = _key(2, "epochs without improvement before stopping", minimum=1)
    min_delta: float = _key(0.0, "smallest change that counts as an improvement", minimum=0.0)


@dataclass(frozen=True)
class TrainingSection:
    epochs: int = _key(3, "passes over the training data", minimum=1, maximum=10_000,
                       shown="`3`; `1` with `model.pretrained`")
    learning_rate: float = _key(1e-3, "peak rate of AdamW (the demo's 0.0005: at 0.001 two of five seeds stalled "
                                "near 84%)", minimum=0.0, maximum=10.0, exclusive_min=True,
                                shown="`0.001`; `0.0001` with `model.pretrained`")
    weight_decay: float = _key(0.01, "AdamW decoupled weight decay", minimum=0.0, maximum=1.0)
    warmup_ratio: float = _key(0.1, "linear warm-up over this share of all steps, then linear decay to 1%",
                               minimum=0.0, maximum=1.0)
    max_grad_norm: float = _key(1.0, "clip the global gradient norm; 0 turns clipping off (the norm is still "
                                "reported)", minimum=0.0)
    eval_every: int = _key(0, "also validate every N steps (`training.evaluation_completed`); validation always "
                           "runs after each epoch", minimum=0)
    device: str = _key("auto", "where MLX trains: `auto` takes the GPU when this MLX has one (Apple silicon; "
                       "Linux with an NVIDIA GPU and the `cuda` extra), else the CPU; `gpu` without one is an error",
                       choices=("auto", "cpu", "gpu"))
    blas_threads: int = _key(0, "OpenBLAS threads for CPU training; `0` picks the cores less one (at least 1), "
                             "left for the monitor and the event loop, since OpenBLAS's spinning threads slow "
                             "down sharply when another process wants the cores (measured in docs/model.md). "
                             "Shown in the Training pane and the headless header; `OPENBLAS_NUM_THREADS` is used "
                             "when this is `0` and it is set", minimum=0, maximum=256)
    restore_best: bool = _key(True, "at the end, go back to the weights of the epoch with the best monitored "
                              "metric (`early_stopping.metric`) for the final metrics and `predictions.csv`; "
                              "`training.completed` names it as `restored_epoch`; a best epoch from before a "
                              "resume comes back from its `best` checkpoint")
    baseline: bool = _key(True, "fit a bag-of-words logistic regression (TF-IDF unigrams and bigrams, naive-Bayes "
                          "weighted with two classes) on the same "
                          "split when the run starts (seconds) and show its validation accuracy beside the "
                          "model's (`data.baseline_computed`)")
    train_layers: int = _key(2, "with `model.pretrained`: the top N layers and the head train; the layers below "
                             "stay frozen and their outputs are computed once per run (0: the head only; the "
                             "embeddings never train)", minimum=0, maximum=1000)
    checkpoint: CheckpointSection = _key(doc="[training.checkpoint]", factory=CheckpointSection)
    early_stopping: EarlyStoppingSection = _key(doc="[training.early_stopping]", factory=EarlyStoppingSection)
    resume_from: Path | None = _key(None, "continue a run from a checkpoint folder: weights, optimizer state, "
                                    "tokenizer, labels, epoch and step (mid-epoch too)", path="directory")


@dataclass(frozen=True)
class EventsSection:
    path: Path | None = _key(None, "the JSONL event log; a relative path is under `output_dir`", custom=True,
                             shown="`<output_dir>/events.jsonl`", typed="path")
    max_file_size_mb: float = _key(100.0, "rotate the log past this size", minimum=0.0, exclusive_min=True)
    model_events_every: int = _key(10, "`model.forward_pass` / `model.backward_pass` every N steps (0: never)",
                                   minimum=0)
    broker: str | None = _key(None, "also publish every event to Redis Streams (`redis://host:6379/0`, "
                              "`rediss://`, `unix://`) for `kbert-tui attach redis://…`; `kbert-tui run --broker URL` "
                              "overrides it. In clear text unless `rediss://`. See [remote.md](remote.md)",
                              typed="URL")
    broker_maxlen: int = _key(100_000, "the stream keeps about this many newest events (XADD MAXLEN ~)",
                              minimum=100)
    broker_token: str | None = _key(None, "pause/resume/stop through the broker only for viewers presenting it "
                                    "(off unless set)")


@dataclass(frozen=True)
class SystemThresholds:
    cpu_percent: float = _key(95.0, "`system.performance_warning` at or above this CPU use", minimum=0.0,
                              maximum=100.0)
    memory_percent: float = _key(90.0, "… memory use", minimum=0.0, maximum=100.0)
    disk_percent: float = _key(95.0, "… disk use (the output directory's disk)", minimum=0.0, maximum=100.0)
    gpu_memory_percent: float = _key(95.0, "… GPU memory use", minimum=0.0, maximum=100.0)
    gpu_temperature_c: float = _key(85.0, "… GPU temperature", minimum=0.0, maximum=150.0)
    data_load_share: float = _key(0.5, "`system.bottleneck_detected` when data loading takes this share of "
                                  "step time", minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class SystemSection:
    enabled: bool = _key(True, "sample CPU, memory, disk, MLX memory and GPUs")
    interval_s: float = _key(1.0, "`system.*` readings every N seconds", minimum=0.01, maximum=3600.0)
    gpu: bool = _key(True, "NVIDIA GPUs through NVML (`system.gpu_unavailable` without one)")
    thresholds: SystemThresholds = _key(doc="[system.thresholds]", factory=SystemThresholds)
    hysteresis: float = _key(0.05, "a performance warning clears below threshold × (1 − hysteresis)",
                             minimum=0.0, maximum=0.5)
    sustain_samples: int = _key(3, "samples in a row at or over a threshold before it warns", minimum=1,
                                maximum=1000)


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
    except RecursionError:
        raise ConfigError(f"{origin}: invalid TOML: arrays or tables nested too deeply") from None
    return parse_config(document, origin=origin, base_dir=path.resolve().parent, source=path.resolve())


def parse_config(
    document: Mapping[str, Any],
    *,
    origin: str = "<config>",
    base_dir: Path | None = None,
    source: Path | None = None,
) -> RunConfig:
    """Validate an already-parsed TOML document (a dict of tables)."""
    root = TableReader(document, "", origin, base_dir or Path.cwd())
    run = _parse_run(root.table_of("run"))
    data = _parse_data(root.table_of("data"))
    if "name" not in root.table.get("run", {}) and not data.is_builtin_demo:
        # a CSV run without [run] name is named after its config file, not "demo"
        run = dataclasses.replace(run, name=source.stem if source is not None else "run")
    model = _parse_model(root.table_of("model"), data)
    training = _parse_training(root.table_of("training"))
    training = _check_pretrained(root, model, training)
    events = _parse_events(root.table_of("events"))
    system = _parse_system(root.table_of("system"))
    plugins = _parse_plugins(root.table_of("plugins"))
    rules = _parse_rules(root)
    root.done()
    _check_producers(root.origin, plugins, rules)
    return RunConfig(run, data, model, training, events, system, plugins, source, rules=rules)


def _parse_rules(root: TableReader) -> tuple[Rule, ...]:
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


def _check_producers(origin: str, plugins: tuple[PluginSpec, ...], rules: tuple[Rule, ...]) -> None:
    """Every enabled plugin can be loaded and takes its keys (its `Options`), and every rule's `when` names
    events that a producer declares (the catalogue, these plugins' `emits`, the rules' own `emit` events):
    a misspelling never runs."""
    from kbert_tui.events.catalog import SPECS
    from kbert_tui.plugins.base import plugin_options
    from kbert_tui.plugins.manager import PluginLoadError, resolve_plugin
    from kbert_tui.state.rules import undeclared_event

    declared = set(SPECS)
    for spec in plugins:
        if not spec.enabled:
            continue
        try:
            cls = resolve_plugin(spec.plugin)
        except PluginLoadError as error:
            raise ConfigError(f"{origin}: plugins.{spec.instance_name}.plugin: {error}") from None
        plugin_options(cls, dict(spec.options), spec.instance_name, origin)
        declared.update(cls.emits)
    declared.update(rule.event for rule in rules if rule.event is not None)
    for number, rule in enumerate(rules, 1):
        if (problem := undeclared_event(rule, declared)) is not None:
            raise ConfigError(f"{origin}: rules[{number}].{problem.key}: {problem.message}")


def _read(cls: type, t: TableReader, **given: Any) -> Any:
    """Read every declared key of section `cls` from `t` (custom keys come in `given`), then reject unknown keys."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in given or meta.get("custom"):
            if f.name in given:
                values[f.name] = given[f.name]
            continue
        kind = hints[f.name]
        default: Any = f.default  # a key's default is a plain value (`_key` sets one on every field)
        if getattr(kind, "__origin__", None) is tuple:
            listed = t.str_list(f.name, default)
            values[f.name] = default if listed is None else listed
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            values[f.name] = _read(kind, t.table_of(f.name))
        elif meta["path"] is not None:
            values[f.name] = t.path_value(f.name, must_exist=meta["path"] != "out",
                                          kind="directory" if meta["path"] == "directory" else "file")
        elif kind is bool:
            values[f.name] = t.flag(f.name, default)
        elif kind is int:
            values[f.name] = t.integer(f.name, default, minimum=meta["minimum"], maximum=meta["maximum"])
        elif kind is float:
            values[f.name] = t.number(f.name, default, minimum=meta["minimum"], maximum=meta["maximum"],
                                     exclusive_min=meta["exclusive_min"])
        else:  # str, or str | None
            values[f.name] = t.text(f.name, default, choices=meta["choices"])
    t.done()
    return cls(**values)


def read_section(cls: type, table: Mapping[str, Any], path: str, origin: str = "<config>",
                 base_dir: Path | None = None) -> Any:
    """`table` read as the declared section `cls` (a dataclass of `_key` fields): ConfigError names
    `origin: path.key` on an unknown key, a wrong type or a value out of bounds. Plugins use it."""
    return _read(cls, TableReader(table, path, origin, base_dir or Path.cwd()))


def option(default: Any = None, doc: str = "", **bounds: Any) -> Any:
    """A plugin option, declared as config keys are (see `PluginPort.Options`)."""
    return _key(default, doc, **bounds)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Field types with `X | None` reduced to X (the declarations' defaults say what is optional)."""
    if cls not in _HINTS:
        import types
        import typing

        resolved = {}
        for name, hint in typing.get_type_hints(cls).items():
            if isinstance(hint, types.UnionType):
                hint = next(a for a in typing.get_args(hint) if a is not type(None))
            resolved[name] = hint
        _HINTS[cls] = resolved
    return _HINTS[cls]


def _parse_run(t: TableReader) -> RunSection:
    section = _read(RunSection, t)
    if any(c in "/\\" or not c.isprintable() for c in section.name):
        raise t.fail("name", "a name without / \\ or control characters (it starts the run's folder name)",
                     section.name)
    return section


_NEED_TRAIN = ("validation", "test", "id_column", "text_columns", "template", "label_column")


def _parse_data(t: TableReader) -> DataSection:
    text_columns = t.str_list("text_columns", DataSection.text_columns)
    template = t.text("template", None)
    if template is not None and (problem := template_problem(template)):
        raise t.fail("template", f"a row template such as \"{{Name}} is {{Age}}\": {problem}", template)
    if text_columns is not None and template is not None:
        raise t.fail("template", "either data.text_columns or data.template, not both")
    if "train" not in t.table:
        for name in _NEED_TRAIN:
            if name in t.table:
                raise t.fail(name, "only meaningful with data.train (without it the built-in demo data is used)")
    return _read(DataSection, t, text_columns=text_columns or DataSection.text_columns, template=template)


# Sizes a pretrained checkpoint's config.json decides.
_SET_BY_CHECKPOINT = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "activation", "vocab_size",
                      "max_position")


def _parse_model(t: TableReader, data: DataSection) -> ModelSection:
    raw = t.text("pretrained", None)
    pooling = t.text("pooling", "mean" if raw else "cls", choices=_choices(ModelSection, "pooling"))
    if raw is not None:
        from kbert_tui.errors import PretrainedError
        from kbert_tui.training.hf_checkpoint import inspect_checkpoint

        given = [name for name in _SET_BY_CHECKPOINT if name in t.table]
        if given:
            raise t.fail(given[0], "set by the pretrained checkpoint's config.json: leave it out with model.pretrained")
        try:
            info = inspect_checkpoint(raw, t.base_dir)
        except PretrainedError as error:
            raise t.fail("pretrained", str(error)) from None
        if info.max_position < data.max_length:
            raise ConfigError(f"{t.origin}: data.max_length: expected an integer <= {info.max_position} (the "
                              f"checkpoint's max_position_embeddings), got {data.max_length}")
        return _read(ModelSection, t, pretrained=info.folder, pooling=pooling)
    section = _read(ModelSection, t, pretrained=None, pooling=pooling)
    if section.hidden_size % section.num_heads:
        raise t.fail("num_heads", f"a divisor of model.hidden_size ({section.hidden_size})", section.num_heads)
    if section.max_position < data.max_length:
        raise t.fail("max_position", f"an integer >= data.max_length ({data.max_length})", section.max_position)
    return section


def _parse_training(t: TableReader) -> TrainingSection:
    e = t.table_of("early_stopping")
    metric = e.text("metric", EarlyStoppingSection.metric, choices=_choices(EarlyStoppingSection, "metric"))
    mode = e.text("mode", "min" if metric.endswith("loss") else "max", choices=_choices(EarlyStoppingSection, "mode"))
    section = _read(TrainingSection, t, early_stopping=_read(EarlyStoppingSection, e, metric=metric, mode=mode))
    if section.resume_from is not None and not (section.resume_from / "state.json").is_file():
        raise t.fail("resume_from", f"a checkpoint folder holding state.json: {section.resume_from}")
    return section


# A fine-tune's own defaults (docs/model.md): 1e-3 suits a model trained from scratch, not pretrained weights;
# one epoch: 10,000 texts fine-tune in 231 s on 2 quiet cores (two epochs: 326 s, past the 5 minutes) for
# 0.6 points less on tweets (issue 22).
PRETRAINED_DEFAULTS: dict[str, Any] = {"learning_rate": 1e-4, "epochs": 1}


def _check_pretrained(root: TableReader, model: ModelSection, training: TrainingSection) -> TrainingSection:
    """`training.train_layers` is for a pretrained model, and at most its layers; a fine-tune's own defaults."""
    given = root.table.get("training", {})
    where = f"{root.origin}: training.train_layers"
    if model.pretrained is None:
        if "train_layers" in given:
            raise ConfigError(f"{where}: only meaningful with model.pretrained (a model trained from scratch trains "
                              "every layer)")
        return training
    from kbert_tui.training.hf_checkpoint import inspect_checkpoint

    layers = inspect_checkpoint(str(model.pretrained), root.base_dir).num_layers
    if training.train_layers > layers:
        raise ConfigError(f"{where}: expected an integer <= {layers} (the layers of {model.pretrained.name}), "
                          f"got {training.train_layers}")
    return dataclasses.replace(training, **{k: v for k, v in PRETRAINED_DEFAULTS.items() if k not in given})


def _choices(cls: type, name: str) -> tuple[str, ...]:
    return next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == name)


def _parse_events(t: TableReader) -> EventsSection:
    value = t.text("path", None)
    section = _read(EventsSection, t, path=t.user_path("path", value) if value is not None else None)
    if section.broker is not None and (problem := broker_url_problem(section.broker)):
        raise t.fail("broker", problem)
    return section


def broker_url_problem(url: str) -> str | None:
    """Why `url` is not a broker URL kbert-tui can use (None when it is)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        return f'expected a URL starting with redis://, rediss:// or unix://, got {url[:60]!r}'
    if scheme != "unix" and not rest.split("/", 1)[0].rpartition("@")[2]:
        return f"no host in {url[:60]!r}"
    return None


def _parse_system(t: TableReader) -> SystemSection:
    return _read(SystemSection, t)


def _parse_plugins(t: TableReader) -> tuple[PluginSpec, ...]:
    specs = []
    for instance_name in list(t.table):
        p = t.table_of(instance_name)
        plugin = p.text("plugin", None)
        if plugin is None:
            raise p.fail("plugin", 'a plugin name: an entry-point name or "package.module:Class"')
        enabled = p.flag("enabled", True)
        # timeout_s / max_errors belong to the PluginManager (per-call limit, error budget); checked here.
        p.number("timeout_s", 5.0, minimum=0.0, exclusive_min=True)
        p.integer("max_errors", 5, minimum=1)
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


# --------------------------------------------------------------------------- the sections, in file order

SECTIONS: tuple[tuple[str, type], ...] = (
    ("run", RunSection), ("data", DataSection), ("model", ModelSection), ("training", TrainingSection),
    ("training.checkpoint", CheckpointSection), ("training.early_stopping", EarlyStoppingSection),
    ("events", EventsSection), ("system", SystemSection), ("system.thresholds", SystemThresholds),
)
