"""Watch any MLX training script: `run = kbert_tui.init(...)`, `run.log({...}, step=...)`, `run.finish()`.

A script's run writes the same run directory as `kbert-tui run` (events.jsonl with the catalogue's
`training.*` events, session.json, the control channel, metrics.csv), so replay, attach, compare,
rules and the broker work on it unchanged. Requests from a monitor reach the script: `log` waits
while the run is paused, `should_stop` turns true on a stop, and a checkpoint request calls the
function given to `on_checkpoint`.

Two ways to run: on its own, the run's bus, log, plugins and control watcher live on a background
thread of the script's process (a `RunSession` whose worker is the script); under
`kbert-tui watch -- CMD` the watching process owns the run directory and the script only appends its
events to an outbox the watcher relays, and reads the watcher's requests from an inbox.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from kbert_tui.client_sinks import INBOX_NAME, OUTBOX_NAME, HostedSink, OutboxSink
from kbert_tui.events import catalog as ev

__all__ = ["INBOX_NAME", "OUTBOX_NAME", "WATCH_DIR_ENV", "WATCH_RUN_ID_ENV", "LogError", "Run", "RunStopped", "init"]

WATCH_DIR_ENV = "KBERT_TUI_RUN_DIR"  # set by `kbert-tui watch`: the run directory the script's init() uses
WATCH_RUN_ID_ENV = "KBERT_TUI_RUN_ID"  # ... and the run id it names its events with

# Keys a metric can't have: they are the arguments and fields of the events a log becomes.
RESERVED_KEYS = frozenset({"step", "epoch", "batch"})
_LOSS_KEY = "loss"
_NUMBERS = (float, int)


class LogError(ValueError):
    """A `log()` the client can't take: a non-numeric value, a reserved key, or a log after `finish()`."""


class RunStopped(Exception):
    """Raised by integrations (the mlx-lm callback) to end a training loop they do not own, on a stop request."""


def _number(key: Any, value: Any) -> float | int:
    """`value` as a plain int or float (numpy scalars, 0-d and one-element MLX / numpy arrays included)."""
    kind = type(value)
    if kind is float or kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool or value is None or isinstance(value, (str, bytes)):
        raise LogError(f"run.log: {key!r} is {kind.__name__} {value!r:.60}, not a number")
    item = getattr(value, "item", None)
    size = getattr(value, "size", 1)
    if callable(item) and size == 1:
        try:
            value = item()  # an MLX array is evaluated here, as for any other logger
        except Exception as error:  # noqa: BLE001 - whatever the array type raises, the key is what the user needs
            raise LogError(f"run.log: {key!r}: cannot read its value ({type(error).__name__}: {error})") from None
        if type(value) in _NUMBERS:
            return value  # type: ignore[no-any-return]
    raise LogError(f"run.log: {key!r} is {kind.__name__} {_short(value)}, not a number "
                   "(a Python or numpy number, or a one-element array)")


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"of shape {tuple(shape)}" if shape is not None else f"{value!r:.60}"


def _metrics(values: Mapping[str, Any]) -> dict[str, float | int]:
    if not isinstance(values, Mapping):
        raise LogError(f"run.log takes a dict of metrics, got {type(values).__name__}")
    out: dict[str, float | int] = {}
    for key, value in values.items():
        if type(key) is not str or not key:
            raise LogError(f"run.log: metric names are non-empty strings, got {key!r}")
        if key in RESERVED_KEYS:
            raise LogError(f"run.log: {key!r} is reserved (pass it as run.log(..., {key}=N))")
        out[key] = _number(key, value)
    return out


def _index(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise LogError(f"run.log: {name}={value!r:.60} is not a whole number")
        value = value.__index__()
    if value < 0:
        raise LogError(f"run.log: {name}={value} is negative")
    return value  # type: ignore[no-any-return]


def _jsonable(config: Any) -> dict[str, Any]:
    """The user's config as plain JSON values (argparse namespaces, dataclasses and numbers included)."""
    if config is None:
        return {}
    if hasattr(config, "__dataclass_fields__"):
        import dataclasses

        config = dataclasses.asdict(config)
    elif not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"kbert_tui.init: config must be a dict (or a dataclass / namespace), got "
                        f"{type(config).__name__}")

    def plain(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [plain(v) for v in value]
        item = getattr(value, "item", None)
        if callable(item) and getattr(value, "size", 2) == 1:
            return item()
        return str(value)

    return {str(k): plain(v) for k, v in config.items()}


# ------------------------------------------------------------------------------------------ the run


class Run:
    """One training run of a script. Made by `kbert_tui.init()`; see the module docstring."""

    def __init__(self, sink: Any, *, config: dict[str, Any], name: str, started: dict[str, Any]) -> None:
        self._sink = sink
        self.control = sink.control
        self.run_id: str = sink.run_id
        self.dir: Path = Path(sink.output_dir)
        self.events_path: Path = Path(sink.events_path)
        self.name = name
        self.config = config
        self.step = 0  # the last step logged
        self.epoch = 1  # the epoch the next steps belong to
        self._epoch_step0 = 0  # the step the current epoch follows: batches count from it
        self._epoch_open = False
        self._last_metrics: dict[str, Any] = {}
        self._checkpoint_fn: Callable[[int], Any] | None = None
        self._checkpoint_path: str | None = None
        self._started = time.perf_counter()
        self._epoch_started = self._started
        self._finished = False
        self._lock = threading.Lock()  # log() from two threads keeps steps and batches consistent
        self._dropped = 0  # events the run could not hand over (its log closed under it): counted, never raised
        self._totals = (started["total_epochs"], started["steps_per_epoch"])
        self._emit(ev.TRAINING_STARTED, started)

    # -- the three calls --------------------------------------------------------------------------
    def log(self, metrics: Mapping[str, Any], *, step: int | None = None, epoch: int | None = None) -> None:
        """Record `metrics` (name → number) at `step`, or, with `epoch`, as that epoch's results.

        A step's metrics with a `loss` become `training.batch_completed`; without one (validation at a
        step), `training.evaluation_completed`; with `epoch`, `training.epoch_completed`. Waits while the
        run is paused; serves a pending checkpoint request first.
        """
        if self._finished:
            keys = ", ".join(map(repr, metrics)) if isinstance(metrics, Mapping) else repr(metrics)
            raise LogError(f"run.log({keys}) after run.finish(): run {self.run_id} is over")
        values = _metrics(metrics)
        step = _index("step", step)
        epoch = _index("epoch", epoch)
        control = self.control
        if control._checkpoints:  # a list: lock-free peek, served under its lock
            self._serve_checkpoint()
        if control.paused and not control.stop_requested:
            self._wait_while_paused()
        with self._lock:
            if epoch is not None:
                self._log_epoch(values, step, epoch)
                return
            self.step = self.step + 1 if step is None else step
            if not self._epoch_open:
                self._open_epoch()
            self._last_metrics.update(values)
            if _LOSS_KEY in values:
                loss = values.pop(_LOSS_KEY)
                # A step's place in its epoch (steps restarting each epoch count as they come)
                batch = self.step - self._epoch_step0 if self.step > self._epoch_step0 else max(self.step, 1)
                self._emit(ev.TRAINING_BATCH_COMPLETED, {"batch": batch, "step": self.step, "epoch": self.epoch,
                                                         "loss": loss, "metrics": values})
            else:
                self._emit(ev.TRAINING_EVALUATION_COMPLETED, {"epoch": self.epoch, "step": self.step,
                                                              "metrics": values})

    @property
    def should_stop(self) -> bool:
        """True once a monitor, `attach`, a rule or a plugin asked the run to stop: end the loop, then `finish()`."""
        return self.control.stop_requested

    def on_checkpoint(self, fn: Callable[[int], Any]) -> Callable[[int], Any]:
        """Call `fn(step)` when a checkpoint is asked for (at the next `log`, or while paused); it may return
        the path it saved to. Usable as a decorator."""
        self._checkpoint_fn = fn
        return fn

    def finish(self, error: BaseException | str | None = None) -> None:
        """End the run: `training.completed`, `training.stopped` after a stop request, or `training.failed`
        with `error`. The log is flushed and closed when it returns. Idempotent."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        _forget(self)
        outcome = "completed"
        c = self.control
        if error is not None:
            outcome = "failed"
            failure = self._failure(error)
            self._emit(ev.TRAINING_FAILED, failure)
        elif c.stop_requested:
            outcome = "stopped"
            path = self._save_checkpoint(self.step) if self._checkpoint_fn is not None else None
            self._emit(ev.TRAINING_STOPPED, {"epoch": self.epoch, "step": self.step,
                                             "reason": c.stop_reason or "user", "requested_by": c.requested_by,
                                             "checkpoint_path": path})
        else:
            self._emit(ev.TRAINING_COMPLETED, {
                "final_metrics": dict(self._last_metrics), "total_duration": time.perf_counter() - self._started,
                "epochs_completed": self.epoch - 1, "total_steps": self.step, "stopped_early": False, "best": None,
                "predictions_path": None, "output_dir": str(self.dir)})
        try:
            self._sink.close(outcome)
        except Exception:  # noqa: BLE001 - a full disk or a vanished directory must not fail the script's end
            pass

    @property
    def finished(self) -> bool:
        return self._finished

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(error, KeyboardInterrupt):
            self.control.request_stop("KeyboardInterrupt", "user")
            self.finish()
        elif isinstance(error, RunStopped):
            self.finish()
        else:
            self.finish(error)

    # -- pieces ------------------------------------------------------------------------------------
    def _emit(self, name: str, data: dict[str, Any]) -> None:
        try:
            self._sink.emit(name, data)
        except Exception:  # noqa: BLE001 - the bus closed, the disk is full: the training loop goes on
            self._dropped += 1

    @property
    def dropped(self) -> int:
        """Events that never reached the run's log (its loop or file went away); never raised."""
        return self._dropped + getattr(self._sink, "dropped", 0)

    def _open_epoch(self) -> None:
        self._epoch_open = True
        self._emit(ev.TRAINING_EPOCH_STARTED, {"epoch": self.epoch, "total_epochs": self._totals[0],
                                               "steps": self._totals[1]})

    def _log_epoch(self, values: dict[str, Any], step: int | None, epoch: int) -> None:
        if step is not None:
            self.step = step
        self.epoch = epoch
        self._last_metrics.update(values)
        now = time.perf_counter()
        self._emit(ev.TRAINING_EPOCH_COMPLETED,
                   {"epoch": epoch, "metrics": values, "duration": now - self._epoch_started})
        self._epoch_started = now
        self.epoch, self._epoch_open, self._epoch_step0 = epoch + 1, False, self.step

    def _wait_while_paused(self) -> None:
        c = self.control
        self._emit(ev.TRAINING_PAUSED, {"epoch": self.epoch, "step": self.step, "requested_by": c.pause_requested_by})
        c.wait_until_resumed(meanwhile=self._serve_checkpoint)
        if not c.stop_requested:
            self._emit(ev.TRAINING_RESUMED, {"epoch": self.epoch, "step": self.step,
                                             "requested_by": c.resume_requested_by})

    def _serve_checkpoint(self) -> None:
        request = self.control.take_checkpoint_request()
        if request is None:
            return
        requested_by, request_id = request
        if self._checkpoint_fn is None:
            self._emit(ev.CONTROL_REQUEST_REJECTED, {
                "name": ev.CONTROL_CHECKPOINT_REQUESTED, "via": "client", "request_id": request_id,
                "requested_by": requested_by,
                "reason": "the script registered no checkpoint function (run.on_checkpoint(fn))"})
            return
        self._save_checkpoint(self.step, requested_by)

    def _save_checkpoint(self, step: int, requested_by: str | None = None) -> str | None:
        assert self._checkpoint_fn is not None
        try:
            saved = self._checkpoint_fn(step)
        except Exception as error:  # noqa: BLE001 - the script's own function: say so, keep training
            self._emit(ev.CONTROL_REQUEST_REJECTED, {
                "name": ev.CONTROL_CHECKPOINT_REQUESTED, "via": "client", "requested_by": requested_by,
                "reason": f"the checkpoint function raised {type(error).__name__}: {error}"})
            return None
        path = "" if saved is None else str(saved)
        self._emit(ev.MODEL_CHECKPOINT_SAVED, {
            "path": path, "epoch": self.epoch, "step": step, "metrics": dict(self._last_metrics),
            "kind": "requested" if requested_by is not None else "stopped", "size_mb": _size_mb(path),
            "requested_by": requested_by})
        return path or None

    def _failure(self, error: BaseException | str) -> dict[str, Any]:
        if isinstance(error, BaseException):
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            message, kind = str(error) or type(error).__name__, type(error).__name__
        else:
            text, message, kind = "", str(error), "Error"
        return {"error": message, "error_type": kind, "bad_input": False, "traceback": text,
                "epoch": self.epoch, "step": self.step}


def _size_mb(path: str) -> float:
    if not path:
        return 0.0
    target = Path(path)
    try:
        if target.is_dir():
            return sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 1e6
        return target.stat().st_size / 1e6
    except OSError:
        return 0.0


# ------------------------------------------------------------------------------------------ init


def init(project: str | None = None, *, name: str | None = None, config: Any = None, dir: str | os.PathLike[str] |
         None = None, model: Any = None, total_steps: int | None = None, total_epochs: int | None = None,
         steps_per_epoch: int | None = None, batch_size: int | None = None, labels: Iterable[Any] = (),
         settings: Any = None) -> Run:
    """Start a run: its directory is `dir/<run id>` (default `runs/`), or the one `kbert-tui watch` gave.

    `project` (or `name`) names the run; `config` is recorded in `training.started` (compare shows its
    differences); `model`, an MLX module, gives the parameter count; the totals size the progress bars.
    `settings`: a kbert-tui TOML file or `RunConfig` for its [events], [system], [plugins] and [[rules]].
    """
    run_name = name or project or Path(sys.argv[0] or "script").stem or "script"
    recorded = _jsonable(config)
    watch_dir = os.environ.get(WATCH_DIR_ENV)
    watch_id = os.environ.get(WATCH_RUN_ID_ENV)
    sink: Any
    if watch_dir and watch_id and (Path(watch_dir) / OUTBOX_NAME).exists():
        sink = OutboxSink(Path(watch_dir), watch_id)
    else:
        run_config = _run_config(settings, run_name)
        root = Path(dir) if dir is not None else Path(watch_dir).parent if watch_dir else Path("runs")
        from kbert_tui.session import make_run_id

        run_id = make_run_id(run_name)
        out = Path(watch_dir) if watch_dir and dir is None else root.expanduser() / run_id
        sink = HostedSink(run_config, out, run_id)
    sink.open()
    started = {
        "config": recorded, "run_id": sink.run_id, "run_name": run_name,
        "model_type": type(model).__name__ if model is not None else "script",
        "device": _device(), "num_parameters": _parameters(model),
        "total_epochs": int(total_epochs or 0), "steps_per_epoch": int(steps_per_epoch or 0),
        "total_steps": int(total_steps or (total_epochs or 0) * (steps_per_epoch or 0)),
        "batch_size": int(batch_size or 0), "blas": {"name": "the script's"}, "labels": list(labels),
        "output_dir": str(sink.output_dir), "resumed_from": None,
    }
    run = Run(sink, config=recorded, name=run_name, started=started)
    _remember(run)
    return run


def _run_config(settings: Any, name: str) -> Any:
    from dataclasses import replace

    from kbert_tui.config import RunConfig, default_config, load_config

    if settings is None:
        base = default_config()
    elif isinstance(settings, RunConfig):
        base = settings
    else:
        base = load_config(settings)
    return base.replace(run=replace(base.run, name=name, output_dir=None))


def _device() -> str:
    mx = sys.modules.get("mlx.core")
    if mx is None:
        return "unknown"
    try:
        return str(mx.default_device().type.name)
    except Exception:  # noqa: BLE001 - a partly imported MLX: the device is a label only
        return "unknown"


def _parameters(model: Any) -> int:
    if model is None or not hasattr(model, "parameters"):
        return 0
    try:
        from mlx.utils import tree_flatten

        flat: Any = tree_flatten(model.parameters())
        return int(sum(v.size for _, v in flat))
    except Exception:  # noqa: BLE001 - not an MLX module after all: the count is a label only
        return 0


# ------------------------------------------------------------------------------------------ at exit

_open_runs: list[Run] = []
_uncaught: list[BaseException] = []
_hooked = False


def _remember(run: Run) -> None:
    global _hooked
    _open_runs.append(run)
    if not _hooked:
        _hooked = True
        previous = sys.excepthook

        def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
            _uncaught.append(error)
            previous(kind, error, tb)

        sys.excepthook = excepthook
        # Before concurrent.futures refuses new work at shutdown (the run's close uses the loop's executor);
        # threading calls these in reverse order of registration, so this one runs before its.
        register = getattr(threading, "_register_atexit", atexit.register)
        register(_finish_open_runs)


def _forget(run: Run) -> None:
    try:
        _open_runs.remove(run)
    except ValueError:
        pass


def _finish_open_runs() -> None:
    """A script that ends without `finish()` still ends its run: failed on an uncaught exception."""
    for run in _open_runs:
        error = _uncaught[-1] if _uncaught else None
        if isinstance(error, KeyboardInterrupt):
            run.control.request_stop("KeyboardInterrupt", "user")
            error = None
        run.finish(error)
