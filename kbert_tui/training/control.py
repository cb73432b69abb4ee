"""Pause / resume / stop requests, set from the event loop and honoured by the worker between steps."""

from __future__ import annotations

import threading


class Control:
    """Thread-safe flags the training loop checks between steps."""

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self.stop_reason: str | None = None
        self.requested_by: str | None = None
        self.pause_requested_by: str | None = None  # who asked for the latest pause / resume
        self.resume_requested_by: str | None = None

    def request_pause(self, requested_by: str = "user") -> None:
        self.pause_requested_by = requested_by
        self._running.clear()

    def request_resume(self, requested_by: str = "user") -> None:
        self.resume_requested_by = requested_by
        self._running.set()

    def request_stop(self, reason: str = "user", requested_by: str = "user") -> None:
        if not self._stop.is_set():
            self.stop_reason, self.requested_by = reason, requested_by
            self._stop.set()
        self._running.set()  # a paused worker must wake up to stop

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_until_resumed(self, poll_s: float = 0.1) -> None:
        while not self._running.wait(poll_s):
            pass
