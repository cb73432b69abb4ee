"""A third-party kbert-tui plugin: says hello to every finished epoch."""

from __future__ import annotations

from typing import Any

from kbert_tui.plugins import PluginPort


class HelloPlugin(PluginPort):
    """Config: greeting ("hello"). Emits `hello.epoch` for each epoch and `hello.goodbye` on cleanup."""

    name = "hello"
    version = "0.1.0"
    capabilities = ("demo",)

    async def initialize(self) -> None:
        self.greeting = str(self.config.get("greeting", "hello"))
        self.epochs_seen = 0
        await self.subscribe("training.epoch_completed", self.on_epoch)

    async def on_epoch(self, event: Any) -> None:
        self.epochs_seen += 1
        await self.emit("hello.epoch", {"epoch": event.data.get("epoch"), "greeting": self.greeting},
                        correlation_id=event.correlation_id)

    async def cleanup(self) -> None:
        await self.emit("hello.goodbye", {"epochs_seen": self.epochs_seen})
