"""The MLX training engine: config → data → tokenizer → BERT → training loop, reported as events.

OpenBLAS is put under MLX first, before anything here imports `mlx.core` (see kbert_tui.blas).
"""

from kbert_tui.blas import ensure_fast_blas

BLAS = ensure_fast_blas()

from .control import Control  # noqa: E402
from .data import DataError  # noqa: E402
from .trainer import Trainer  # noqa: E402
from .worker import TrainingWorker  # noqa: E402

__all__ = ["BLAS", "Control", "DataError", "Trainer", "TrainingWorker"]
