"""Pause / resume / stop / checkpoint requests, set from the event loop and honoured by the worker
between steps (a checkpoint request also while paused)."""

from __future__ import annotations

import threading
from collections.abc import Callable


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
        self._checkpoints: list[tuple[str, str | None]] = []  # (requested_by, the request's event id)
        self._lock = threading.Lock()

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

    def request_checkpoint(self, requested_by: str = "user", request_id: str | None = None) -> None:
        with self._lock:
            self._checkpoints.append((requested_by, request_id))

    def take_checkpoint_request(self) -> tuple[str, str | None] | None:
        """The oldest checkpoint request not yet served (requests made together are served by one save)."""
        with self._lock:
            if not self._checkpoints:
                return None
            first = self._checkpoints[0]
            self._checkpoints.clear()
            return first

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_until_resumed(self, poll_s: float = 0.1, meanwhile: Callable[[], None] | None = None) -> None:
        while not self._running.wait(poll_s):
            if meanwhile is not None:
                meanwhile()
