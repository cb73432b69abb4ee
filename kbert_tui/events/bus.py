"""The EventBus: emit from anywhere, deliver on one asyncio loop, persist every accepted event.

Durability: an event is written to the log from the thread that emits it (encoded there, so later
changes to its data can't reach the log) and a writer thread puts it on disk within milliseconds,
whatever the loop or the handlers are doing. A failing disk is retried; events that could not be
written are counted, announced (`bus.persistence_failed` / `bus.persistence_recovered` {lost}) and
raised as `PersistenceError` from `flush()` / `shutdown()`.

Delivery (events/_delivery.py: backlogs and their policy) and the cross-thread inbox (events/_inbox.py,
backpressure) are described where they are done.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

from ._capture import capture
from ._codec import encode_line
from . import _event as _ev
from ._event import Event
from ._inbox import INBOX_LIMIT, LOOP, NO_LOOP, SLICE_EVENTS, THREAD, Inbox
from ._patterns import compile_pattern, validate_pattern
from ._query import EventQuery
from ._subscription import Repeats, Subscription, handler_name
from ._watch import LoopWatch
from .store import JsonlStore, PersistenceError, read_events
from . import catalog as ev

EventHandler: TypeAlias = Callable[[Event], Any]
AsyncEventHandler: TypeAlias = Callable[[Event], Awaitable[Any]]

_FAILING_GRACE_S = 5.0      # how long flush() waits for a failing disk to come back before it raises


class EventBusError(RuntimeError):
    """Misuse of the bus (emitting after shutdown, too many subscribers)."""


class SubscriptionLimitError(EventBusError):
    """More subscriptions than `max_subscribers`."""


class EventFilter:
    """Decides which events the bus accepts; subclass and override `should_process`."""

    def should_process(self, event: Event) -> bool:
        return True


@runtime_checkable
class EventSubscriber(Protocol):
    """Anything that subscribes its own handlers to a bus (monitors, plugins, panes)."""

    async def subscribe_to(self, bus: EventBus) -> list[str]: ...


_sub_ids = itertools.count(1)
_new_object = object.__new__
_time_ns = time.time_ns
# What _admit left for delivery to do.
_FILTERED, _DISPATCH, _QUEUED, _SCHEDULE = 0, 1, 2, 3


class EventBus(Inbox):
    """An asyncio event bus with glob subscriptions, filters, correlation and JSONL persistence."""

    def __init__(
        self,
        *,
        max_subscribers: int = 1000,
        buffer_size: int = 10000,
        enable_persistence: bool = False,
        persistence_path: str | Path | None = None,
        max_file_size_mb: float = 100,
        history_size: int | None = None,
        default_source: str = "unknown",
        loop_block_threshold_s: float = 1.0,
        stamp: Mapping[str, Any] | None = None,
    ) -> None:
        """`stamp`: metadata every event of this bus carries (a rank's rank, world_size, host), under its own."""
        if max_subscribers < 1:
            raise ValueError("max_subscribers must be at least 1")
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.max_subscribers = max_subscribers
        self.buffer_size = buffer_size
        self.default_source = default_source
        self._stamp: dict[str, Any] | None = capture(dict(stamp)) if stamp else None
        self._taps: tuple[Callable[[Event], None], ...] = ()
        self._subs: dict[str, Subscription] = {}
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._filters: list[EventFilter] = []
        self._broken_filters: set[int] = set()
        self._history: deque[Event] = deque(maxlen=history_size or max(buffer_size, 10000))
        # admission, the log's order, the inbox; `_mutex` is the same lock, held without Condition's Python wrapper
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)
        self._store: JsonlStore | None = None
        if enable_persistence or persistence_path is not None:
            self._store = JsonlStore(
                persistence_path or "events.jsonl", max_file_size_mb=float(max_file_size_mb),
                on_status=self._store_status, append_lock=self._mutex,
            )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._inbox: deque[Event] = deque()
        self._inbox_scheduled = False
        self._inbox_waiting = 0
        self._slice = max(1, min(SLICE_EVENTS, buffer_size // 2))
        self._pending = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._private_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._current: Subscription | None = None  # the subscription whose handler the loop is in
        self._watch = LoopWatch(self, loop_block_threshold_s)
        # metrics
        self._delivered = 0
        self._filtered = 0
        self._dropped = 0
        self._errors = 0
        self._degraded = 0
        self._filter_errors = 0
        self._loop_stalls = 0
        self._producer_waits = 0
        self._lost_reported = 0
        self._degraded_repeats = Repeats()
        self._handler_time = 0.0
        self._by_name: dict[str, int] = {}
        self._rate_samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)], maxlen=64)
        try:
            self._bind(asyncio.get_running_loop())
        except RuntimeError:
            pass

    # ---------------------------------------------------------------- properties
    @property
    def persistence_path(self) -> Path | None:
        return self._store.path if self._store else None

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop handlers run on (bound on first async use)."""
        return self._loop

    # ---------------------------------------------------------------- emitting
    async def emit(
        self,
        event_name: str,
        data: dict[str, Any] | None = None,
        *,
        source: str | None = None,
        correlation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Emit an event; returns once it is accepted (and queued for the log), never waiting for handlers."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop and not self._bind_if_free(loop):
            # Another loop owns the bus: hand the event over like a thread does.
            self._publish(self._make_event(event_name, data, source, correlation_id, metadata), THREAD)
            return
        if self._pending >= self.buffer_size:
            await asyncio.sleep(0)  # let backlogged handlers run before anything is dropped
        event = self._make_event(event_name, data, source, correlation_id, metadata)
        step = self._admit(event, False)
        if step == _DISPATCH:
            self._dispatch(event)
        elif step == _SCHEDULE:
            self._schedule_inbox(LOOP)

    def emit_sync(
        self,
        event_name: str,
        data: dict[str, Any] | None = None,
        *,
        source: str | None = None,
        correlation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Emit from any thread or plain function. With no running loop, delivers before returning.

        From a thread other than the loop's it may wait (at most ~1 s) for the loop to make room:
        backpressure, so a flood from threads can't starve the loop or its subscribers.
        """
        self._publish(self._make_event(event_name, data, source, correlation_id, metadata))

    def _refused(self, name: Any) -> EventBusError:
        """Why an emit is refused once `close()` has begun: nothing of it is counted, kept or written."""
        if self._closed:
            return EventBusError(f"cannot emit {name!r}: the event bus has been shut down")
        return EventBusError(f"cannot emit {name!r}: the event log {self.persistence_path} was closed (at exit)")

    def _make_event(self, name: Any, data: Any, source: str | None, correlation_id: str | None, metadata: Any) -> Event:
        """The bus's one event factory (every emit and the bus's own events): checked, captured, stamped.

        It fills `__dict__` directly (a frozen dataclass's __init__ costs ~0.8 µs) and stores only
        `_origin` (time, id prefix, number), from which `Event.__getattr__` makes the timestamp and id
        when they are first read. A closed bus refuses the event in `_admit`, under the admission lock.
        """
        if type(name) is not str or not name:
            if not isinstance(name, str) or not name:
                raise ValueError(f"event name must be a non-empty string, got {name!r}")
        if isinstance(data, dict):
            data = capture(data)
        else:
            data = {} if data is None else capture({"value": data})
        if metadata is not None or self._stamp is not None:
            stamp = self._stamp
            if not isinstance(metadata, dict):
                metadata = {} if metadata is None else {"value": metadata}
            metadata = capture({**stamp, **metadata} if stamp is not None else metadata)
        event = _new_object(Event)
        fields = event.__dict__
        fields["name"] = name
        fields["data"] = data
        fields["source"] = self.default_source if source is None else source
        if correlation_id is not None:  # else the class default, None
            fields["correlation_id"] = correlation_id
        if metadata is not None:
            fields["metadata"] = metadata
        fields["_origin"] = (_time_ns(), _ev._prefix, next(_ev._counter))
        return event

    def _publish(self, event: Event, mode: int | None = None) -> None:
        """Admit `event` and hand it to its handlers the way the calling thread allows."""
        if mode is None:
            loop = self._loop
            if loop is not None and loop.is_running():
                mode = LOOP if threading.get_ident() == self._loop_thread else THREAD
            else:
                try:
                    running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
                except RuntimeError:
                    running = None
                mode = LOOP if running is not None and self._bind_if_free(running) else NO_LOOP
        if mode == THREAD and len(self._inbox) >= INBOX_LIMIT:
            with self._lock:
                self._wait_for_room()
        step = self._admit(event, mode == THREAD)
        if step == _DISPATCH:
            if mode == LOOP:
                self._dispatch(event)
            else:
                self._deliver_now(event)
        elif step == _SCHEDULE:
            self._schedule_inbox(mode)

    # ---------------------------------------------------------------- accepting and routing
    def _admit(self, event: Event, from_thread: bool) -> int:
        """Filters, metrics, history and the log, in the emitting thread; then what delivery must do.

        One lock orders the log, the history and the delivery queue alike, so handlers see events
        in the order the log holds them.
        """
        if self._filters and not self._passes_filters(event):
            return _FILTERED
        store = self._store
        degraded = None
        if store is not None:
            line, degraded = encode_line(event)
        with self._mutex:
            name = event.name
            if self._closed or store is not None and not store.append_line_open(line):
                raise self._refused(name)
            by_name = self._by_name
            by_name[name] = by_name.get(name, 0) + 1
            self._history.append(event)
            if self._taps:
                self._tap(event)
            if from_thread or self._inbox:
                self._inbox.append(event)  # behind what threads queued earlier
                if self._inbox_scheduled:
                    step = _QUEUED
                else:
                    self._inbox_scheduled = True
                    step = _SCHEDULE
            else:
                step = _DISPATCH
        if degraded is not None:
            self._degraded_event(event, degraded)
        return step

    def _tap(self, event: Event) -> None:
        for tap in self._taps:
            try:
                tap(event)
            except Exception:  # noqa: BLE001 - a tap never stops admission; counted like a handler's failure
                self._errors += 1

    def add_tap(self, tap: Callable[[Event], None]) -> None:
        """Call `tap(event)` for every accepted event, in log order, under the admission lock.

        For recorders and publishers that must see exactly the log's order: a tap must be quick
        (every emitter waits on it) and must not emit; what it raises is counted in `handler_errors`.
        """
        self._taps = (*self._taps, tap)

    def remove_tap(self, tap: Callable[[Event], None]) -> bool:
        if tap not in self._taps:
            return False
        self._taps = tuple(t for t in self._taps if t != tap)
        return True

    def _passes_filters(self, event: Event) -> bool:
        if self._closed:  # refused whole, as admission would, not counted as filtered
            raise self._refused(event.name)
        for event_filter in list(self._filters):
            try:
                keep = event_filter.should_process(event)
            except Exception as exc:  # noqa: BLE001 - a broken filter must not lose data: it lets events through
                keep = True
                self._filter_errors += 1
                if id(event_filter) not in self._broken_filters:  # announced once per filter
                    self._broken_filters.add(id(event_filter))
                    self._emit_internal(ev.BUS_FILTER_ERROR, {
                        "filter": handler_name(type(event_filter)), "event_name": event.name,
                        "error": f"{type(exc).__name__}: {exc}", "policy": "fail_open",
                    })
            if not keep:
                with self._lock:
                    self._filtered += 1
                return False
        return True

    def _degraded_event(self, event: Event, reason: str) -> None:
        with self._lock:
            self._degraded += 1
            report, repeats = self._degraded_repeats.allow()
        if report and not event.name.startswith("bus."):
            self._emit_internal(ev.BUS_EVENT_DEGRADED, {
                "event_name": event.name, "event_id": event.id, "reason": reason, "repeats": repeats,
            }, correlation_id=event.correlation_id)

    def _emit_internal(self, name: str, data: dict[str, Any], correlation_id: str | None = None) -> None:
        """The bus's own `bus.*` events, from any thread; dropped silently once the bus is closed."""
        if self._closed:
            return
        try:
            self._publish(self._make_event(name, data, "bus", correlation_id, None))
        except RuntimeError:  # the log closed between the check and the write
            pass

    def _store_status(self, name: str, data: dict[str, Any]) -> None:
        # From the writer thread: persistence_failed / persistence_recovered.
        self._emit_internal(name, data)

    # ---------------------------------------------------------------- the loop
    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._routes.clear()
        self._watch.attach(loop)

    def _bind_if_free(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Adopt `loop` (the caller's running loop) unless another running loop already owns the bus."""
        current = self._loop
        if current is loop:
            return True
        if current is None or current.is_closed() or not current.is_running():
            self._bind(loop)
            if self._inbox:
                with self._lock:
                    self._inbox_scheduled = True
                self._drain_inbox()
            return True
        return False

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make the running loop (call from inside it) the one handlers run on."""
        self._bind(loop or asyncio.get_running_loop())

    def _loop_blocked(self, seconds: float, handler: str | None) -> None:
        self._loop_stalls += 1
        self._emit_internal(ev.BUS_LOOP_BLOCKED, {
            "seconds": round(seconds, 3),
            "handler": handler or "unknown (not a bus handler)",
        })

    # ---------------------------------------------------------------- subscribing
    async def subscribe(self, pattern: str, handler: EventHandler | AsyncEventHandler) -> str:
        """Subscribe `handler` (async or plain) to names matching the glob `pattern`."""
        self._check_open(f"subscribe to {pattern!r}")
        self._bind_if_free(asyncio.get_running_loop())
        return self.subscribe_sync(pattern, handler)

    def subscribe_sync(self, pattern: str, handler: EventHandler | AsyncEventHandler) -> str:
        self._check_open(f"subscribe to {pattern!r}")
        validate_pattern(pattern)
        compile_pattern(pattern)
        if not callable(handler):
            raise TypeError(f"handler for {pattern!r} is not callable")
        if len(self._subs) >= self.max_subscribers:
            raise SubscriptionLimitError(
                f"cannot subscribe to {pattern!r}: the bus already has {len(self._subs)} subscriptions "
                f"(max_subscribers={self.max_subscribers})"
            )
        sub = Subscription(f"sub-{next(_sub_ids)}", pattern, handler)
        self._subs[sub.id] = sub
        self._routes.clear()
        return sub.id

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise EventBusError(f"cannot {what}: the event bus has been shut down")

    async def unsubscribe(self, subscription_id: str) -> bool:
        return self.unsubscribe_sync(subscription_id)

    def unsubscribe_sync(self, subscription_id: str) -> bool:
        sub = self._subs.pop(subscription_id, None)
        if sub is None:
            return False
        self._pending -= len(sub.backlog)
        sub.backlog.clear()
        self._routes.clear()
        if self._pending <= 0 and self._idle_waiters:
            self._wake_idle()
        return True

    def add_filter(self, event_filter: EventFilter) -> None:
        if not hasattr(event_filter, "should_process"):
            raise TypeError("event filters need a should_process(event) -> bool method")
        self._filters.append(event_filter)

    def remove_filter(self, event_filter: EventFilter) -> bool:
        try:
            self._filters.remove(event_filter)
        except ValueError:
            return False
        return True

    # ---------------------------------------------------------------- flushing and closing
    async def flush(self, timeout: float | None = None) -> None:
        """Return once everything emitted so far (and what its handlers emitted) is delivered and persisted.

        Raises `PersistenceError` if accepted events could not be written (the message says how
        many, where and why) or the disk is still failing after `timeout` (default 5 s once a failure
        is seen), and `TimeoutError` naming the busy handlers if `timeout` passes first.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._bind_if_free(loop):
            try:
                await asyncio.wait_for(self._delivered_all(loop), timeout)
            except TimeoutError:
                busy = "; ".join(self.busy_handlers()) or "handlers still queued"
                raise TimeoutError(f"events not delivered within {timeout} s: {busy}") from None
        store = self._store
        if store is not None:
            target = store.accepted
            if deadline is None:
                deadline = loop.time() + _FAILING_GRACE_S if store.failing else None
            while True:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done = await loop.run_in_executor(None, store.wait_written, target, remaining)
                if done or not store.failing or loop.time() >= (deadline or loop.time() + _FAILING_GRACE_S):
                    break
                deadline = deadline or loop.time() + _FAILING_GRACE_S  # failing: wait a while for the retries
                await asyncio.sleep(0.05)
            self._raise_if_lost()
            if not done:
                if store.failing:
                    raise PersistenceError(
                        f"{store.pending} events not yet written to the event log: {store.last_error} "
                        f"(retrying; {store.written} written so far)"
                    )
                raise TimeoutError(f"{store.pending} events not yet written to {store.path} within {timeout} s")

    async def _delivered_all(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            if self._inbox:
                with self._lock:
                    self._inbox_scheduled = True
                self._drain_inbox()
                await asyncio.sleep(0)
                continue
            if self._pending <= 0:
                await asyncio.sleep(0)  # let just-finished drain tasks settle
                if self._pending <= 0 and not self._inbox:
                    return
                continue
            fut: asyncio.Future[None] = loop.create_future()
            self._idle_waiters.append(fut)
            await fut

    def _raise_if_lost(self) -> None:
        store = self._store
        if store is None or store.lost <= self._lost_reported:
            return
        newly = store.lost - self._lost_reported
        self._lost_reported = store.lost
        raise PersistenceError(
            f"{newly} accepted events could not be written to the event log: {store.last_error}"
            f" ({store.lost} lost in all, {store.written} written)"
        )

    async def shutdown(self, timeout: float | None = 5.0) -> None:
        """Flush, then stop: later emits raise EventBusError. Safe to call more than once.

        Handlers still busy after `timeout` seconds are abandoned (cancelled and announced as
        `bus.handler_abandoned`); raises `PersistenceError` if accepted events never reached the log.
        """
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await self.flush(timeout)
        except TimeoutError:
            self._abandon_busy()
        except PersistenceError:
            pass  # reported below, once the log is closed and the count is final
        remaining = None if deadline is None else max(1.0, deadline - loop.time())
        await loop.run_in_executor(None, self.close, remaining)
        self._raise_if_lost()

    def _abandon_busy(self) -> None:
        for sub in list(self._subs.values()):
            if not sub.scheduled:
                continue
            self._emit_internal(ev.BUS_HANDLER_ABANDONED, {
                "subscription_id": sub.id, "pattern": sub.pattern, "handler": handler_name(sub.handler),
                "event_name": sub.current.name if sub.current is not None else None,
                "undelivered": len(sub.backlog) + (sub.current is not None),
            })
            if sub.task is not None:
                sub.task.cancel()

    def close(self, timeout: float | None = 10.0) -> None:
        """Synchronous shutdown: persist what was accepted and stop (handlers still queued are skipped).

        A disk that keeps failing is retried until `timeout`; what is unwritten then is counted in
        `EventMetrics.lost_events`.
        """
        if self._closed:
            return
        if self._inbox and (self._loop is None or not self._loop.is_running()):
            self._drain_inbox(deliver_now=True)
        with self._mutex:  # an emit admitted before this is written; any later one is refused whole
            self._closed = True
        self._watch.stop()
        with self._lock:
            self._lock.notify_all()
        if self._store is not None:
            self._store.close(timeout)
        if self._private_loop is not None and not self._private_loop.is_running():
            self._private_loop.close()

    # ---------------------------------------------------------------- history
    async def get_correlated_events(self, correlation_id: str) -> list[Event]:
        """Every event carrying `correlation_id`, in emission order (from the log when persisting)."""
        if self._store is not None:
            if not self._closed:
                await self.flush()
            if not self._store.path.exists():
                return []
            from .index import open_index

            index = await asyncio.to_thread(open_index, self._store.path)
            found = await asyncio.to_thread(EventQuery().correlation_id(correlation_id).run_index, index,
                                            time_order=False)
            self.last_query_skipped = index.unreadable()
            return found
        return [e for e in self._history if e.correlation_id == correlation_id]

    async def query_events(self, query: EventQuery) -> list[Event]:
        """Events matching `query`: the whole persisted log across segments, else in-memory history.

        Lines of the log that could not be read are skipped; how many is in `last_query_skipped`.
        """
        if self._store is not None:
            if not self._closed:
                await self.flush()
            if not self._store.path.exists():
                return []
            if query.narrows_by_index():
                from .index import open_index

                index = await asyncio.to_thread(open_index, self._store.path)
                found = await asyncio.to_thread(query.run_index, index)
                self.last_query_skipped = index.unreadable()
                return found
            reader = read_events(self._store.path)
            found = await asyncio.to_thread(query.run_chunks, reader.chunks(), reader.skip)
            self.last_query_skipped = reader.malformed
            return found
        self.last_query_skipped = 0
        return query.run_events(list(self._history))

    last_query_skipped: int = 0

    @property
    def history(self) -> list[Event]:
        """The most recent accepted events held in memory, oldest first."""
        return list(self._history)



def create_default_event_bus(**overrides: Any) -> EventBus:
    """A bus with the project's defaults (no persistence unless asked)."""
    return EventBus(**overrides)

