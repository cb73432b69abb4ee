"""What the bus counts, and the `EventMetrics` snapshot it reports."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ._event import Event
from ._subscription import Subscription
from .store import JsonlStore

__all__ = ["EventMetrics", "Metrics"]

_RATE_WINDOW_S = 10


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
    lost_events: int = 0
    pending_writes: int = 0
    degraded_events: int = 0
    filter_errors: int = 0
    loop_stalls: int = 0
    producer_waits: int = 0


class Metrics:
    """The bus's counters (set by `EventBus.__init__`) and the snapshot made from them."""

    _subs: dict[str, Subscription]
    _store: JsonlStore | None
    _mutex: threading.Lock
    _inbox: deque[Event]
    _pending: int
    _by_name: dict[str, int]
    _rate_samples: deque[tuple[float, int]]
    _delivered: int
    _filtered: int
    _dropped: int
    _errors: int
    _degraded: int
    _filter_errors: int
    _loop_stalls: int
    _producer_waits: int
    _handler_time: float

    def _admitted(self) -> int:
        """Events accepted so far (the per-name counts are the only per-event tally kept)."""
        with self._mutex:
            return sum(self._by_name.values())

    def _sample_rate(self) -> None:
        """Remember (time, admitted) at most every 0.25 s, for the rate over the last ~10 s."""
        now = time.monotonic()
        if now - self._rate_samples[-1][0] >= 0.25:
            self._rate_samples.append((now, self._admitted()))

    def _events_per_second(self) -> float:
        now = time.monotonic()
        base_time, base_count = self._rate_samples[-1]
        for sample_time, sample_count in self._rate_samples:
            if now - sample_time <= _RATE_WINDOW_S:
                base_time, base_count = sample_time, sample_count
                break
        self._sample_rate()
        elapsed = now - base_time
        return (self._admitted() - base_count) / max(elapsed, 1e-3)

    def metrics(self) -> EventMetrics:
        rate = self._events_per_second()
        store = self._store
        return EventMetrics(
            total_events=self._admitted() + self._filtered,
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
            persistence_errors=store.failed_writes if store else 0,
            lost_events=store.lost if store else 0,
            pending_writes=store.pending if store else 0,
            degraded_events=self._degraded,
            filter_errors=self._filter_errors,
            loop_stalls=self._loop_stalls,
            producer_waits=self._producer_waits,
        )

    async def get_metrics(self) -> EventMetrics:
        return self.metrics()
