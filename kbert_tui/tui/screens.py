"""Modal screens: an event's detail, a correlation timeline, a yes/no question, and help."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from kbert_tui.events import Event
from kbert_tui.state import FILTER_TERMS, EventLog, printable

from .keys import help_rows
from .log_view import LogView, format_time

__all__ = ["DetailScreen", "EventListScreen", "TimelineScreen", "ConfirmScreen", "HelpScreen", "event_json"]


LOG_FIELD_ORDER = ("id", "name", "timestamp", "source", "correlation_id", "data", "metadata")
DETAIL_DEPTH = 64  # levels of nesting shown; deeper values are cut with a marker (600 levels froze the screen)


def event_json(event: Event) -> str:
    """All fields of `event` as pretty JSON (datetimes in ISO form, other non-JSON values by repr),
    nested at most DETAIL_DEPTH levels."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}  # asdict recurses into data
    record = {key: fields[key] for key in LOG_FIELD_ORDER if key in fields} | fields  # as in events.jsonl
    return json.dumps(_capped(record, DETAIL_DEPTH), indent=2, ensure_ascii=False, allow_nan=True, default=_shown)


def _shown(value: Any) -> str:
    """A value JSON has no form for: a datetime in ISO form, anything else by its repr (even a failing one)."""
    if isinstance(value, datetime):
        return value.isoformat()
    try:
        return repr(value)
    except Exception as error:  # noqa: BLE001 - an object's own repr may raise; the detail view must not
        return f"<{type(value).__name__}: repr raised {type(error).__name__}>"


def _capped(value: Any, depth: int, path: tuple[int, ...] = ()) -> Any:
    """`value` with containers past `depth` levels (and ones that hold themselves) replaced by a note,
    and keys JSON can't take written as their repr; recursion stays within `depth`."""
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return value
    if id(value) in path:
        return f"… (refers to itself: a {type(value).__name__})"
    if depth <= 0:
        return f"… (a {type(value).__name__} nested deeper than {DETAIL_DEPTH} levels: not shown)"
    inner = (*path, id(value))
    if isinstance(value, dict):
        return {key if isinstance(key, (str, int, float, bool)) or key is None else _shown(key):
                _capped(item, depth - 1, inner) for key, item in value.items()}
    return [_capped(item, depth - 1, inner) for item in value]


def _literal(text: str) -> Text:
    """`text` with control characters made visible but line breaks kept."""
    return Text("\n".join(printable(line) for line in text.split("\n")))


class DetailScreen(ModalScreen[None]):
    """Every field of one event, as pretty JSON."""

    BINDINGS = [Binding("escape,q,enter", "dismiss", "Close"), Binding("c", "drill", "Correlation")]

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-box", classes="modal-box"):
            yield Label(Text(f"{format_time(self.event)}  {printable(self.event.name)}  "
                             f"from {printable(self.event.source)}"), classes="modal-title")
            with VerticalScroll(id="detail-scroll"):
                yield Static(_literal(event_json(self.event)), id="detail-json")
            tb = self.event.data.get("traceback") if isinstance(self.event.data, dict) else None
            hint = "Esc close · c correlation timeline"
            if isinstance(tb, str) and tb:
                hint += " · traceback is in data.traceback"
            yield Label(Text(hint), classes="modal-hint")

    def action_drill(self) -> None:
        app: Any = self.app
        self.dismiss()
        app.open_timeline(self.event)


class EventListScreen(ModalScreen[None]):
    """A list of events (its own `EventLog`) over the monitor: Enter opens one, Esc closes."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, log: EventLog, *, title: str, hint: str, timeline: bool = False,
                 select_id: str | None = None) -> None:
        super().__init__()
        self.events_log = log
        self.title_text = title
        self.hint_text = hint
        self.timeline = timeline
        self.select_id = select_id

    def compose(self) -> ComposeResult:
        with Vertical(id="timeline-box", classes="modal-box"):
            yield Label(Text(self.title_text), classes="modal-title")
            view = LogView(self.events_log, timeline=self.timeline, id="timeline-view")
            view.follow = False
            yield view
            yield Label(Text(self.hint_text), classes="modal-hint")

    def on_mount(self) -> None:
        view = self.query_one(LogView)
        view.sync()
        view.set_cursor(0)
        if self.select_id is not None:
            for seq in range(self.events_log.base, self.events_log.total):
                if self.events_log.get(seq).id == self.select_id:
                    self.call_after_refresh(view.go_to_seq, seq)
                    break
        view.focus()

    def on_log_view_opened(self, message: LogView.Opened) -> None:
        message.stop()
        self.app.push_screen(DetailScreen(self.events_log.get(message.seq)))


LEVELS = ("thread", "step", "epoch", "run")


class TimelineScreen(EventListScreen):
    """The selected event's thread: what caused it and what it caused, then (w widens) its training
    step, its epoch, the whole run (its correlation id); oldest first with time deltas."""

    BINDINGS = [Binding("w", "widen(1)", "Widen"), Binding("W", "widen(-1)", "Narrow")]

    def __init__(self, source: EventLog, seq: int, *, older_on_disk: int, level: str | None = None) -> None:
        self.source_log = source
        self.seq = seq
        self.older_on_disk = older_on_disk
        event = source.get(seq)
        self.level = level or LEVELS[0]
        if level is None:  # an event with no thread opens on the smallest group that holds others
            while len(source.scope(seq, self.level)) <= 1 and self.level != LEVELS[-1]:
                self.level = LEVELS[LEVELS.index(self.level) + 1]
        log, title = self._build()
        super().__init__(log, title=title, hint=self._hint(), timeline=True, select_id=event.id)
        self.correlation_id = event.correlation_id

    def _build(self) -> tuple[EventLog, str]:
        src = self.source_log
        seqs = src.scope(self.seq, self.level)
        seqs.sort(key=lambda s: (src.get(s).timestamp, s))  # by time, so the deltas read forwards
        log = EventLog(max(1, len(seqs)))
        log.extend(src.get(s) for s in seqs)
        event = src.get(self.seq)
        threads = src.threads
        where = {"thread": f"thread of {printable(event.name)}",
                 "step": f"step {threads.step(self.seq)} (epoch {threads.epoch(self.seq)})",
                 "epoch": f"epoch {threads.epoch(self.seq)}",
                 "run": f"correlation {printable(event.correlation_id or '—')}"}[self.level]
        title = f"{where} — {log.total:,} events"
        if log.total:
            first, last = log.get(0), log.get(log.total - 1)
            title += f" over {(last.timestamp - first.timestamp).total_seconds():,.3f}s"
        return log, title

    def _hint(self) -> str:
        at = LEVELS.index(self.level)
        parts = ["+t since first · Δ since previous"]
        if at + 1 < len(LEVELS):
            parts.append(f"w widens to the {LEVELS[at + 1]}")
        if at > 0:
            parts.append(f"W narrows to the {LEVELS[at - 1]}")
        parts.append("Enter detail · Esc close")
        if self.older_on_disk:
            parts.append(f"{self.older_on_disk:,} older events are only on disk (o searches them)")
        return " · ".join(parts)

    def action_widen(self, step: int) -> None:
        at = LEVELS.index(self.level) + step
        if not 0 <= at < len(LEVELS):
            return
        self.level = LEVELS[at]
        log, title = self._build()
        self.events_log = log
        view = self.query_one(LogView)
        view.events_log = log
        view.clear_caches()
        view.sync()
        self.query_one(".modal-title", Label).update(Text(title))
        self.query_one(".modal-hint", Label).update(Text(self._hint()))
        event_id = self.source_log.get(self.seq).id
        for seq in range(log.base, log.total):
            if log.get(seq).id == event_id:
                view.go_to_seq(seq)
                break


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; y/Enter answers yes, n/Esc no."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="modal-box"):
            yield Label(Text(self.question), id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button(f"{self.no} (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


HELP_KEYS = help_rows("all")
HELP_REPLAY = help_rows("replay")
HELP_EXAMPLES = 'training.* loss<0.3   !system.*   source:plugin:* error   corr:run-1 "new best"'


def _key_table(rows: tuple[tuple[str, str], ...], width: int) -> Table:
    """Key/description pairs in two side-by-side columns when `width` allows, else one; a long
    description wraps inside its own column, never under the keys."""
    pairs = 2 if width >= 100 else 1
    table = Table.grid(padding=(0, 2, 0, 0), expand=True)
    for _ in range(pairs):
        table.add_column(no_wrap=True, style="bold")
        table.add_column(ratio=1)
    per = -(-len(rows) // pairs)
    for i in range(per):
        cells: list[str] = []
        for col in range(pairs):
            j = col * per + i
            cells.extend(rows[j] if j < len(rows) else ("", ""))
        table.add_row(*(Text(cell) for cell in cells))
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and the filter syntax."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        width = self.app.size.width
        with VerticalScroll(id="help-box", classes="modal-box"):
            yield Label(Text("Keys"), classes="modal-title")
            yield Static(_key_table(HELP_KEYS, width))
            yield Label(Text("Replay"), classes="modal-title")
            yield Static(_key_table(HELP_REPLAY, width))
            yield Label(Text("Filter syntax (terms AND together)"), classes="modal-title")
            yield Static(_key_table(FILTER_TERMS, width))
            yield Label(Text("Examples: " + HELP_EXAMPLES), classes="modal-hint")
