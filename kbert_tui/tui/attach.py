"""Sources for a run that another process is writing: `kbert-tui attach RUN_DIR` (and over Redis).

Quitting an attached monitor only closes the reader: the run is not told and goes on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from kbert_tui.events import Event

from .sources import EventSource

__all__ = ["AttachSource"]


class AttachSource(EventSource):
    """Follows a run on a reader thread: the history as fast as replay, then live, until it ends.

    `run` is a `kbert_tui.remote.AttachedRun` (a log on this machine) or `BrokerRun` (a Redis stream);
    control requests go back through it (unless `read_only`).
    """

    kind = "attach"
    BATCH = 2000
    MAX_BACKLOG = 50_000

    def __init__(self, run: Any, *, read_only: bool = False) -> None:
        self.run = run
        self.events_path = run.events_path
        self.read_only = read_only
        self.error: str | None = None
        self.control_error: str | None = None  # the last request could not be sent: why
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def controllable(self) -> bool:  # type: ignore[override]
        return not self.read_only and self.run.controllable

    @property
    def finished(self) -> bool:
        return self.run.ended

    @property
    def malformed(self) -> int:
        return self.run.malformed

    def describe(self) -> str:
        run = self.run
        parts = [f"attach {run.label}"]
        if run.ended:
            parts.append(f"run over: {run.outcome}")
        elif run.live:
            parts.append("live")
        else:
            parts.append(f"history {run.position:,} events")
        if getattr(run, "connection_note", None):
            parts.append(run.connection_note)
        if self.read_only:
            parts.append("read-only")
        elif not run.ended and not run.controllable:
            parts.append("no control")
        if self.control_error:
            parts.append(f"request not sent: {self.control_error}")
        if self.error:
            parts.append(f"reader stopped: {self.error}")
        return " · ".join(parts)

    async def start(self, inbox: deque[Event]) -> None:
        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()
        self._thread = threading.Thread(target=self._main, args=(inbox,), name="kbert-attach", daemon=True)
        self._thread.start()

    async def wait(self) -> str | None:
        assert self._ended is not None, "wait() before start()"
        await self._ended.wait()
        return self.run.outcome

    async def emit_control(self, name: str, data: dict[str, Any]) -> None:
        if not self.controllable:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.run.send_control, name, data)
            self.control_error = None
        except Exception as exc:  # e.g. someone else's run (control.jsonl is its owner's), Redis away
            self.control_error = f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 2.0)
        self.run.close()

    # -- the reader thread --------------------------------------------------------------------------
    def _main(self, inbox: deque[Event]) -> None:
        try:
            while not self._stop.is_set():
                batch = self.run.read(self.BATCH)
                if batch:
                    while len(inbox) > self.MAX_BACKLOG and not self._stop.is_set():
                        time.sleep(0.005)  # the monitor is behind: don't read the whole history into memory
                    inbox.extend(batch)
                elif self.run.ended:
                    break
                elif self.run.idle_wait_s:
                    self._stop.wait(self.run.idle_wait_s)
        except Exception as exc:  # an unreadable segment: say so, keep what was read
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if self._loop is not None and self._ended is not None:
                try:
                    self._loop.call_soon_threadsafe(self._ended.set)
                except RuntimeError:
                    pass  # the app's loop is gone
