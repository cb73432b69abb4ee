"""Pure reducers and indexes behind the monitor: events in, what the panes show out (no Textual here)."""

from .filter import FILTER_HELP, FILTER_TERMS, EventMatcher, FilterSyntaxError, event_text, parse_filter
from .log_index import DEFAULT_CAPACITY, EventLog
from .run_state import Notice, PluginInfo, PluginsState, RunState, Series, SystemState, TrainingState
from .summary import KINDS, count_of, event_kind, format_number, printable, summarize

__all__ = [
    "DEFAULT_CAPACITY",
    "FILTER_HELP",
    "FILTER_TERMS",
    "KINDS",
    "EventLog",
    "EventMatcher",
    "FilterSyntaxError",
    "Notice",
    "PluginInfo",
    "PluginsState",
    "RunState",
    "Series",
    "SystemState",
    "TrainingState",
    "event_kind",
    "event_text",
    "count_of",
    "format_number",
    "parse_filter",
    "printable",
    "summarize",
]
