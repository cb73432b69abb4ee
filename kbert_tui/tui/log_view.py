"""The event log pane: a Line-API ScrollView over `EventLog`, drawing only the rows on screen."""

from __future__ import annotations

import re

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from kbert_tui.events import Event
from kbert_tui.state import EventLog, event_kind, printable, summarize

from .render import palette

__all__ = ["LogView", "format_time"]

MAX_NAME_W = 32
SUMMARY_MIN_W = 16


def format_time(event: Event) -> str:
    return event.timestamp.strftime("%H:%M:%S.") + f"{event.timestamp.microsecond // 1000:03d}"


class _ViewMessage(Message):
    """A message from a LogView about itself."""

    def __init__(self, view: LogView) -> None:
        super().__init__()
        self.view = view

    @property
    def control(self) -> LogView:
        return self.view


class LogView(ScrollView, can_focus=True):
    """Rows of events, newest at the bottom; a cursor row; optional follow and a frozen (paused) view.

    `row_source` is the `EventLog`; `delta_base` (for the correlation timeline) adds a "+Δ" column.
    """

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("enter", "open", "Detail", show=False),
    ]

    DEFAULT_CSS = """
    LogView { overflow-y: scroll; overflow-x: hidden; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)
    # what the view follows: watched, so whoever shows the view's state (the status line) hears of a change
    follow: reactive[bool] = reactive(True, repaint=False, init=False)
    frozen_at: reactive[int | None] = reactive(None, repaint=False, init=False)  # rows at or after it are hidden

    class ViewChanged(_ViewMessage):
        """`follow` or `frozen_at` changed (the status line says both)."""

    class Opened(_ViewMessage):
        """Enter (or double-click) on a row."""

        def __init__(self, view: LogView, seq: int) -> None:
            super().__init__(view)
            self.seq = seq

    class Moved(_ViewMessage):
        """The cursor moved by a user action (so the app can leave follow mode)."""

    def __init__(self, log: EventLog, *, timeline: bool = False, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.events_log = log
        self.timeline = timeline
        self._rows = 0
        self._name_w = 24
        self._summary: LRUCache[int, str] = LRUCache(4096)
        self._strips: LRUCache[tuple[int, int, bool, bool, int], Strip] = LRUCache(2048)

    def watch_follow(self) -> None:
        self.post_message(self.ViewChanged(self))

    def watch_frozen_at(self) -> None:
        self.post_message(self.ViewChanged(self))

    # -- data --------------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return self._rows

    def sync(self) -> None:
        """Pick up new events / a new filter; keep the cursor on its event, or at the end when following."""
        old_rows = self._rows
        rows = len(self.events_log) if self.frozen_at is None else self.events_log.rows_before(self.frozen_at)
        self._rows = rows
        width = self.scrollable_content_region.width or self.size.width
        self.virtual_size = Size(width, rows)
        if self.follow and self.frozen_at is None:
            if rows:
                self.set_cursor(rows - 1, scroll=False)
            self.scroll_to(y=max(0, rows - self.scrollable_content_region.height), animate=False,
                           immediate=True)
        elif rows != old_rows:
            self.set_cursor(min(self.cursor, max(0, rows - 1)), scroll=False)
        self.refresh()

    def reset_filter(self, keep_seq: int | None) -> None:
        """After the filter changed: clear caches, keep `keep_seq` (or the nearest event) under the cursor."""
        self._strips.clear()
        self._rows = len(self.events_log) if self.frozen_at is None else self.events_log.rows_before(self.frozen_at)
        self.virtual_size = Size(self.scrollable_content_region.width or self.size.width, self._rows)
        if self.follow or keep_seq is None:
            self.sync()
            return
        row = self.events_log.nearest_row(keep_seq)
        self.set_cursor(min(row, max(0, self._rows - 1)))
        self.refresh()

    def selected_seq(self) -> int | None:
        if not self._rows:
            return None
        try:
            return self.events_log.seq_at(min(self.cursor, self._rows - 1))
        except IndexError:
            return None

    def selected_event(self) -> Event | None:
        seq = self.selected_seq()
        return None if seq is None else self.events_log.get(seq)

    def set_cursor(self, row: int, *, scroll: bool = True) -> None:
        row = min(max(row, 0), max(0, self._rows - 1))
        self.cursor = row
        if scroll:
            height = self.scrollable_content_region.height or 1
            top = int(self.scroll_y)
            if row < top:
                self.scroll_to(y=row, animate=False, immediate=True)
            elif row >= top + height:
                self.scroll_to(y=row - height + 1, animate=False, immediate=True)
        self.refresh()

    def go_to_seq(self, seq: int) -> bool:
        row = self.events_log.row_of(seq)
        if row is None or row >= self._rows:
            return False
        self.set_cursor(row)
        return True

    # -- actions -----------------------------------------------------------------------------------
    def _user_moved(self) -> None:
        self.post_message(self.Moved(self))

    def action_cursor(self, delta: int) -> None:
        self.set_cursor(self.cursor + delta)
        self._user_moved()

    def action_page(self, direction: int) -> None:
        self.set_cursor(self.cursor + direction * max(1, self.scrollable_content_region.height - 1))
        self._user_moved()

    def action_edge(self, end: int) -> None:
        self.set_cursor(self._rows - 1 if end else 0)
        if not end:
            self._user_moved()

    def action_open(self) -> None:
        seq = self.selected_seq()
        if seq is not None:
            self.post_message(self.Opened(self, seq))

    def on_click(self, event: events.Click) -> None:
        row = int(self.scroll_y) + event.y
        if 0 <= row < self._rows:
            self.set_cursor(row, scroll=False)
            self._user_moved()
            if event.chain >= 2:
                self.action_open()

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._user_moved()

    # -- drawing -----------------------------------------------------------------------------------
    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    def clear_caches(self) -> None:
        self._strips.clear()
        self._summary.clear()

    def summary(self, seq: int, event: Event) -> str:
        text = self._summary.get(seq)
        if text is None:
            text = summarize(event)[:400]
            self._summary[seq] = text
        return text

    def render_lines(self, crop: Region) -> list[Strip]:
        self._name_w = self._visible_name_width()
        return super().render_lines(crop)

    def _visible_name_width(self) -> int:
        """The longest event name among the rows on screen: names are never cut while the summary has room."""
        top = int(self.scroll_y)
        end = min(self._rows, top + max(1, self.scrollable_content_region.height))
        log = self.events_log
        longest = 12
        for row in range(top, end):
            try:
                longest = max(longest, len(log.get(log.seq_at(row)).name))
            except IndexError:
                break
        return min(longest, MAX_NAME_W)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        row = int(self.scroll_y) + y
        if row >= self._rows or width <= 0:
            return Strip.blank(width, self.rich_style)
        try:
            seq = self.events_log.seq_at(row)
        except IndexError:
            return Strip.blank(width, self.rich_style)
        selected = row == self.cursor
        key = (seq, width, selected, self.app.current_theme.dark, self._name_w)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._make_strip(seq, width, selected)
            self._strips[key] = strip
        return strip

    def _make_strip(self, seq: int, width: int, selected: bool) -> Strip:
        pal = palette(self.app.current_theme.dark)
        event = self.events_log.get(seq)
        kind = event_kind(event)
        kind_style = pal.kind.get(kind, pal.kind["other"])
        base = self.rich_style
        cursor = pal.cursor if selected and self.has_focus else (pal.cursor if selected else Style())
        segments: list[Segment] = []
        if self.timeline:
            first = self.events_log.get(self.events_log.seq_at(0)).timestamp
            row = self.events_log.row_of(seq) or 0
            prev = self.events_log.get(self.events_log.seq_at(row - 1)).timestamp if row > 0 else first
            delta = (event.timestamp - prev).total_seconds()
            since = (event.timestamp - first).total_seconds()
            segments.append(Segment(f"+{since:9.3f}s ", base + pal.time + cursor))
            segments.append(Segment(f"Δ{delta:8.3f}s ", base + pal.muted + cursor))
        else:
            stamp = format_time(event) if width >= 48 else format_time(event)[:8]
            segments.append(Segment(stamp + " ", base + pal.time + cursor))
        used = sum(cell_len(s.text) for s in segments)
        # Whole names (the longest on screen) first; the source gets a column only where the summary
        # still keeps room for its key numbers.
        name_w = min(self._name_w, max(12, width - used - 1 - SUMMARY_MIN_W))
        rest = width - used - name_w - 1
        source_w = 18 if rest - 19 >= 60 else 12 if rest - 13 >= 48 else 0
        segments.append(Segment(_fit(printable(event.name), name_w) + " ", base + kind_style + cursor))
        if source_w:
            segments.append(Segment(_fit(printable(event.source), source_w) + " ", base + pal.source + cursor))
        rest = max(0, width - sum(cell_len(s.text) for s in segments))
        matcher = self.events_log.matcher
        if matcher is not None and matcher.fields:
            # the compared fields lead, so `val_accuracy>0.8` shows each row's val_accuracy
            shown = printable(matcher.shown_fields(event))
            if shown:
                lead = _fit(shown + " ", min(rest, cell_len(shown) + 1))  # not padded: the summary follows it
                segments.append(Segment(lead, base + pal.kind["warning"] + cursor))
                rest -= cell_len(lead)
        text = self.summary(seq, event)
        if matcher is not None and matcher.fields:  # the row leads with these already
            text = _without_keys(text, {path[-1] for path in matcher.fields})
        summary_style = kind_style if kind in ("error", "warning") else base + pal.kind["other"]
        segments.append(Segment(_fit(text, rest), base + summary_style + cursor))
        return Strip(segments).crop_extend(0, width, base + cursor)  # measured, so an overlong row is cut


def _without_keys(summary: str, keys: set[str]) -> str:
    """The summary without its `key=value` pairs for `keys`."""
    return re.sub(rf"(?<![\w.])(?:{'|'.join(map(re.escape, keys))})=\S+ ?", "", summary).strip()


def _fit(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)
