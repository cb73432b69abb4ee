"""How a run's process ends: its exit statuses, the signals that stop it, and a guard for a stuck loop.

Ctrl-C (SIGINT, or the key in the monitor), SIGTERM (systemd, Docker and Slurm stop a job with it) and
SIGHUP (the terminal went away) stop a run the same way: a checkpoint, `training.stopped`, the log
flushed, session.json given its final state; the process then exits with 128 + the signal's number
(`STOP_SIGNALS`). Once a run has ended, the process exits within `ExitGuard.grace` seconds even if a
handler swallows cancellation or blocks the event loop for good: the event log is closed first
(everything accepted reaches the disk), then the guard names the handlers it gave up on and ends the process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from kbert_tui.events.store import close_live_stores

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_HANGUP", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED",
           "EXIT_TERMINATED", "STOP_SIGNALS", "ExitGuard", "on_stop_signals", "signal_exit"]

EXIT_OK = 0  # the run completed (or the command did what it was asked)
EXIT_FAILED = 1  # training failed, or the monitor itself did
EXIT_BAD_INPUT = 2  # config, data, events file or arguments (kbert_tui.errors): one line, nothing written
EXIT_STOPPED = 3  # stopped by the user (`s`, `q` then yes, a stop request); a checkpoint is saved
EXIT_HANGUP = 128 + signal.SIGHUP  # 129
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

STOP_SIGNALS: dict[int, str] = {
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "terminated (SIGTERM)",
    signal.SIGHUP: "hung up (SIGHUP)",
}
"""The signals that stop a run cleanly, and how the closing line names each."""


def signal_exit(signum: int) -> int:
    """The exit status after `signum` stopped the run: 128 + its number, as a shell reports it."""
    return 128 + int(signum)


def on_stop_signals(
    callback: Callable[[int], Any], *, at_once: Callable[[int], Any] | None = None
) -> Callable[[], None]:
    """Call `callback(signum)` on the main thread's event loop when one of `STOP_SIGNALS` arrives;
    returns an undo function.

    A Python-level handler runs between bytecodes of the main thread, where the loop runs: it only
    schedules the callback, so loop state is never touched mid-callback. `at_once(signum)` runs in the
    handler itself, for what must happen even if the loop never gets to the callback (it must be thread-safe).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        if at_once is not None:
            at_once(signum)
        try:
            asyncio.get_running_loop().call_soon_threadsafe(callback, signum)
        except RuntimeError:  # no loop running: call it here
            callback(signum)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}

    def undo() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return undo


class ExitGuard:
    """Ends the process `grace` seconds after the run ended, unless it has exited by itself by then."""

    def __init__(self, *, grace: float = 5.0, busy: Callable[[], list[str]] = list,
                 last_words: Callable[[], Any] | None = None, what: str = "the run ended") -> None:
        self.grace = grace
        self._what = what
        self._busy = busy
        self._last_words = last_words  # run before the exit, after the log is closed (session.json's final state)
        self._code = 1
        self._done = threading.Event()
        self._timer: threading.Timer | None = None

    def watch(self, ended: Callable[[], bool], code: Callable[[], int]) -> None:
        """Arm the guard once `ended()` is true (polled from a daemon thread, so a stuck loop can't stop it)."""

        def poll() -> None:
            while not self._done.wait(0.2):
                if ended():
                    self.arm(code())
                    return

        threading.Thread(target=poll, name="kbert-exit-guard", daemon=True).start()

    def arm(self, code: int) -> None:
        if self._timer is not None or self._done.is_set():
            return
        self._code = code
        self._timer = threading.Timer(self.grace, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        self._done.set()
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        if self._done.is_set():
            return
        try:
            try:
                busy = self._busy()
            except Exception:  # noqa: BLE001 - naming them is a courtesy; exiting is the point
                busy = []
            close_live_stores(timeout=2.0)
            if self._last_words is not None:
                self._last_words()
            what = "; ".join(busy) if busy else "the event loop (no bus handler was busy)"
            print(f"kbert-tui: {self._what} {self.grace:g} s ago but the process could not finish; "
                  f"gave up waiting for {what}. The event log is closed.", file=sys.stderr, flush=True)
        finally:  # after SIGHUP the terminal is gone and the print raises: the process must end all the same
            os._exit(self._code)
