"""The cross-thread inbox: threads hand admitted events to the loop, which takes them in slices.

The inbox is bounded: a thread that outruns the loop waits for room (backpressure, at most ~1 s; its
event is on disk already), so a subscriber that keeps up never loses an event.
"""

from __future__ import annotations

import threading
import time

from ._delivery import Delivery

__all__ = ["INBOX_LIMIT", "LOOP", "NO_LOOP", "SLICE_EVENTS", "THREAD", "Inbox"]

INBOX_LIMIT = 512          # events a thread may hand over before it waits for the loop
_PRODUCER_MAX_WAIT_S = 1.0   # past this a thread stops waiting on a stuck loop (its event is on disk already)
SLICE_EVENTS = 256         # inbox events admitted per loop turn; then timers and handlers run
# How an emit reaches handlers: on the loop's thread, from another thread, or with no loop running.
LOOP, THREAD, NO_LOOP = 1, 2, 3


class Inbox(Delivery):
    """The inbox's state is set by `EventBus.__init__`; `_lock` is the bus's one admission lock."""

    _lock: threading.Condition
    _inbox_scheduled: bool
    _inbox_waiting: int
    _slice: int

    def _schedule_inbox(self, mode: int) -> None:
        loop = self._loop
        try:
            if loop is None or mode == NO_LOOP:
                raise RuntimeError("no loop")
            if mode == LOOP:
                loop.call_soon(self._drain_inbox)
            else:
                loop.call_soon_threadsafe(self._drain_inbox)
        except RuntimeError:  # the loop closed under us: deliver here rather than lose it
            self._drain_inbox(deliver_now=True)

    def _wait_for_room(self) -> None:
        """Called holding the lock: wait until the loop has taken some events (backpressure)."""
        self._producer_waits += 1
        self._inbox_waiting += 1
        deadline = time.monotonic() + _PRODUCER_MAX_WAIT_S
        try:
            while len(self._inbox) >= INBOX_LIMIT and not self._closed:
                loop = self._loop
                remaining = deadline - time.monotonic()
                if loop is None or not loop.is_running() or remaining <= 0:
                    return  # a stuck or gone loop: queue it anyway (the log is not waiting on the loop)
                self._lock.wait(min(remaining, 0.05))
        finally:
            self._inbox_waiting -= 1

    def _drain_inbox(self, deliver_now: bool = False) -> None:
        """On the loop: deliver a slice of the queued events, then give timers and handlers a turn."""
        inbox = self._inbox
        deliver = self._deliver_now if deliver_now else self._dispatch
        for _ in range(len(inbox) if deliver_now else self._slice):
            try:
                event = inbox.popleft()
            except IndexError:
                break
            deliver(event)
        lock = self._lock
        with lock:
            if inbox:
                if deliver_now:
                    self._inbox_scheduled = False
                else:
                    self._loop.call_soon(self._drain_inbox)  # type: ignore[union-attr]
            else:
                self._inbox_scheduled = False
            if self._inbox_waiting:
                lock.notify_all()
        if deliver_now and inbox:
            self._drain_inbox(deliver_now=True)
        elif not inbox and self._pending <= 0 and self._idle_waiters:
            self._wake_idle()
