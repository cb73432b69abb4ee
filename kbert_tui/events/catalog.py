"""Every event kbert-tui emits, declared once: its name, its payload and what it means.

Producers and consumers import the name constants (a misspelt name is an import error, not a
silent no-op); the payload `TypedDict`s say which keys an event always carries and which it may;
`check_payload` holds an event to its declaration and `payload_table` writes the docs' tables.
Plugins' own events are theirs to name: only the names below are checked.
"""

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, Union

__all__ = ["EventSpec", "SPECS", "check_payload", "payload_table", "spec"]


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An event's declaration."""

    name: str
    payload: type
    doc: str

    @property
    def category(self) -> str:
        return self.name.partition(".")[0]

    @property
    def required(self) -> frozenset[str]:
        return self.payload.__required_keys__  # type: ignore[attr-defined, no-any-return]

    @property
    def optional(self) -> frozenset[str]:
        return self.payload.__optional_keys__  # type: ignore[attr-defined, no-any-return]


SPECS: dict[str, EventSpec] = {}


def _declare(name: str, payload: type, doc: str) -> str:
    if name in SPECS:
        raise ValueError(f"event {name!r} declared twice")
    SPECS[name] = EventSpec(name, payload, doc)
    return name


def spec(name: str) -> "EventSpec | None":
    return SPECS.get(name)


Number = float  # ints are accepted where a float is declared (JSON does not tell 1.0 from 1)


# ---------------------------------------------------------------------------------------- data.*
class DataValidationStarted(TypedDict):
    validation_type: str
    files: dict[str, Any]


class DataSchemaMismatch(TypedDict):
    file: str
    split: str
    expected: dict[str, Any]
    actual: dict[str, Any]
    missing: list[str]


class DataValidationCompleted(TypedDict):
    passed: bool
    issues: list[dict[str, Any]]
    num_issues: int
    rows: dict[str, int]
    labels: list[Any]
    num_labels: int
    id_column_detected: NotRequired[str]  # data.id_column unset: predictions.csv takes its ids from this test column


class DataCacheHit(TypedDict):
    cache_key: str
    size_mb: Number
    path: str


class DataCacheMiss(TypedDict):
    cache_key: str
    reason: str


class DataPreprocessingStarted(TypedDict):
    dataset_size: int


class DataPreprocessingCompleted(TypedDict):
    processed_samples: int
    duration: Number
    mean_length: Number
    truncated: int
    vocab_size: int


class DataBatchLoaded(TypedDict):
    batch: int
    step: int
    batch_size: int
    load_time: Number
    sequence_length: int


class DataBaselineComputed(TypedDict):
    model: str
    val_accuracy: Number
    val_f1: Number
    features: int
    seconds: Number


class PerformanceWarning(TypedDict):
    component: str
    metric: str
    value: Number
    threshold: Number
    device: NotRequired[Any]


DATA_VALIDATION_STARTED = _declare("data.validation_started", DataValidationStarted, "the data files are being checked")
DATA_SCHEMA_MISMATCH = _declare("data.schema_mismatch", DataSchemaMismatch, "a CSV lacks columns the config names")
DATA_VALIDATION_COMPLETED = _declare("data.validation_completed", DataValidationCompleted,
                                     "the data files were checked: rows, labels and any issues")
DATA_CACHE_HIT = _declare("data.cache_hit", DataCacheHit, "a tokenizer trained earlier on the same data was reused")
DATA_CACHE_MISS = _declare("data.cache_miss", DataCacheMiss, "the tokenizer is trained (no usable cache)")
DATA_PREPROCESSING_STARTED = _declare("data.preprocessing_started", DataPreprocessingStarted, "tokenizing begins")
DATA_PREPROCESSING_COMPLETED = _declare("data.preprocessing_completed", DataPreprocessingCompleted,
                                        "every text is tokenized")
DATA_BASELINE_COMPUTED = _declare("data.baseline_computed", DataBaselineComputed,
                                  "a bag-of-words logistic regression was fitted on the run's training split: its "
                                  "validation scores are the ones to beat (`[training] baseline`)")
DATA_BATCH_LOADED = _declare("data.batch_loaded", DataBatchLoaded, "a batch was built (every `batch_event_every`)")
DATA_PERFORMANCE_WARNING = _declare("data.performance_warning", PerformanceWarning,
                                    "a batch took longer to build than `load_time_warning_s`")


# ------------------------------------------------------------------------------------ training.*
class TrainingStarted(TypedDict):
    config: dict[str, Any]
    run_id: str
    run_name: str
    model_type: str
    device: str
    num_parameters: int
    total_epochs: int
    steps_per_epoch: int
    total_steps: int
    batch_size: int
    blas: dict[str, Any]
    labels: list[Any]
    output_dir: str
    resumed_from: str | None
    resumed_at_step: NotRequired[int]  # a resumed run: the step it goes on from (readers drop later ones logged before)
    best: NotRequired[dict[str, Any]]  # a resumed run: the best {metric, value, epoch} its checkpoint carried


class EpochStarted(TypedDict):
    epoch: int
    total_epochs: int
    steps: int


class BatchCompleted(TypedDict):
    batch: int
    step: int
    epoch: int
    loss: Number
    metrics: dict[str, Any]


class EvaluationCompleted(TypedDict):
    epoch: int
    step: int
    metrics: dict[str, Any]


class EpochCompleted(TypedDict):
    epoch: int
    metrics: dict[str, Any]
    duration: Number


class NewBestModel(TypedDict):
    epoch: int
    step: int
    metric: str
    value: Number
    previous: Number | None
    mode: str


class EarlyStopped(TypedDict):
    epoch: int
    reason: str
    metric: str
    value: Number | None
    best_value: Number | None
    best_epoch: int | None
    patience: int
    min_delta: Number


class PausedOrResumed(TypedDict):
    epoch: int
    step: int
    requested_by: NotRequired[str | None]


class TrainingStopped(TypedDict):
    epoch: int
    step: int
    reason: str
    requested_by: str | None
    checkpoint_path: str | None


class TrainingCompleted(TypedDict):
    final_metrics: dict[str, Any]
    total_duration: Number
    epochs_completed: int
    total_steps: int
    stopped_early: bool
    best: dict[str, Any] | None
    predictions_path: str | None
    output_dir: str
    restored_epoch: NotRequired[int]  # training.restore_best went back to this (best) epoch's weights


class TrainingFailed(TypedDict):
    error: str
    error_type: str
    bad_input: bool  # a UserInputError (config, data, checkpoint): the CLI exits 2
    traceback: str
    epoch: int
    step: int


TRAINING_STARTED = _declare("training.started", TrainingStarted,
                            "the model is built and the first epoch begins: everything about the run")
TRAINING_EPOCH_STARTED = _declare("training.epoch_started", EpochStarted, "an epoch begins")
TRAINING_BATCH_COMPLETED = _declare("training.batch_completed", BatchCompleted,
                                    "a training step finished: loss, learning rate, grad norm, speed")
TRAINING_EVALUATION_COMPLETED = _declare("training.evaluation_completed", EvaluationCompleted,
                                         "a validation pass finished (every `eval_every` steps)")
TRAINING_EPOCH_COMPLETED = _declare("training.epoch_completed", EpochCompleted,
                                    "an epoch finished: train and validation metrics")
TRAINING_NEW_BEST_MODEL = _declare("training.new_best_model", NewBestModel, "the monitored metric improved")
TRAINING_EARLY_STOPPED = _declare("training.early_stopped", EarlyStopped,
                                  "the metric stopped improving for `patience` epochs")
TRAINING_PAUSED = _declare("training.paused", PausedOrResumed, "the run paused before its next step")
TRAINING_RESUMED = _declare("training.resumed", PausedOrResumed, "the run goes on after a pause")
TRAINING_STOPPED = _declare("training.stopped", TrainingStopped, "the run was stopped on request, with a checkpoint")
TRAINING_COMPLETED = _declare("training.completed", TrainingCompleted, "the run ended normally")
TRAINING_FAILED = _declare("training.failed", TrainingFailed, "the run ended on an error (NaN loss, an exception)")


# --------------------------------------------------------------------------------------- model.*
class ForwardPass(TypedDict):
    step: int
    input_shape: list[int]
    output_shape: list[int]


class BackwardPass(TypedDict):
    step: int
    loss: Number
    gradients: dict[str, Any]


class CheckpointSaved(TypedDict):
    path: str
    epoch: int
    step: int
    metrics: dict[str, Any]
    kind: Literal["epoch", "best", "last", "stopped", "requested"]
    size_mb: Number
    requested_by: NotRequired[str | None]


class CheckpointLoaded(TypedDict):
    path: str
    restored_epoch: int
    restored_step: int


class PretrainedLoaded(TypedDict):
    path: str
    model_type: str
    num_layers: int
    hidden_size: int
    train_layers: int
    pooling: str
    frozen: list[str]  # ["embeddings", "layers 1-4"]
    trainable: list[str]  # ["layers 5-6", "head"]
    trainable_parameters: int
    frozen_parameters: int
    seconds: Number


class FeaturesProgress(TypedDict):
    done: int  # texts whose frozen-layer outputs are computed
    total: int
    layers: int  # frozen layers run (0: the embeddings only)
    seconds: Number
    eta_s: Number | None
    size_mb: NotRequired[Number]  # the last one (done == total): the cache's size in memory


MODEL_PRETRAINED_LOADED = _declare("model.pretrained_loaded", PretrainedLoaded,
                                   "a pretrained checkpoint was loaded (`model.pretrained`): what is frozen and "
                                   "what trains, in parameters")
MODEL_FEATURES_PROGRESS = _declare("model.features_progress", FeaturesProgress,
                                   "the frozen layers' outputs for every text, computed once before the first "
                                   "step (the cached-features pass): texts done and the time left")
MODEL_FORWARD_PASS = _declare("model.forward_pass", ForwardPass,
                              "shapes through the model (every `model_events_every`)")
MODEL_BACKWARD_PASS = _declare("model.backward_pass", BackwardPass,
                               "gradient norms per layer (every `model_events_every`)")
MODEL_CHECKPOINT_SAVED = _declare("model.checkpoint_saved", CheckpointSaved, "a checkpoint folder was written")
MODEL_CHECKPOINT_LOADED = _declare("model.checkpoint_loaded", CheckpointLoaded, "a run resumed from a checkpoint")


# -------------------------------------------------------------------------------------- system.*
class MemoryUsage(TypedDict):
    used_mb: Number
    available_mb: Number
    total_mb: Number
    percentage: Number
    process_rss_mb: Number


class CpuUsage(TypedDict):
    percent: Number
    per_cpu: list[Number]
    process_percent: Number
    count: int


class DiskUsage(TypedDict):
    used_gb: Number
    available_gb: Number
    total_gb: Number
    percentage: Number
    path: str


class MlxMemory(TypedDict):
    active_mb: Number
    peak_mb: Number
    cache_mb: Number


class GpuUsage(TypedDict):
    device: int
    name: str
    utilization: Number | None
    memory_utilization: Number | None
    memory_used: Number
    memory_total: Number
    memory_percent: Number
    temperature: Number | None
    power_w: Number | None


class GpuUnavailable(TypedDict):
    reason: str


class SamplerError(TypedDict):
    probe: str
    error: str


class BottleneckDetected(TypedDict):
    component: str
    description: str
    suggestions: list[str]
    blas: NotRequired[Any]
    share: NotRequired[Number]
    threshold: NotRequired[Number]
    samples_per_sec: NotRequired[Number]
    best_samples_per_sec: NotRequired[Number]
    memory_kind: NotRequired[str]
    rise_mb: NotRequired[Number]
    mb_per_min: NotRequired[Number]
    rank: NotRequired[int]
    lag_ms: NotRequired[Number]
    step_time_ms: NotRequired[Number]


class ErrorThresholdExceeded(TypedDict):
    error_count: int
    threshold: int
    window_s: Number
    component: str
    last_error: str


SYSTEM_MEMORY_USAGE = _declare("system.memory_usage", MemoryUsage, "memory of the machine and of this process")
SYSTEM_CPU_USAGE = _declare("system.cpu_usage", CpuUsage, "CPU use, per core and of this process")
SYSTEM_DISK_USAGE = _declare("system.disk_usage", DiskUsage, "the disk holding the output directory")
SYSTEM_MLX_MEMORY = _declare("system.mlx_memory", MlxMemory, "MLX's active, peak and cache memory")
SYSTEM_GPU_USAGE = _declare("system.gpu_usage", GpuUsage, "one NVIDIA GPU, through NVML")
SYSTEM_GPU_UNAVAILABLE = _declare("system.gpu_unavailable", GpuUnavailable, "no GPU can be read, and why (once)")
SYSTEM_SAMPLER_ERROR = _declare("system.sampler_error", SamplerError, "a probe failed (once per probe)")
SYSTEM_PERFORMANCE_WARNING = _declare("system.performance_warning", PerformanceWarning,
                                      "a threshold was crossed (once per crossing, with hysteresis)")
SYSTEM_PERFORMANCE_RECOVERED = _declare("system.performance_recovered", PerformanceWarning,
                                        "the value went back under its threshold")
SYSTEM_BOTTLENECK_DETECTED = _declare("system.bottleneck_detected", BottleneckDetected,
                                      "what slows training down, with suggestions")
SYSTEM_ERROR_THRESHOLD_EXCEEDED = _declare("system.error_threshold_exceeded", ErrorThresholdExceeded,
                                           "too many errors in a window (the error_threshold plugin)")


# -------------------------------------------------------------------------------------- plugin.*
class PluginLoaded(TypedDict):
    plugin_name: str
    version: str
    spec: str
    capabilities: list[str]


class PluginInitialized(TypedDict):
    plugin_name: str
    config: dict[str, Any]


class PluginActivated(TypedDict):
    plugin_name: str
    version: str
    capabilities: list[str]


class PluginDeactivated(TypedDict):
    plugin_name: str
    reason: str
    events_handled: NotRequired[int]
    cleanup_error: NotRequired[str]


class PluginStateChanged(TypedDict):
    plugin_name: str
    old_state: str
    new_state: str


class PluginStats(TypedDict):
    plugin_name: str
    events_handled: int
    errors: int
    state: str


class PluginError(TypedDict):
    plugin_name: str
    error: str
    stage: NotRequired[str]
    fatal: NotRequired[bool]
    error_count: NotRequired[int]
    event_name: NotRequired[str]


class PluginMessage(TypedDict):
    to: str
    message: Any
    # "from" is a keyword: declared in _EXTRA_KEYS below


PLUGIN_LOADED = _declare("plugin.loaded", PluginLoaded, "a plugin's class was imported")
PLUGIN_INITIALIZED = _declare("plugin.initialized", PluginInitialized, "its initialize() returned")
PLUGIN_ACTIVATED = _declare("plugin.activated", PluginActivated, "it receives events")
PLUGIN_DEACTIVATED = _declare("plugin.deactivated", PluginDeactivated, "it was shut down or set aside")
PLUGIN_STATE_CHANGED = _declare("plugin.state_changed", PluginStateChanged, "its lifecycle state changed")
PLUGIN_STATS = _declare("plugin.stats", PluginStats, "events handled and errors, when they moved")
PLUGIN_ERROR = _declare("plugin.error", PluginError, "a plugin failed (fatal: set aside)")
PLUGIN_MESSAGE = _declare("plugin.message", PluginMessage, "a message from one plugin to another")


# ------------------------------------------------------------------------------------- control.*
class ControlRequest(TypedDict):
    requested_by: str
    reason: NotRequired[str]
    via: NotRequired[str]
    request_id: NotRequired[str | None]


CONTROL_PAUSE_REQUESTED = _declare("control.pause_requested", ControlRequest, "someone asked the run to pause")
CONTROL_RESUME_REQUESTED = _declare("control.resume_requested", ControlRequest, "someone asked the run to go on")
CONTROL_STOP_REQUESTED = _declare("control.stop_requested", ControlRequest, "someone asked the run to stop")
CONTROL_CHECKPOINT_REQUESTED = _declare("control.checkpoint_requested", ControlRequest,
                                        "someone asked for a checkpoint now")


# ---------------------------------------------------------------------------------------- rule.*
class RuleFired(TypedDict):
    rule: str
    action: Literal["pause", "stop", "checkpoint", "notify", "emit"]
    caused_by: str
    trigger: str
    reason: str
    when: str
    count: int


RULE_FIRED = _declare("rule.fired", RuleFired,
                      "a [[rules]] rule matched `caused_by` (the trigger's id); one per action, before it is done")


class RequestRejected(TypedDict):
    name: str
    reason: str
    via: str
    request_id: NotRequired[str | None]
    requested_by: NotRequired[str | None]
    suppressed: NotRequired[int]  # rejections left out of the log (over the minute's budget) since the last one


CONTROL_REQUEST_REJECTED = _declare("control.request_rejected", RequestRejected,
                                    "a request from an attached monitor that the run refused, and why")


# ----------------------------------------------------------------------------------------- bus.*
class SubscriberOverflow(TypedDict):
    subscription_id: str
    pattern: str
    buffer_size: int
    policy: str


class SubscriberRecovered(TypedDict):
    subscription_id: str
    pattern: str
    dropped: int


class HandlerError(TypedDict):
    subscription_id: str
    pattern: str
    handler: str
    event_name: str
    event_id: str
    error: str
    repeats: int
    errors_so_far: int
    traceback: NotRequired[str]


class HandlerAbandoned(TypedDict):
    subscription_id: str
    pattern: str
    handler: str
    event_name: str | None
    undelivered: int


class LoopBlocked(TypedDict):
    seconds: Number
    handler: str


class FilterError(TypedDict):
    filter: str
    event_name: str
    error: str
    policy: str


class EventDegraded(TypedDict):
    event_name: str
    event_id: str
    reason: str
    repeats: int


class PersistenceFailed(TypedDict):
    path: str
    errno: int | None
    error: str
    message: str
    pending: int


class PersistenceRecovered(TypedDict):
    path: str
    lost: int
    pending: int


BUS_SUBSCRIBER_OVERFLOW = _declare("bus.subscriber_overflow", SubscriberOverflow,
                                   "a subscription starts dropping its oldest undelivered events")
BUS_SUBSCRIBER_RECOVERED = _declare("bus.subscriber_recovered", SubscriberRecovered,
                                    "its backlog drained; how many it lost")
BUS_HANDLER_ERROR = _declare("bus.handler_error", HandlerError,
                             "a handler raised (3 with tracebacks, then summaries with repeats)")
BUS_HANDLER_ABANDONED = _declare("bus.handler_abandoned", HandlerAbandoned, "shutdown gave up on a busy handler")
BUS_LOOP_BLOCKED = _declare("bus.loop_blocked", LoopBlocked,
                            "the event loop did not turn for a while, and where it was")
BUS_FILTER_ERROR = _declare("bus.filter_error", FilterError, "a filter raised (once per filter; it fails open)")
BUS_EVENT_DEGRADED = _declare("bus.event_degraded", EventDegraded, "an event's data was written in a degraded form")
BUS_PERSISTENCE_FAILED = _declare("bus.persistence_failed", PersistenceFailed, "a write to the log failed; retrying")
BUS_PERSISTENCE_RECOVERED = _declare("bus.persistence_recovered", PersistenceRecovered,
                                     "writes succeed again; how many were given up meanwhile")

class BrokerDisconnected(TypedDict):
    broker: str
    error: str
    published: int
    behind: int


class BrokerReconnected(TypedDict):
    broker: str
    behind: int
    down_s: Number
    republish: int


BUS_BROKER_DISCONNECTED = _declare("bus.broker_disconnected", BrokerDisconnected,
                                   "publishing to Redis stopped; the run goes on and events wait in the log")
BUS_BROKER_RECONNECTED = _declare("bus.broker_reconnected", BrokerReconnected,
                                  "Redis is back; how far behind the stream was, caught up from the log")


# ------------------------------------------------------------------------------------- process.*
class ProcessStarted(TypedDict):
    command: list[str]
    pid: int
    cwd: str


class ProcessOutput(TypedDict):
    stream: Literal["stdout", "stderr"]
    line: str


class ProcessExited(TypedDict):
    returncode: int  # the child's exit status; a signal N shows as -N, like subprocess
    how: str  # "exited 0", "exited 1", "killed by SIGTERM", ...
    seconds: Number
    pid: int


PROCESS_STARTED = _declare("process.started", ProcessStarted, "`kbert-tui watch` started the command")
PROCESS_OUTPUT = _declare("process.output", ProcessOutput, "a line the watched command wrote on stdout or stderr")
PROCESS_EXITED = _declare("process.exited", ProcessExited, "the watched command ended, and how")

# Keys a TypedDict can't spell (Python keywords), per event.
_EXTRA_KEYS: dict[str, dict[str, object]] = {PLUGIN_MESSAGE: {"from": str}}


# -------------------------------------------------------------------------------------- checking
def check_payload(name: str, data: Any) -> list[str]:
    """What is wrong with `data` as the payload of `name` (empty when it conforms or isn't declared)."""
    declared = SPECS.get(name)
    if declared is None:
        return []
    if not isinstance(data, dict):
        return [f"{name}: data is {type(data).__name__}, not an object"]
    hints = typing.get_type_hints(declared.payload)
    hints.update(_EXTRA_KEYS.get(name, {}))
    problems = [f"{name}: missing {key!r}" for key in sorted(declared.required) if key not in data]
    problems += [f"{name}: missing {key!r}" for key in sorted(_EXTRA_KEYS.get(name, {})) if key not in data]
    for key, value in data.items():
        if key not in hints:
            problems.append(f"{name}: undeclared key {key!r}")
        elif not _conforms(value, hints[key]):
            problems.append(f"{name}: {key!r} is {type(value).__name__} {value!r:.60}, declared {_spell(hints[key])}")
    return problems


def _conforms(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return True
    if origin is NotRequired:
        return _conforms(value, typing.get_args(hint)[0])
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None) or hint is None:
        return value is None
    if hint is float:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return is_number or value in ("NaN", "Infinity", "-Infinity")
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    base = origin or hint
    if base in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not args or all(_conforms(v, args[0]) for v in value))
    if isinstance(base, type):
        return isinstance(value, base)
    return True


def _spell(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("NoneType", "None")
    return getattr(hint, "__name__", text) if typing.get_origin(hint) is None else text


def payload_table(category: str | None = None) -> str:
    """A markdown table of the declared events (optionally one category): name, payload, meaning."""
    rows = ["| event | data | meaning |", "|---|---|---|"]
    for declared in SPECS.values():
        if category is not None and declared.category != category:
            continue
        keys = [f"`{k}`" for k in declared.payload.__annotations__ if k in declared.required]
        keys += [f"`{k}`" for k in _EXTRA_KEYS.get(declared.name, {})]
        keys += [f"`{k}`?" for k in declared.payload.__annotations__ if k in declared.optional]
        rows.append(f"| `{declared.name}` | {', '.join(keys) or '—'} | {declared.doc} |")
    return "\n".join(rows)


def docs_page() -> str:
    """docs/events.md: every declared event, by category (`python -m kbert_tui.events.catalog > docs/events.md`)."""
    titles = {"data": "Data", "training": "Training", "model": "Model", "system": "System", "plugin": "Plugins",
              "control": "Control requests", "rule": "Rules", "process": "A watched command",
              "bus": "The bus itself"}
    parts = [
        "# Events",
        "",
        "Every event kbert-tui emits, generated from `kbert_tui/events/catalog.py` (the one place each is",
        "declared; a test fails when this page drifts). `key?` may be absent. Every event of a run carries the",
        "run id as `correlation_id`; the JSONL line format is in the README.",
    ]
    for category, title in titles.items():
        parts += ["", f"## {title} (`{category}.*`)", "", payload_table(category)]
    from ._codec import PAYLOAD_VALUES_DOC  # how values are captured and written: the codec's rules

    parts += ["", PAYLOAD_VALUES_DOC]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(docs_page(), end="")
