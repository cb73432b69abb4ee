"""One training run and everything around it: bus, event log, system sampler, plugins, worker.

Headless mode and the TUI both drive a run through this class::

    session = RunSession(config, output_dir=None)
    await session.start()            # bus + log, sampler, plugins, worker thread
    outcome = await session.wait()   # "completed" | "failed" | "stopped"
    await session.close()            # stops what still runs, flushes and closes the bus

Control goes through events (`control.pause_requested` / `control.resume_requested` /
`control.stop_requested` / `control.checkpoint_requested`), so a plugin, a rule or the TUI can steer
the run by emitting; the `request_*` methods just emit those.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, Protocol

from kbert_tui.config import RunConfig
from kbert_tui.control import Control
from kbert_tui.events import Event, EventBus
from kbert_tui.events import catalog as ev

__all__ = ["RankedEventBus", "RunSession", "apply_control", "make_run_id"]


class RunWorker(Protocol):
    """What trains, as a session drives it: the built-in trainer's thread (`training.TrainingWorker`), the
    script itself (the client API) or a child process (`kbert-tui watch`)."""

    @property
    def control(self) -> Control: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def failure(self) -> dict[str, Any] | None: ...
    @property
    def final_metrics(self) -> dict[str, Any] | None: ...
    @property
    def alive(self) -> bool: ...
    def start(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...


def make_run_id(name: str) -> str:
    """`<name>-<UTC yyyymmdd-hhmmss>-<4 hex>`: sortable and unique enough across machines."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "run"
    return f"{safe}-{stamp}-{secrets.token_hex(2)}"


def apply_control(control: Any, event: Event) -> None:
    """Hand a `control.*` request to the flags a training loop checks (a `training.Control`)."""
    who = str(event.data.get("requested_by", event.source))
    if event.name == ev.CONTROL_PAUSE_REQUESTED:
        control.request_pause(who)
    elif event.name == ev.CONTROL_RESUME_REQUESTED:
        control.request_resume(who)
    elif event.name == ev.CONTROL_STOP_REQUESTED:
        control.request_stop(str(event.data.get("reason", "user")), str(event.data.get("requested_by", "user")))
    elif event.name == ev.CONTROL_CHECKPOINT_REQUESTED:
        control.request_checkpoint(who, event.id)


class RankedEventBus(EventBus):
    """A bus whose every event, its own bus.* events included, says which rank of a multi-rank run
    emitted it (metadata rank, world_size, host): the bus's metadata stamp, nothing overridden."""

    def __init__(self, stamp: dict[str, Any], **options: Any) -> None:
        super().__init__(stamp=stamp, **options)


class RunSession:
    RANK_STOP_WAIT_S = 10.0  # how long a closing rank waits for its training step, which may wait on lost peers

    def __init__(self, config: RunConfig, *, output_dir: str | Path | None = None, run_id: str | None = None) -> None:
        self.config = config
        self.ranks: Any = None  # kbert_tui.training.distributed.Ranks when `mlx.launch` started this process
        self.run_id = run_id or make_run_id(config.run.name)
        if os.environ.get("MLX_RANK") is not None:
            import kbert_tui.training  # noqa: F401  -- OpenBLAS under MLX before mx.distributed loads it
            from kbert_tui.training.distributed import current_ranks

            self.ranks = current_ranks()
            self.run_id = self.ranks.share_text(self.run_id)  # one run id (and run directory) for all ranks
        if output_dir is not None:
            self.output_dir = Path(output_dir).expanduser().resolve()
        elif config.run.output_dir is not None:
            self.output_dir = Path(config.run.output_dir)
        else:
            self.output_dir = (Path("runs") / self.run_id).resolve()
        events_path = config.events.path
        if events_path is None:
            self.events_path = self.output_dir / "events.jsonl"
        else:
            self.events_path = events_path if events_path.is_absolute() else self.output_dir / events_path
        if self.ranks is not None and self.ranks.distributed:
            from kbert_tui.training.distributed import rank_events_path

            self.events_path = rank_events_path(self.events_path, self.ranks.rank)
        self.bus: EventBus | None = None
        self.outcome: str | None = None
        self.worker: RunWorker | None = None
        self.sampler: Any = None  # the system sampler, when [system] is enabled
        self.plugins: Any = None  # the PluginManager, when [plugins] lists any
        self._done: asyncio.Event | None = None
        self._control_sub: str | None = None
        self._closed = False
        self.local_control: Any = None  # session.json + control.jsonl beside the log (kbert_tui.remote)
        self.broker: Any = None  # the Redis publisher when [events] broker is set
        self.rules: Any = None  # [[rules]] acting on this run's events (kbert_tui.rules)
        self.sampled_pid: int | None = None  # the process the System pane follows (None: this one; `watch`: the child)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the bus and log, start the sampler and plugins, then the training worker."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.events_path.parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"enable_persistence": True, "persistence_path": str(self.events_path),
                                   "max_file_size_mb": self.config.events.max_file_size_mb}
        distributed = self.ranks is not None and self.ranks.distributed
        self.bus = RankedEventBus(self.ranks.metadata(), **options) if distributed else EventBus(**options)
        self._control_sub = await self.bus.subscribe("control.*", self._on_control)
        await self._start_remote(self.bus)
        await self._start_system()
        # Plugins and rules act for the run on rank 0 (they write files in the shared run directory, e.g.
        # metrics.csv); the other ranks' events are copies of its, their lanes aside.
        main = self.ranks is None or self.ranks.is_main
        if main:
            await self._start_plugins()
        if self.config.rules and main:
            from kbert_tui.rules import RuleRunner

            self.rules = RuleRunner(self.bus, self.config.rules, self.run_id)
            await self.rules.start()
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()

        def finished(outcome: str) -> None:
            self.outcome = outcome
            try:
                loop.call_soon_threadsafe(self._done.set)  # type: ignore[union-attr]
            except RuntimeError:
                pass  # the loop is gone; close() will not wait on it

        self.worker = self._make_worker(finished)
        self.worker.start()

    def earlier_events(self) -> list[Event]:
        """Before `start()`: the log so far of the run this one resumes (`run --resume` goes on in the same log),
        for a monitor to open with the whole story; [] for a new run."""
        if self.config.training.resume_from is None or not self.events_path.exists():
            return []
        from kbert_tui.events.store import read_events

        return list(read_events(self.events_path))

    def _make_worker(self, on_done: Any) -> RunWorker:
        """What trains: the built-in trainer's thread here; a script or a child process for the client API and
        `watch` override this."""
        from kbert_tui.training import TrainingWorker

        assert self.bus is not None  # start() makes the bus before the worker
        return TrainingWorker(
            self.config, self.bus, run_id=self.run_id, output_dir=self.output_dir, on_done=on_done, ranks=self.ranks
        )

    async def wait(self) -> str:
        """Wait for the run to end by itself (or by a stop request); return its outcome."""
        if self._done is None:
            raise RuntimeError("RunSession.wait() before start()")
        await self._done.wait()
        assert self.bus is not None
        await self.bus.flush()
        return self.outcome or "failed"

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.alive

    @property
    def failure(self) -> dict[str, Any] | None:
        """training.failed's payload when the run failed (error, error_type, traceback, epoch, step)."""
        return self.worker.failure if self.worker is not None else None

    @property
    def final_metrics(self) -> dict[str, Any] | None:
        return self.worker.final_metrics if self.worker is not None else None

    async def close(self) -> None:
        """Stop whatever still runs (a live run is stopped and checkpointed), then flush and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.worker is not None and self.worker.alive:
            self.worker.control.request_stop("session closed", "session")
            # A rank waits in MLX's collectives for its peers, forever if one is gone: give it a while, then say so.
            wait = self.RANK_STOP_WAIT_S if self.ranks is not None and self.ranks.distributed else None
            await asyncio.get_running_loop().run_in_executor(None, self.worker.join, wait)
            if self.worker.alive and self.bus is not None:
                from kbert_tui.training import TrainingWorker

                # only the built-in trainer runs as ranks; its progress says where this rank was
                at = self.worker.trainer.progress if isinstance(self.worker, TrainingWorker) else None
                self.bus.emit_sync(ev.TRAINING_FAILED, {
                    "error": f"rank {self.ranks.rank}: no answer from the other ranks for {wait:g} s after a stop "
                             "request (one of them is gone?); this rank ends without finishing its step",
                    "error_type": "RankLost", "bad_input": False, "traceback": "",
                    "epoch": at.epoch if at else None, "step": at.step if at else None},
                    source="trainer", correlation_id=self.run_id)
        if self.rules is not None:
            await self.rules.stop()
        await self._stop_plugins()
        await self._stop_system()
        if self.bus is not None:
            if self._control_sub is not None:
                await self.bus.unsubscribe(self._control_sub)
            # Handlers still busy after 3 s are abandoned: the process must be able to end.
            await self.bus.shutdown(timeout=3.0)
        await self._stop_remote()

    def record_end(self) -> None:
        """Give session.json its final state now, from any thread: the exit guard's last act when the loop
        is stuck and close() will never run (attached monitors must not see a run "running" forever)."""
        control = self.local_control
        if control is None or control.info.ended:
            return
        control.info.state = self.outcome or (self.worker.outcome if self.worker is not None else None) or "failed"
        control.info.ended_at = datetime.now(UTC).isoformat()
        try:
            control.info.write(control.info_path)
        except OSError:
            pass  # the run directory went away: nobody left to tell

    async def __aenter__(self) -> RunSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ control

    def request_pause(self, requested_by: str = "user", *, source: str = "cli") -> None:
        self._emit_control(ev.CONTROL_PAUSE_REQUESTED, {"requested_by": requested_by}, source)

    def request_resume(self, requested_by: str = "user", *, source: str = "cli") -> None:
        self._emit_control(ev.CONTROL_RESUME_REQUESTED, {"requested_by": requested_by}, source)

    def request_stop(self, reason: str = "user", requested_by: str = "user", *, source: str = "cli") -> None:
        self._emit_control(ev.CONTROL_STOP_REQUESTED, {"reason": reason, "requested_by": requested_by}, source)

    def request_checkpoint(self, requested_by: str = "user", *, source: str = "cli") -> None:
        self._emit_control(ev.CONTROL_CHECKPOINT_REQUESTED, {"requested_by": requested_by}, source)

    def _emit_control(self, name: str, data: dict[str, Any], source: str) -> None:
        if self.bus is None:
            raise RuntimeError(f"{name} before RunSession.start()")
        self.bus.emit_sync(name, data, source=source, correlation_id=self.run_id)

    def _on_control(self, event: Event) -> None:
        if self.worker is None or (event.correlation_id not in (None, self.run_id)):
            return
        apply_control(self.worker.control, event)

    # ------------------------------------------------------------------ attached monitors (issue 13)

    async def _start_remote(self, bus: EventBus) -> None:
        """Let monitors in other processes find this run and steer it (session.json, control.jsonl)."""
        from kbert_tui.remote import LocalControlWatcher

        if self.ranks is not None and not self.ranks.is_main:
            return  # rank 0 answers for the run: one session.json, one control file; a stop reaches all ranks

        events_path = self.events_path.resolve()
        self.local_control = LocalControlWatcher(bus, self.run_id, events_path)
        await self.local_control.start()
        settings = self.config.events
        if settings.broker:
            from kbert_tui.remote.broker import BrokerPublisher

            info = self.local_control.info
            self.broker = BrokerPublisher(
                bus, self.run_id, events_path, settings.broker, maxlen=settings.broker_maxlen,
                token=settings.broker_token, relay=self.local_control.relay,
                info={"name": self.config.run.name, "host": info.host, "pid": info.pid, "events": info.events})
            await self.broker.start()

    async def _stop_remote(self) -> None:
        """After the log is flushed: record the outcome, so attached monitors know the log is complete."""
        outcome = self.outcome or (self.worker.outcome if self.worker is not None else None)
        if self.broker is not None:
            await self.broker.close(outcome)
        if self.local_control is not None:
            await self.local_control.close(outcome)

    # ------------------------------------------------------------------ system sampler and plugins
    async def _start_system(self) -> None:
        """Start the system sampler on this loop (config.system, self.bus, self.output_dir, self.run_id)."""
        if not self.config.system.enabled:
            return
        from kbert_tui.system import SystemSampler

        self.sampler = SystemSampler(self.bus, self.config.system, self.output_dir, correlation_id=self.run_id,
                                     pid=self.sampled_pid)
        await self.sampler.start()

    async def _stop_system(self) -> None:
        """Stop the system sampler; must be safe when it never started."""
        if self.sampler is not None:
            await self.sampler.stop()

    async def _start_plugins(self) -> None:
        """Load and initialize config.plugins on this bus (before the worker starts)."""
        if not self.config.plugins:
            return
        from kbert_tui.plugins import PluginManager

        self.plugins = PluginManager(self.bus, self.config.plugins, output_dir=self.output_dir, run_id=self.run_id)
        await self.plugins.start()  # a failing plugin is reported (plugin.error) and set aside, never raised

    async def _stop_plugins(self) -> None:
        """Clean up every plugin; must be safe when none started."""
        if self.plugins is not None:
            await self.plugins.close()
