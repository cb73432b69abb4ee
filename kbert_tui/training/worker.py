"""The training worker: a Trainer on its own thread, steered through a Control, reporting on the bus."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx

from kbert_tui.config import RunConfig

from .control import Control
from .distributed import Ranks
from .trainer import ThreadEmitter, Trainer


class TrainingWorker:
    """Runs one training in a daemon thread; `on_done(outcome)` is called from that thread at the end."""

    def __init__(
        self,
        config: RunConfig,
        bus: ThreadEmitter,
        *,
        run_id: str,
        output_dir: Path,
        on_done: Callable[[str], None] | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.control = Control()
        self.trainer = Trainer(config, bus, run_id=run_id, output_dir=output_dir, control=self.control, ranks=ranks)
        self._on_done = on_done
        self._thread = threading.Thread(target=self._main, name=f"kbert-train-{run_id}", daemon=True)
        self.outcome: str | None = None

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        outcome = "failed"
        try:
            outcome = self.trainer.run()
        finally:
            # Without this MLX can abort the process at exit when it was used from a thread.
            mx.clear_streams()
            self.outcome = outcome
            if self._on_done is not None:
                try:
                    self._on_done(outcome)
                except Exception:
                    pass

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def failure(self) -> dict[str, Any] | None:
        return self.trainer.failure

    @property
    def final_metrics(self) -> dict[str, Any] | None:
        return self.trainer.final_metrics
