"""kbert-tui: a terminal monitor for MLX training runs, built on an asyncio event bus.

`kbert_tui.init(...)` starts a run from any training script (see `kbert_tui.client`).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["LogError", "Run", "RunStopped", "init", "__version__"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: `import kbert_tui.events` (and the CLI) stay as cheap as before.
    if name in ("init", "Run", "LogError", "RunStopped"):
        from kbert_tui import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
