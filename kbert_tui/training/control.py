"""The training loop's pause / resume / stop / checkpoint flags (they live in `kbert_tui.control`, so the client
API and `kbert-tui watch` steer a script without loading MLX)."""

from kbert_tui.control import Control

__all__ = ["Control"]
