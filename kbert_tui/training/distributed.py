"""Data-parallel training across the processes `mlx.launch` starts: who this process is, and the few
collectives the trainer needs (MLX's own `mx.distributed`; ring backend on one or several hosts).

A process started by `mlx.launch` has MLX_RANK set and acts as its rank; any other process is rank 0
of 1 and never touches `mx.distributed`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Ranks", "current_ranks", "launched", "rank_events_path"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run; `group` is MLX's group (None for a single process)."""

    rank: int = 0
    world_size: int = 1
    host: str = field(default_factory=socket.gethostname)
    group: Any = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and predictions and answers attached monitors."""
        return self.rank == 0

    def metadata(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "host": self.host}

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's share of `rows` (every world_size-th row from its rank on)."""
        return rows[self.rank:: self.world_size] if self.distributed else rows

    def all_sum(self, values: list[float] | np.ndarray) -> np.ndarray:
        """The element-wise sum of `values` over all ranks (float64 in, float32 on the wire)."""
        array = np.asarray(values, dtype=np.float64)
        if not self.distributed:
            return array
        import mlx.core as mx

        total = mx.distributed.all_sum(mx.array(array.astype(np.float32)), group=self.group)
        return np.array(total, dtype=np.float64)

    def share_text(self, text: str, size: int = 256) -> str:
        """Rank 0's `text` on every rank (each process makes its own run id; rank 0's wins)."""
        if not self.distributed:
            return text
        raw = text.encode("utf-8")[:size] if self.is_main else b""
        codes = np.zeros(size, dtype=np.float64)
        codes[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        return bytes(int(c) for c in self.all_sum(codes) if c).decode("utf-8", errors="replace")


def launched() -> bool:
    """Started by `mlx.launch` (or by hand with its environment): MLX_RANK is set."""
    return os.environ.get("MLX_RANK") is not None


@lru_cache(maxsize=1)
def current_ranks() -> Ranks:
    """This process's ranks, joining MLX's distributed group once when `mlx.launch` started it."""
    if not launched():
        return Ranks()
    import mlx.core as mx

    group = mx.distributed.init()
    return Ranks(rank=group.rank(), world_size=group.size(), group=group if group.size() > 1 else None)


def rank_events_path(path: Path, rank: int) -> Path:
    """Rank 0 keeps the run's log name (events.jsonl); rank N writes events.rankN.jsonl beside it."""
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
