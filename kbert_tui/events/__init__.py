"""The kbert-tui event system: an asyncio event bus with thread-safe emission and a JSONL log.

Everything that happens in a run is an `Event` on an `EventBus`; see the README for the JSONL format.
"""

from ._event import Event
from ._metrics import EventMetrics
from ._query import EventQuery
from .store import PersistenceError
from .bus import (
    AsyncEventHandler,
    EventBus,
    EventBusError,
    EventFilter,
    EventHandler,
    EventSubscriber,
    SubscriptionLimitError,
    create_default_event_bus,
)

__all__ = [
    "AsyncEventHandler",
    "Event",
    "EventBus",
    "EventBusError",
    "EventFilter",
    "EventHandler",
    "EventMetrics",
    "EventQuery",
    "EventSubscriber",
    "PersistenceError",
    "SubscriptionLimitError",
    "create_default_event_bus",
]
