"""An mlx-lm `TrainingCallback` that reports a LoRA (or full) fine-tune through the client API.

    from kbert_tui.integrations.mlx_lm import Callback
    with Callback(project="lora", config=vars(args), model=model) as callback:
        mlx_lm.tuner.trainer.train(model, optimizer, train_set, val_set, args=training_args,
                                   training_callback=callback)

Each training report becomes a step (`loss`, `learning_rate`, `iterations_per_second`,
`tokens_per_second`, `trained_tokens`, `peak_memory_gb`) and each validation an evaluation
(`val_loss`, `val_time`), at mlx-lm's iteration. A pause from the monitor holds training at the
next report; a stop raises `RunStopped` out of `train()` at the next report (the `with` block ends the
run as stopped and swallows it); a checkpoint request saves the trainable (adapter) weights, when
`model` is given, under `<run dir>/checkpoints/step-N/adapters.safetensors` (so does a stop).
mlx-lm calls its callback on rank 0 only. Pass the callback to `tuner.trainer.train` directly:
`mlx_lm.lora.run` replaces a callback given to it.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

try:
    from mlx_lm.tuner.callbacks import TrainingCallback
except ImportError as error:  # pragma: no cover - the extra is missing
    raise ImportError("kbert_tui.integrations.mlx_lm needs mlx-lm: pip install 'kbert-tui[mlx-lm]'") from error

from kbert_tui.client import Run, RunStopped, init

__all__ = ["Callback"]

# mlx-lm's report keys → the run's metric names (peak memory comes in GB)
_TRAIN_KEYS = {"train_loss": "loss", "learning_rate": "learning_rate", "iterations_per_second": "iterations_per_second",
               "tokens_per_second": "tokens_per_second", "trained_tokens": "trained_tokens",
               "peak_memory": "peak_memory_gb"}
_VAL_KEYS = {"val_loss": "val_loss", "val_time": "val_time"}


class Callback(TrainingCallback):  # type: ignore[misc]
    """Reports mlx-lm's training and validation losses to a kbert-tui run (`run`, or one `init(**kwargs)` starts)."""

    def __init__(self, run: Run | None = None, *, model: Any = None, **init_kwargs: Any) -> None:
        self.run = run if run is not None else init(model=model, **init_kwargs)
        self.model = model
        if model is not None:
            self.run.on_checkpoint(self.save_adapters)

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        self._log(train_info, _TRAIN_KEYS)

    def on_val_loss_report(self, val_info: dict[str, Any]) -> None:
        self._log(val_info, _VAL_KEYS)

    def _log(self, info: dict[str, Any], keys: dict[str, str]) -> None:
        metrics = {name: info[key] for key, name in keys.items() if key in info}
        self.run.log(metrics, step=int(info.get("iteration", self.run.step)))  # waits here while paused
        if self.run.should_stop:
            raise RunStopped(f"stop requested at iteration {info.get('iteration')} ({self.run.control.stop_reason})")

    def save_adapters(self, step: int) -> str:
        """The model's trainable weights (the LoRA adapters) in the run directory; returns the file."""
        import mlx.core as mx
        from mlx.utils import tree_flatten

        folder = Path(self.run.dir) / "checkpoints" / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "adapters.safetensors"
        mx.save_safetensors(str(path), dict(tree_flatten(self.model.trainable_parameters())))
        return str(path)

    def __enter__(self) -> Callback:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self.run.__exit__(kind, error, tb)
        return isinstance(error, RunStopped)  # the stop it raised ends here, as the monitor asked
