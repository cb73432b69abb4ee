"""Delivery: each subscription's backlog drained by its own task, and reports of handlers that fail.

Each subscription owns a FIFO backlog drained by its own short-lived task, so a slow handler delays
nobody else and every handler sees events in emission order (per emitting thread).

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
import time
import traceback
from collections.abc import Awaitable
from typing import Any

from . import catalog as ev
from ._event import Event
from ._metrics import Metrics
from ._patterns import compile_pattern
from ._subscription import ERROR_BURST, Subscription, handler_name

__all__ = ["Delivery"]


class Delivery(Metrics):
    """Routes admitted events to subscriptions' backlogs and runs their handlers (state set by `EventBus.__init__`)."""

    buffer_size: int
    _routes: dict[str, tuple[Subscription, ...]]
    _loop: asyncio.AbstractEventLoop | None
    _private_loop: asyncio.AbstractEventLoop | None
    _idle_waiters: list[asyncio.Future[None]]
    _closed: bool
    _current: Subscription | None

    def _emit_internal(self, name: str, data: dict[str, Any], correlation_id: str | None = None) -> None:
        raise NotImplementedError  # the bus's own bus.* events: EventBus._emit_internal

    def _route(self, name: str) -> tuple[Subscription, ...]:
        subs = self._routes.get(name)
        if subs is None:
            subs = tuple(s for s in self._subs.values() if compile_pattern(s.pattern)(name))
            if len(self._routes) > 10000:
                self._routes.clear()
            self._routes[name] = subs
        return subs

    def _dispatch(self, event: Event) -> None:
        """On the loop's thread: queue an admitted event for each matching subscription."""
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
                sub.task = loop.create_task(self._drain(sub))  # type: ignore[union-attr]

    def _overflow(self, sub: Subscription) -> None:
        sub.backlog.popleft()
        self._pending -= 1
        sub.dropped += 1
        sub.episode_dropped += 1
        self._dropped += 1
        if not sub.overflowing:
            sub.overflowing = True
            self._emit_internal(ev.BUS_SUBSCRIBER_OVERFLOW, {
                "subscription_id": sub.id, "pattern": sub.pattern,
                "buffer_size": self.buffer_size, "policy": "drop_oldest",
            })

    async def _drain(self, sub: Subscription) -> None:
        backlog = sub.backlog
        handler = sub.handler
        is_async = sub.is_async
        delivered = 0
        started = time.perf_counter()  # timed per batch: the handlers' share of the loop
        try:
            while backlog:
                event = backlog.popleft()
                sub.current = event
                self._current = sub
                try:
                    result = handler(event)
                    if is_async or (result is not None and inspect.isawaitable(result)):
                        await result
                except Exception as exc:  # noqa: BLE001 - a handler never stops the bus
                    self._handler_failed(sub, event, exc)
                delivered += 1
                self._pending -= 1
        finally:
            sub.current = None
            sub.task = None
            self._handler_time += time.perf_counter() - started
            self._delivered += delivered
            self._sample_rate()
            sub.scheduled = False
            if sub.overflowing and not backlog:
                sub.overflowing = False
                dropped, sub.episode_dropped = sub.episode_dropped, 0
                if not self._closed:
                    self._emit_internal(ev.BUS_SUBSCRIBER_RECOVERED, {
                        "subscription_id": sub.id, "pattern": sub.pattern, "dropped": dropped,
                    })
            if self._pending <= 0 and self._idle_waiters and not self._inbox:
                self._wake_idle()

    def _handler_failed(self, sub: Subscription, event: Event, exc: BaseException) -> None:
        self._errors += 1
        if event.name == ev.BUS_HANDLER_ERROR or self._closed:
            return  # a failing error handler must not feed itself
        report, repeats = sub.errors.allow()
        if not report:
            return
        data: dict[str, Any] = {
            "subscription_id": sub.id,
            "pattern": sub.pattern,
            "handler": handler_name(sub.handler),
            "event_name": event.name,
            "event_id": event.id,
            "error": f"{type(exc).__name__}: {exc}",
            "repeats": repeats,
            "errors_so_far": sub.errors.count,
        }
        if sub.errors.count <= ERROR_BURST:
            data["traceback"] = "".join(traceback.format_exception(exc))
        self._emit_internal(ev.BUS_HANDLER_ERROR, data, correlation_id=event.correlation_id)

    def _deliver_now(self, event: Event) -> None:
        """No loop to hand over to: deliver synchronously in the caller's thread."""
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

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def busy_handlers(self) -> list[str]:
        """Handlers in the middle of an event right now, described (for 'gave up waiting on …')."""
        return [f"{sub.describe()} handling {sub.current.name}" for sub in list(self._subs.values())
                if sub.current is not None]
