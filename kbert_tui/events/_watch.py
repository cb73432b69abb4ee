"""The loop watch: notices when the bus's loop stops turning, and which handler it was in."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Protocol

from ._subscription import Subscription

__all__ = ["LoopWatch"]

BEAT_S = 0.1  # the heartbeat


class WatchedBus(Protocol):
    """What the watch needs of a bus: whether it is closed, the subscription it is in, where to report."""

    _closed: bool
    _current: Subscription | None

    def _loop_blocked(self, seconds: float, handler: str | None) -> None: ...


class LoopWatch:
    """Notices when the bus's loop stops turning, and which handler it was in (asyncio's slow-callback idea).

    A heartbeat on the loop measures how late it runs; a daemon thread looks while the beat is
    overdue and notes the handler the loop is stuck in. Once the loop turns again the bus emits
    `bus.loop_blocked` {seconds, handler}.
    """

    def __init__(self, bus: WatchedBus, threshold: float) -> None:
        self._bus = weakref.ref(bus)
        self.threshold = threshold
        self.loop: asyncio.AbstractEventLoop | None = None
        self.beat = time.monotonic()
        self.suspect: str | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.threshold <= 0 or loop is self.loop or self._stopped.is_set():
            return
        if self._handle is not None:
            self._handle.cancel()
        self.loop = loop
        self.beat = time.monotonic()
        self._handle = loop.call_later(BEAT_S, self._tick)
        if self._thread is None:
            self._thread = threading.Thread(target=self._look, name="event-bus-loop-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        now = time.monotonic()
        late = now - self.beat - BEAT_S
        bus = self._bus()
        if bus is None or self._stopped.is_set():
            return
        if late >= self.threshold:
            suspect, self.suspect = self.suspect, None
            bus._loop_blocked(late, suspect)
        self.beat = now
        loop = self.loop
        if loop is not None and not loop.is_closed():
            self._handle = loop.call_later(BEAT_S, self._tick)

    def _look(self) -> None:
        while not self._stopped.wait(BEAT_S):
            bus = self._bus()
            if bus is None or bus._closed:
                return
            loop = self.loop
            if loop is None or not loop.is_running():
                continue
            if self.suspect is None and time.monotonic() - self.beat > BEAT_S + self.threshold / 2:
                current = bus._current
                if current is not None and current.current is not None:
                    self.suspect = f"{current.describe()} handling {current.current.name}"
            del bus
