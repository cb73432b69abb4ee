"""A subscription: its handler, its backlog of undelivered events, and how its failures are reported."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._event import Event

__all__ = ["ERROR_BURST", "Repeats", "Subscription", "handler_name", "is_async_callable"]

ERROR_BURST = 3  # full reports per subscription before repeats are summarised
ERROR_WINDOW_S = 10.0  # at most one summary per subscription per window


class Subscription:
    __slots__ = ("id", "pattern", "handler", "is_async", "backlog", "scheduled", "dropped",
                 "episode_dropped", "overflowing", "current", "task", "errors")

    def __init__(self, sub_id: str, pattern: str, handler: Callable[[Event], Any]) -> None:
        self.id = sub_id
        self.pattern = pattern
        self.handler = handler
        self.is_async = is_async_callable(handler)
        self.backlog: deque[Event] = deque()
        self.scheduled = False
        self.dropped = 0
        self.episode_dropped = 0
        self.overflowing = False
        self.current: Event | None = None  # the event its handler is working on
        self.task: asyncio.Task[None] | None = None
        self.errors = Repeats()

    def describe(self) -> str:
        return f"{handler_name(self.handler)} (subscribed to {self.pattern!r})"


class Repeats:
    """journald-style rate limit: the first few reports in full, then one summary per window."""

    __slots__ = ("count", "suppressed", "window_start")

    def __init__(self) -> None:
        self.count = 0
        self.suppressed = 0
        self.window_start = 0.0

    def allow(self) -> tuple[bool, int]:
        """(report now?, how many were suppressed before this one)."""
        self.count += 1
        if self.count <= ERROR_BURST:
            return True, 0
        now = time.monotonic()
        if now - self.window_start >= ERROR_WINDOW_S:
            repeats, self.suppressed, self.window_start = self.suppressed, 0, now
            return True, repeats
        self.suppressed += 1
        return False, 0


def handler_name(handler: Callable[..., Any]) -> str:
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    module = getattr(handler, "__module__", None)
    if ":" in name or not module or module == "builtins":  # "plugin:Class.method" already says whose
        return str(name)
    return f"{module}.{name}"


def is_async_callable(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler) or asyncio.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)
