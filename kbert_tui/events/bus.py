"""The EventBus: emit from anywhere, deliver on one asyncio loop, persist every accepted event.

Delivery model: each subscription owns a FIFO backlog drained by its own short-lived task, so a slow
handler delays nobody else and every handler sees events in emission order (per emitting thread).
Threads hand events to the loop through one lock-free inbox that is drained in batches.

Backlog policy: a subscription's backlog holds at most `buffer_size` events. An `await emit(...)` that
finds the bus that far behind first yields once to the loop so the handlers can catch up; if a
backlog is still full, its *oldest* undelivered event is dropped for that subscription only. Drops are
counted (`EventMetrics.dropped_events`) and announced: `bus.subscriber_overflow` when a subscription
starts dropping, `bus.subscriber_recovered` {dropped} once its backlog has drained. The history and the
persisted log never drop an accepted event.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

from ._event import Event, new_event_id, utcnow
from ._patterns import compile_pattern, validate_pattern
from ._query import EventQuery
from .store import JsonlStore, read_events

EventHandler: TypeAlias = Callable[[Event], Any]
AsyncEventHandler: TypeAlias = Callable[[Event], Awaitable[Any]]

_RATE_WINDOW_S = 10


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


@dataclass(frozen=True, slots=True)
class EventMetrics:
    """A snapshot of what the bus has done."""

    total_events: int
    events_per_second: float
    avg_processing_time_ms: float
    events_by_name: dict[str, int] = field(default_factory=dict)
    delivered_events: int = 0
    filtered_events: int = 0
    dropped_events: int = 0
    handler_errors: int = 0
    subscriber_count: int = 0
    queue_depth: int = 0
    persisted_events: int = 0
    persistence_errors: int = 0


class _Subscription:
    __slots__ = ("id", "pattern", "handler", "is_async", "backlog", "scheduled", "dropped",
                 "episode_dropped", "overflowing", "active")

    def __init__(self, sub_id: str, pattern: str, handler: Callable[[Event], Any]) -> None:
        self.id = sub_id
        self.pattern = pattern
        self.handler = handler
        self.is_async = _is_async_callable(handler)
        self.backlog: deque[Event] = deque()
        self.scheduled = False
        self.dropped = 0
        self.episode_dropped = 0
        self.overflowing = False
        self.active = True


def _is_async_callable(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler) or asyncio.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


_sub_ids = itertools.count(1)
_build_event = Event._build
_new_object = object.__new__
_now = datetime.now
_UTC = timezone.utc


class EventBus:
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
    ) -> None:
        if max_subscribers < 1:
            raise ValueError("max_subscribers must be at least 1")
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.max_subscribers = max_subscribers
        self.buffer_size = buffer_size
        self.default_source = default_source
        self._subs: dict[str, _Subscription] = {}
        self._routes: dict[str, tuple[_Subscription, ...]] = {}
        self._filters: list[EventFilter] = []
        self._history: deque[Event] = deque(maxlen=history_size or max(buffer_size, 10000))
        self._store: JsonlStore | None = None
        if enable_persistence or persistence_path is not None:
            self._store = JsonlStore(persistence_path or "events.jsonl", max_file_size_mb=float(max_file_size_mb))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._inbox: deque[Event] = deque()
        self._inbox_scheduled = False
        self._pending = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._private_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # metrics
        self._total = 0
        self._delivered = 0
        self._filtered = 0
        self._dropped = 0
        self._errors = 0
        self._handler_time = 0.0
        self._by_name: dict[str, int] = {}
        self._admitted = 0
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
        """Emit an event; returns once it is accepted, never waiting for handlers."""
        event = self._make_event(event_name, data, source, correlation_id, metadata)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if not self._bind_if_free(loop):
                self._post_from_thread(event)  # another loop owns the bus: hand it over like a thread
                return
        if self._pending >= self.buffer_size:
            await asyncio.sleep(0)  # let backlogged handlers run before anything is dropped
        self._accept(event)

    def emit_sync(
        self,
        event_name: str,
        data: dict[str, Any] | None = None,
        *,
        source: str | None = None,
        correlation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Emit from any thread or plain function. With no running loop, delivers before returning."""
        event = self._make_event(event_name, data, source, correlation_id, metadata)
        loop = self._loop
        if loop is not None and loop.is_running():
            if threading.get_ident() == self._loop_thread:
                self._accept(event)
            else:
                self._post_from_thread(event)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and self._bind_if_free(running):
            self._accept(event)
            return
        self._deliver_now(event)

    def _make_event(self, name: Any, data: Any, source: Any, correlation_id: Any, metadata: Any) -> Event:
        if self._closed:
            raise EventBusError(f"cannot emit {name!r}: the event bus has been shut down")
        if type(name) is not str or not name:
            if not isinstance(name, str) or not name:
                raise ValueError(f"event name must be a non-empty string, got {name!r}")
        if type(data) is not dict:
            data = {} if data is None else data if isinstance(data, dict) else {"value": data}
        self._total += 1
        # Event._build, inlined: this is the hottest line of the project.
        event = _new_object(Event)
        fields = event.__dict__
        fields["name"] = name
        fields["data"] = data
        fields["timestamp"] = _now(_UTC)
        fields["source"] = self.default_source if source is None else source
        fields["correlation_id"] = correlation_id
        fields["metadata"] = {} if metadata is None else metadata
        fields["id"] = new_event_id()
        return event

    def _post_from_thread(self, event: Event) -> None:
        self._inbox.append(event)
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:  # the loop closed under us: deliver here rather than lose it
                self._inbox_scheduled = False
                self._drain_inbox(deliver_now=True)

    def _drain_inbox(self, deliver_now: bool = False) -> None:
        self._inbox_scheduled = False
        inbox = self._inbox
        accept = self._deliver_now if deliver_now else self._accept
        while inbox:
            accept(inbox.popleft())

    # ---------------------------------------------------------------- accepting and routing
    def _admit(self, event: Event) -> bool:
        """Filters, metrics, history and persistence; False if a filter rejected the event."""
        if self._filters:
            for event_filter in self._filters:
                try:
                    keep = event_filter.should_process(event)
                except Exception:
                    keep = True  # a broken filter must not lose data
                if not keep:
                    self._filtered += 1
                    return False
        name = event.name
        by_name = self._by_name
        by_name[name] = by_name.get(name, 0) + 1
        self._admitted += 1
        self._history.append(event)
        if self._store is not None:
            self._store.append(event)
        return True

    def _route(self, name: str) -> tuple[_Subscription, ...]:
        subs = self._routes.get(name)
        if subs is None:
            subs = tuple(s for s in self._subs.values() if compile_pattern(s.pattern)(name))
            if len(self._routes) > 10000:
                self._routes.clear()
            self._routes[name] = subs
        return subs

    def _accept(self, event: Event) -> None:
        """On the loop's thread: admit the event and queue it for each matching subscription."""
        if not self._admit(event):
            return
        subs = self._routes.get(event.name)
        if subs is None:
            subs = self._route(event.name)
        limit = self.buffer_size
        loop = self._loop
        for sub in subs:
            backlog = sub.backlog
            if len(backlog) >= limit:
                self._overflow(sub)
            backlog.append(event)
            self._pending += 1
            if not sub.scheduled:
                sub.scheduled = True
                loop.create_task(self._drain(sub))  # type: ignore[union-attr]

    def _overflow(self, sub: _Subscription) -> None:
        sub.backlog.popleft()
        self._pending -= 1
        sub.dropped += 1
        sub.episode_dropped += 1
        self._dropped += 1
        if not sub.overflowing:
            sub.overflowing = True
            self._emit_internal("bus.subscriber_overflow", {
                "subscription_id": sub.id, "pattern": sub.pattern,
                "buffer_size": self.buffer_size, "policy": "drop_oldest",
            })

    async def _drain(self, sub: _Subscription) -> None:
        backlog = sub.backlog
        handler = sub.handler
        is_async = sub.is_async
        delivered = 0
        started = time.perf_counter()  # timed per batch: the handlers' share of the loop
        try:
            while backlog:
                event = backlog.popleft()
                try:
                    result = handler(event)
                    if is_async or (result is not None and inspect.isawaitable(result)):
                        await result
                except Exception as exc:  # noqa: BLE001 - a handler never stops the bus
                    self._handler_failed(sub, event, exc)
                delivered += 1
                self._pending -= 1
        finally:
            self._handler_time += time.perf_counter() - started
            self._delivered += delivered
            self._sample_rate()
            sub.scheduled = False
            if sub.overflowing and not backlog:
                sub.overflowing = False
                dropped, sub.episode_dropped = sub.episode_dropped, 0
                if not self._closed:
                    self._emit_internal("bus.subscriber_recovered", {
                        "subscription_id": sub.id, "pattern": sub.pattern, "dropped": dropped,
                    })
            if self._pending <= 0 and self._idle_waiters:
                self._wake_idle()

    def _handler_failed(self, sub: _Subscription, event: Event, exc: BaseException) -> None:
        self._errors += 1
        if event.name == "bus.handler_error" or self._closed:
            return  # a failing error handler must not feed itself
        self._emit_internal("bus.handler_error", {
            "subscription_id": sub.id,
            "pattern": sub.pattern,
            "event_name": event.name,
            "event_id": event.id,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
        }, correlation_id=event.correlation_id)

    def _emit_internal(self, name: str, data: dict[str, Any], correlation_id: str | None = None) -> None:
        self._total += 1
        event = _build_event(name, data, utcnow(), "bus", correlation_id, {}, new_event_id())
        if self._loop is not None and self._loop.is_running() and threading.get_ident() == self._loop_thread:
            self._accept(event)
        else:
            self._deliver_now(event)

    def _deliver_now(self, event: Event) -> None:
        """No loop to hand over to: deliver synchronously in the caller's thread."""
        if not self._admit(event):
            return
        for sub in self._route(event.name):
            started = time.perf_counter()
            try:
                result = sub.handler(event)
                if sub.is_async or (result is not None and inspect.isawaitable(result)):
                    self._run_private(result)
            except Exception as exc:  # noqa: BLE001
                self._handler_failed(sub, event, exc)
            self._handler_time += time.perf_counter() - started
            self._delivered += 1

    def _run_private(self, awaitable: Awaitable[Any]) -> None:
        if self._private_loop is None or self._private_loop.is_closed():
            self._private_loop = asyncio.new_event_loop()
        if self._private_loop.is_running():  # re-entered from a handler on the private loop
            asyncio.ensure_future(awaitable, loop=self._private_loop)
            return
        self._private_loop.run_until_complete(awaitable)

    # ---------------------------------------------------------------- the loop
    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._routes.clear()

    def _bind_if_free(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Adopt `loop` (the caller's running loop) unless another running loop already owns the bus."""
        current = self._loop
        if current is loop:
            return True
        if current is None or current.is_closed() or not current.is_running():
            self._bind(loop)
            if self._inbox:
                self._drain_inbox()
            return True
        return False

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make the running loop (call from inside it) the one handlers run on."""
        self._bind(loop or asyncio.get_running_loop())

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # ---------------------------------------------------------------- subscribing
    async def subscribe(self, pattern: str, handler: EventHandler | AsyncEventHandler) -> str:
        """Subscribe `handler` (async or plain) to names matching the glob `pattern`."""
        self._bind_if_free(asyncio.get_running_loop())
        return self.subscribe_sync(pattern, handler)

    def subscribe_sync(self, pattern: str, handler: EventHandler | AsyncEventHandler) -> str:
        validate_pattern(pattern)
        compile_pattern(pattern)
        if not callable(handler):
            raise TypeError(f"handler for {pattern!r} is not callable")
        if len(self._subs) >= self.max_subscribers:
            raise SubscriptionLimitError(
                f"cannot subscribe to {pattern!r}: the bus already has {len(self._subs)} subscriptions "
                f"(max_subscribers={self.max_subscribers})"
            )
        sub = _Subscription(f"sub-{next(_sub_ids)}", pattern, handler)
        self._subs[sub.id] = sub
        self._routes.clear()
        return sub.id

    async def unsubscribe(self, subscription_id: str) -> bool:
        return self.unsubscribe_sync(subscription_id)

    def unsubscribe_sync(self, subscription_id: str) -> bool:
        sub = self._subs.pop(subscription_id, None)
        if sub is None:
            return False
        sub.active = False
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
    async def flush(self) -> None:
        """Return once everything emitted so far (and what its handlers emitted) is delivered and persisted."""
        loop = asyncio.get_running_loop()
        if self._bind_if_free(loop):
            while True:
                if self._inbox:
                    self._drain_inbox()
                if self._pending <= 0:
                    await asyncio.sleep(0)  # let just-finished drain tasks settle
                    if self._pending <= 0 and not self._inbox:
                        break
                    continue
                fut: asyncio.Future[None] = loop.create_future()
                self._idle_waiters.append(fut)
                await fut
        if self._store is not None:
            store = self._store
            target = store._enqueued
            await asyncio.get_running_loop().run_in_executor(None, store.wait_written, target)

    async def shutdown(self) -> None:
        """Flush, then stop: later emits raise EventBusError. Safe to call more than once."""
        if self._closed:
            return
        await self.flush()
        self.close()

    def close(self) -> None:
        """Synchronous shutdown: persist what was accepted and stop (handlers still queued are skipped)."""
        if self._closed:
            return
        if self._inbox and (self._loop is None or not self._loop.is_running()):
            self._drain_inbox(deliver_now=True)
        self._closed = True
        if self._store is not None:
            self._store.close()
        if self._private_loop is not None and not self._private_loop.is_running():
            self._private_loop.close()

    # ---------------------------------------------------------------- history
    async def get_correlated_events(self, correlation_id: str) -> list[Event]:
        """Every event carrying `correlation_id`, in emission order (from the log when persisting)."""
        if self._store is not None:
            if not self._closed:
                await self.flush()
            reader = read_events(self._store.path) if self._store.path.exists() else None
            if reader is None:
                return []
            query = EventQuery().correlation_id(correlation_id)
            return await asyncio.to_thread(query.run, reader.raw_lines(), reader.skip, time_order=False)
        return [e for e in self._history if e.correlation_id == correlation_id]

    async def query_events(self, query: EventQuery) -> list[Event]:
        """Events matching `query`: the whole persisted log across segments, else in-memory history."""
        if self._store is not None:
            if not self._closed:
                await self.flush()
            if not self._store.path.exists():
                return []
            reader = read_events(self._store.path)
            return await asyncio.to_thread(query.run, reader.raw_lines(), reader.skip)
        return query.run_events(list(self._history))

    @property
    def history(self) -> list[Event]:
        """The most recent accepted events held in memory, oldest first."""
        return list(self._history)

    # ---------------------------------------------------------------- metrics
    def _sample_rate(self) -> None:
        """Remember (time, admitted) at most every 0.25 s, for the rate over the last ~10 s."""
        now = time.monotonic()
        if now - self._rate_samples[-1][0] >= 0.25:
            self._rate_samples.append((now, self._admitted))

    def _events_per_second(self) -> float:
        now = time.monotonic()
        base_time, base_count = self._rate_samples[-1]
        for sample_time, sample_count in self._rate_samples:
            if now - sample_time <= _RATE_WINDOW_S:
                base_time, base_count = sample_time, sample_count
                break
        self._sample_rate()
        elapsed = now - base_time
        return (self._admitted - base_count) / max(elapsed, 1e-3)

    def metrics(self) -> EventMetrics:
        rate = self._events_per_second()
        store = self._store
        return EventMetrics(
            total_events=self._total,
            events_per_second=float(rate),
            avg_processing_time_ms=(self._handler_time / self._delivered * 1000.0) if self._delivered else 0.0,
            events_by_name=dict(self._by_name),
            delivered_events=self._delivered,
            filtered_events=self._filtered,
            dropped_events=self._dropped,
            handler_errors=self._errors,
            subscriber_count=len(self._subs),
            queue_depth=self._pending + len(self._inbox),
            persisted_events=store.written if store else 0,
            persistence_errors=store.write_errors if store else 0,
        )

    async def get_metrics(self) -> EventMetrics:
        return self.metrics()


def create_default_event_bus(**overrides: Any) -> EventBus:
    """A bus with the project's defaults (no persistence unless asked)."""
    return EventBus(**overrides)
