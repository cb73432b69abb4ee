"""Where a script's run goes (kbert_tui.client): its own session on a background thread, or the outbox a
`kbert-tui watch` process relays.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kbert_tui.events import Event

__all__ = ["FINISH_WAIT_S", "INBOX_NAME", "OUTBOX_NAME", "SOURCE", "HostedSink", "OutboxSink"]

OUTBOX_NAME = "watch-outbox.jsonl"  # the script's events, relayed onto the watcher's bus
INBOX_NAME = "watch-inbox.jsonl"  # the watcher's control requests for the script
SOURCE = "client"  # the events' source
FINISH_WAIT_S = 10.0  # how long finish() waits for the run's log to be flushed and closed


class _ScriptWorker:
    """The script, seen by a `RunSession` as its worker: the session steers it through `control`."""

    def __init__(self, on_done: Callable[[str], None] | None) -> None:
        from kbert_tui.control import Control

        self.control = Control()
        self.outcome: str | None = None
        self.failure: dict[str, Any] | None = None
        self.final_metrics: dict[str, Any] | None = None
        self._on_done = on_done
        self._ended = threading.Event()

    def start(self) -> None:
        """The script is already running."""

    def done(self, outcome: str) -> None:
        if self._ended.is_set():
            return
        self.outcome = outcome
        self._ended.set()
        if self._on_done is not None:
            self._on_done(outcome)

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    def join(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)


class HostedSink:
    """On its own: the run's session (bus, log, session.json, control file, plugins, rules, broker, sampler)
    on a background thread's event loop. The script only queues its events; the loop emits them every
    `DRAIN_S`, so encoding, the log and the handlers run there (while MLX computes, without the GIL)."""

    DRAIN_S = 0.01
    QUEUE_LIMIT = 50_000  # events waiting for the loop before a flooding script waits for it (nothing is dropped)

    def __init__(self, config: Any, output_dir: Path, run_id: str) -> None:
        from kbert_tui.session import RunSession

        class ScriptSession(RunSession):
            def _make_worker(self, on_done: Any) -> _ScriptWorker:
                return _ScriptWorker(on_done)

        self.session = ScriptSession(config, output_dir=output_dir, run_id=run_id)
        self.run_id: str = self.session.run_id
        self.output_dir: Path = self.session.output_dir
        self.events_path: Path = self.session.events_path
        self.dropped = 0  # events the loop never took (it is gone): counted, never raised
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._accepting = True  # the loop drains the queue
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"kbert-client-{self.run_id}", daemon=True)

    def open(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        worker = self.session.worker
        assert isinstance(worker, _ScriptWorker)  # ScriptSession's own worker
        self.worker = worker
        self.control = self.worker.control

    def _main(self) -> None:
        try:
            asyncio.run(self._host())
        except BaseException as error:  # noqa: BLE001 - reported to init(), or lost with the process
            self._error = self._error or error
        finally:
            self._ready.set()
            self._closed.set()

    async def _host(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self.session.start()
        except BaseException as error:
            self._error = error
            await self.session.close()
            return
        self._ready.set()
        pump = asyncio.create_task(self._pump(), name="kbert-client-pump")
        try:
            await self.session.wait()
        finally:
            pump.cancel()
            await self._drain()  # the final event, and whatever came with it
            self._accepting = False  # what comes now (only if the loop died before finish()) is counted as lost
            await self.session.close()

    async def _pump(self) -> None:
        while True:
            await self._drain()
            await asyncio.sleep(self.DRAIN_S)

    async def _drain(self) -> None:
        queue, bus = self._queue, self.session.bus
        assert bus is not None
        while queue:
            name, data = queue.popleft()
            await bus.emit(name, data, source=SOURCE, correlation_id=self.run_id)  # yields when handlers lag

    def emit(self, name: str, data: dict[str, Any]) -> None:
        queue = self._queue
        if len(queue) >= self.QUEUE_LIMIT:
            while len(queue) >= self.QUEUE_LIMIT and self._accepting:
                time.sleep(0.001)  # backpressure: the loop is behind a flood
            if not self._accepting:
                self.dropped += 1
                return
        queue.append((name, data))

    def close(self, outcome: str) -> None:
        self.worker.done(outcome)
        self._closed.wait(FINISH_WAIT_S)
        self.dropped += len(self._queue)  # left when the loop ended early (it died, or the wait ran out)


class OutboxSink:
    """Under `kbert-tui watch`: events go to the outbox the watcher relays; requests come from its inbox.
    As on its own, the script only queues; a thread writes the queue out and reads the inbox every `POLL_S`."""

    POLL_S = 0.01
    QUEUE_LIMIT = 50_000

    def __init__(self, run_dir: Path, run_id: str) -> None:
        from kbert_tui.control import Control
        from kbert_tui.events.store import JsonlStore

        self.run_id = run_id
        self.output_dir = run_dir
        self.events_path = run_dir / "events.jsonl"
        self.control = Control()
        self.dropped = 0
        self._store = JsonlStore(run_dir / OUTBOX_NAME)
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._stop = threading.Event()
        self._inbox = run_dir / INBOX_NAME
        self._thread = threading.Thread(target=self._main, name="kbert-client-outbox", daemon=True)

    def open(self) -> None:
        self._thread.start()

    def emit(self, name: str, data: dict[str, Any]) -> None:
        queue = self._queue
        if len(queue) >= self.QUEUE_LIMIT:
            while len(queue) >= self.QUEUE_LIMIT and self._thread.is_alive():
                time.sleep(0.001)  # backpressure: the writer is behind a flood
            if not self._thread.is_alive():
                self.dropped += 1
                return
        queue.append((name, data))

    def _main(self) -> None:
        from kbert_tui.events.follow import LogFollower
        from kbert_tui.session import apply_control

        follower: LogFollower | None = LogFollower(self._inbox)
        while True:
            stopping = self._stop.wait(self.POLL_S)
            self._drain()
            if stopping:
                break
            try:
                for request in follower.read_events() if follower is not None else ():
                    if request.correlation_id in (None, self.run_id):
                        apply_control(self.control, request)
            except OSError:
                follower = None  # the run directory went away: nobody is left to ask anything
        if follower is not None:
            follower.close()

    def _drain(self) -> None:
        queue, append = self._queue, self._store.append
        while queue:
            name, data = queue.popleft()
            try:
                append(Event(name, data, source=SOURCE, correlation_id=self.run_id))
            except RuntimeError:  # the outbox was closed under us
                self.dropped += 1

    def close(self, outcome: str) -> None:
        self._stop.set()
        self._thread.join(FINISH_WAIT_S)
        self._drain()  # the final event, had the thread not got to it
        self._store.close(timeout=FINISH_WAIT_S)
