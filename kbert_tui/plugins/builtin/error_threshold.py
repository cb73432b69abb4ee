"""The seed's EventPatternMonitor: warns when errors pile up."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from kbert_tui.config import option
from kbert_tui.events import catalog as ev

from ..base import PluginPort

DEFAULT_PATTERNS = ("*.error", "*.failed", "*_error")


class ErrorThresholdPlugin(PluginPort):
    """Config: threshold (10), window_s (60; 0 counts the whole run), patterns (error-like names).

    Emits `system.error_threshold_exceeded` {error_count, threshold, window_s, component,
    last_error} once when `threshold` errors fall within `window_s`, and again only after the
    count has dropped below the threshold.
    """

    @dataclass(frozen=True)
    class Options:
        threshold: int = option(10, "errors within the window that raise system.error_threshold_exceeded", minimum=1)
        window_s: float = option(60.0, "the window in seconds (0: the whole run)", minimum=0.0)
        patterns: tuple[str, ...] = option(tuple(DEFAULT_PATTERNS), "event-name globs that count as errors")

    name = "error_threshold"
    version = "1.0.0"
    capabilities = ("monitoring",)

    async def initialize(self) -> None:
        o = self.options
        self.threshold, self.window_s, patterns = o.threshold, o.window_s, o.patterns
        self.times: deque[float] = deque()
        self.exceeded = False
        self._seen: set[str] = set()
        for pattern in patterns:
            await self.subscribe(pattern, self._on_error)

    async def _on_error(self, event: Any) -> None:
        if event.id in self._seen:  # an event matched by two patterns counts once
            return
        self._seen.add(event.id)
        if len(self._seen) > 10000:
            self._seen.clear()
        now = event.timestamp.timestamp()
        if self.window_s > 0:
            while self.times and now - self.times[0] > self.window_s:
                self.times.popleft()
        if self.exceeded and len(self.times) < self.threshold:
            self.exceeded = False
        self.times.append(now)
        if self.exceeded or len(self.times) < self.threshold:
            return
        self.exceeded = True
        data = event.data or {}
        await self.emit(ev.SYSTEM_ERROR_THRESHOLD_EXCEEDED, {
            "error_count": len(self.times), "threshold": self.threshold, "window_s": self.window_s,
            "component": data.get("component") or data.get("plugin_name") or event.source,
            "last_error": event.name,
        }, correlation_id=event.correlation_id)
