"""kbert-tui: a terminal monitor for MLX training runs, built on an asyncio event bus."""

__version__ = "0.1.0"
