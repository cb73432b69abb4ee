"""Pilot tests: the monitor driven by keys, as a person uses it (filter, drill-down, follow/pause,
replay, training control and the quit flow)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from kbert_tui.events import Event
from kbert_tui.events.store import JsonlStore
from kbert_tui.state import event_kind
from simulate import simulate_run
from kbert_tui.tui import LiveSource, MonitorApp, ReplaySource, StaticSource
from kbert_tui.tui.log_view import LogView
from kbert_tui.tui.screens import (
    ConfirmScreen,
    DetailScreen,
    EventListScreen,
    HelpScreen,
    TimelineScreen,
    event_json,
)

SIZE = (120, 40)


def sim(**kw) -> list[Event]:
    return list(simulate_run(**kw))


def status_text(app: MonitorApp) -> str:
    return str(app.query_one("#statusbar", Static).render())


class FakeLive(LiveSource):
    """A live source without training: events are handed in, control requests recorded."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__(config=None)
        self.events = events
        self.controls: list[tuple[str, dict]] = []
        self.closed = False
        self._ended = asyncio.Event()

    async def start(self, inbox) -> None:
        inbox.extend(self.events)

    async def wait(self) -> str:
        await self._ended.wait()
        return self.outcome or "stopped"

    async def emit_control(self, name: str, data: dict) -> None:
        self.controls.append((name, data))

    async def close(self) -> None:
        self.closed = True
        self.outcome = self.outcome or "stopped"
        self._ended.set()


async def until_closed(pilot, source: FakeLive) -> None:
    """Let the quit flow run until the source is closed (about a second at most)."""
    for _ in range(50):
        await pilot.pause(0.02)
        if source.closed:
            break


def running_events() -> list[Event]:
    events = sim(epochs=3, steps_per_epoch=40)
    cut = next(i for i, e in enumerate(events) if e.name == "training.epoch_started" and e.data["epoch"] == 2)
    return events[: cut + 20]


# -- filter ---------------------------------------------------------------------------------------------

async def test_filter_bar_applies_live_and_esc_clears(settle):
    events = sim(epochs=2, steps_per_epoch=20)
    app = MonitorApp(StaticSource(events))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(LogView)
        assert view.row_count == len(events)
        await pilot.press("slash")
        box = app.query_one("#filter", Input)
        assert box.display and box.has_focus
        await pilot.press(*"training.epoch_*")
        await pilot.pause(0.3)  # the filter applies while typing (debounced)
        shown = [view.events_log.event_at(r).name for r in range(view.row_count)]
        assert shown and set(shown) <= {"training.epoch_started", "training.epoch_completed"}
        assert len(shown) == 4
        assert "4 match" in status_text(app)

        box.value = "training.* loss>"
        await pilot.press("enter")
        error = app.query_one("#filter-error", Static)
        assert error.display and "needs a number" in str(error.render())
        assert view.row_count == 4  # the last good filter stays

        box.value = "training.batch_completed loss<0.3 step>30"
        await pilot.press("enter")
        assert not error.display
        rows = [view.events_log.event_at(r) for r in range(view.row_count)]
        assert rows and all(e.data["loss"] < 0.3 and e.data["step"] > 30 for e in rows)
        assert view.has_focus  # Enter hands the keys back to the log

        await pilot.press("slash", "escape")
        assert not box.display and box.value == ""
        assert view.row_count == len(events)


# -- detail, drill-down, navigation --------------------------------------------------------------------

def nested(levels: int) -> dict:
    """{"x": {"x": … {"x": 1}}} `levels` deep, built without recursion."""
    value: dict = {"x": 1}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


async def test_enter_on_an_event_nested_600_levels_shows_it_cut_and_q_closes(settle):
    deep = Event(name="plugin.message", data={"message": nested(600)}, source="plugin:a", id="deep-1")
    app = MonitorApp(StaticSource(sim(epochs=1, steps_per_epoch=3) + [deep]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.query_one(LogView).selected_event().id == "deep-1"
        await pilot.press("enter")  # RecursionError in the detail view froze the monitor
        await pilot.pause(0.1)
        assert isinstance(app.screen, DetailScreen)
        detail = str(app.screen.query_one("#detail-json", Static).render())
        assert '"id": "deep-1"' in detail and "nested deeper than 64 levels: not shown" in detail
        await pilot.press("q")
        assert not isinstance(app.screen, DetailScreen) and app.is_running


def test_the_detail_json_takes_self_references_odd_keys_and_failing_reprs():
    class Rude:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    loop: dict = {"a": 1}
    loop["self"] = loop
    event = Event(name="x.y", data={"loop": loop, (1, 2): {1, 2}, "rude": Rude(), "deep": nested(5000)})
    text = event_json(event)
    assert "refers to itself: a dict" in text and '"(1, 2)": [' in text and "repr raised RuntimeError" in text


async def test_enter_shows_pretty_json_and_c_drills_into_the_correlation(settle):
    events = sim(epochs=1, steps_per_epoch=10)
    # a run still going: the messages belong to its last step (after training.completed they'd be in none)
    events = events[: next(i for i, e in enumerate(events) if e.name == "training.completed")]
    t = events[-1].timestamp
    others = [Event(name="plugin.message", data={"from": "a", "to": "b", "message": {"n": i}},
                    timestamp=t + timedelta(seconds=1.5 * (i + 1)), source="plugin:a",
                    correlation_id="chat-9", id=f"chat-{i}") for i in range(3)]
    app = MonitorApp(StaticSource(events + others))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(LogView)
        assert view.selected_event().id == "chat-2"  # following: the newest is selected
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        detail = str(app.screen.query_one("#detail-json", Static).render())
        assert '"id": "chat-2"' in detail and '"correlation_id": "chat-9"' in detail
        await pilot.press("escape")
        await pilot.press("c")
        assert isinstance(app.screen, TimelineScreen)
        assert app.screen.level == "step"  # no causes of its own: the smallest group that holds others
        await pilot.press("w", "w")  # widen: epoch, then the whole correlation
        assert app.screen.level == "run"
        timeline = app.screen.query_one(LogView)
        assert timeline.row_count == 3
        assert timeline.selected_event().id == "chat-2"
        lines = [timeline.render_line(y).text for y in range(3)]
        assert "+    0.000s" in lines[0] and "Δ   1.500s" in lines[1] and "+    3.000s" in lines[2]
        await pilot.press("escape")
        assert not isinstance(app.screen, TimelineScreen)
        # the whole run shares one correlation id
        view.follow = False
        view.set_cursor(0)
        await pilot.press("c")
        assert app.screen.query_one(LogView).row_count == len(events)


async def test_e_and_shift_e_jump_between_problems(settle):
    events = sim(epochs=2, steps_per_epoch=60, system_every=2)
    app = MonitorApp(StaticSource(events))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(LogView)
        await pilot.press("home")
        assert not view.follow
        problems = [i for i, e in enumerate(events) if event_kind(e) in ("error", "warning")]
        assert len(problems) >= 3
        await pilot.press("e")
        assert view.selected_seq() == problems[0]
        await pilot.press("e")
        assert view.selected_seq() == problems[1]
        await pilot.press("E")
        assert view.selected_seq() == problems[0]


# -- follow and pause -----------------------------------------------------------------------------------

async def test_follow_and_pause_view_count_arrivals(settle):
    events = sim(epochs=2, steps_per_epoch=60)
    first, rest = events[:100], events[100:]
    assert len(rest) >= 90
    app = MonitorApp(StaticSource(first))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(LogView)
        assert view.follow and view.cursor == 99
        app.inbox.extend(rest[:50])
        app.drain_all()
        assert view.cursor == 149  # following the newest

        await pilot.press("up")
        assert not view.follow and view.cursor == 148
        app.inbox.extend(rest[50:60])
        app.drain_all()
        assert view.cursor == 148 and view.row_count == 160

        await pilot.press("f")
        assert view.follow and view.cursor == 159

        await pilot.press("space")
        app.inbox.extend(rest[60:90])
        app.drain_all()
        assert view.row_count == 160  # the view is frozen...
        assert app.log_index.total == 190  # ...the events keep arriving
        assert "+30 new" in status_text(app)
        await pilot.press("space")
        assert view.row_count == 190 and view.cursor == 189


# -- replay ---------------------------------------------------------------------------------------------

def write_log(path: Path, events: list[Event], *, segment_mb: float = 100.0) -> None:
    store = JsonlStore(path, max_file_size_mb=segment_mb)
    for event in events:
        store.append(event)
    store.close()


async def test_replay_reads_segments_in_order_counts_malformed_and_ends_in_final_state(tmp_path: Path):
    events = sim(epochs=2, steps_per_epoch=150)
    path = tmp_path / "events.jsonl"
    write_log(path, events, segment_mb=0.05)
    assert (tmp_path / "events.1.jsonl").exists()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"name": "truncated", "timest\n')
    app = MonitorApp(ReplaySource(path))
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(300):
            await pilot.pause(0.02)
            if app.source.finished and not app.inbox:
                break
        app.drain_all()
        await pilot.pause()
        assert app.log_index.total == len(events)
        assert [app.log_index.get(i).id for i in range(5)] == [e.id for e in events[:5]]
        assert app.state.training.status == "completed"
        assert "1 malformed line skipped" in status_text(app)
        await pilot.press("q")  # a recording: no question asked
        await pilot.pause()
    assert app.return_value == "completed"


async def test_paced_replay_pauses_steps_and_changes_speed(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    write_log(path, sim(epochs=1, steps_per_epoch=50, step_seconds=5.0))
    app = MonitorApp(ReplaySource(path, speed=1.0))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        source = app.source
        assert isinstance(source, ReplaySource) and source.paused
        await pilot.pause(0.3)
        app.drain_all()
        before = app.log_index.total
        await pilot.press("n")
        await pilot.pause(0.3)
        app.drain_all()
        assert app.log_index.total == before + 1
        await pilot.press("plus")
        assert source.speed == 2.0
        await pilot.press("minus", "minus")
        assert source.speed == 0.5
        assert "PAUSED" in source.describe()
        await pilot.press("q")
    assert source.finished or source._stop.is_set()


# -- training control and quitting -----------------------------------------------------------------------

async def test_p_pauses_and_resumes_training_by_control_events(settle):
    source = FakeLive(running_events())
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.state.training.status == "running"
        await pilot.press("p")
        await pilot.pause()
        assert source.controls[-1] == ("control.pause_requested", {"requested_by": "tui"})
        app.inbox.append(Event(name="training.paused", data={"epoch": 2, "step": 41}, source="trainer"))
        app.drain_all()
        assert app.state.training.status == "paused"
        await pilot.press("p")
        await pilot.pause()
        assert source.controls[-1][0] == "control.resume_requested"
        source._ended.set()


async def test_s_asks_before_stopping(settle):
    source = FakeLive(running_events())
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert source.controls == []
        await pilot.press("s", "y")
        await pilot.pause()
        assert source.controls == [("control.stop_requested", {"reason": "user", "requested_by": "tui"})]
        source._ended.set()


async def test_quit_asks_while_live_then_stops_the_run_cleanly(settle):
    source = FakeLive(running_events())
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not source.closed and app.is_running
        await pilot.press("q", "y")
        await until_closed(pilot, source)
    assert source.closed
    assert app.return_value == "stopped"


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
async def test_quit_without_asking_once_the_run_is_over(settle, key):
    source = FakeLive(sim(epochs=1, steps_per_epoch=5))
    source.outcome = "completed"
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.state.training.status == "completed"
        await pilot.press(key)
        await pilot.pause()
    assert source.closed and app.return_value == "completed"
    assert not app.interrupted_live  # nothing was stopped: `run` exits with the run's own status


def screen_lines(app: MonitorApp) -> list[str]:
    """The rows of the terminal as text, exactly as drawn."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def test_help_lists_keys_and_filter_syntax():
    app = MonitorApp(StaticSource(sim(epochs=1, steps_per_epoch=3)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        assert isinstance(app.screen, HelpScreen)
        text = "\n".join(screen_lines(app))
        assert "the event's thread" in text and "key>num" in text and "source:NAME" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_help_at_80x24_keeps_each_key_on_the_row_of_its_description():
    app = MonitorApp(StaticSource(sim(epochs=1, steps_per_epoch=3)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        lines = screen_lines(app)
        row = next(line for line in lines if "filter the log (live)" in line)
        assert row.split("filter the log")[0].strip().endswith("/")
        # one pair per row at this width: no description is broken into the next key's column
        assert not any("Esc" in line and "filter the log" in line for line in lines)


# -- safety ---------------------------------------------------------------------------------------------

async def test_markup_and_escape_sequences_are_shown_literally(settle):
    hostile = Event(name="e.[@click=app.quit]x", data={"text": "[bold red]boom[/] \x1b[2J\x1b]0;title\x07"},
                    source="[b]src", timestamp=datetime(2026, 1, 1, tzinfo=UTC), id="evil-1")
    app = MonitorApp(StaticSource(sim(epochs=1, steps_per_epoch=3, hostile_text=True) + [hostile]))
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        view = app.query_one(LogView)
        line = view.render_line(view.cursor - int(view.scroll_y)).text
        assert "e.[@click=app.quit]x" in line
        assert "[b]src" in line and "[bold red]boom[/]" in line
        assert "\x1b" not in line and "\x07" not in line and "␛[2J" in line
        await pilot.click(LogView, offset=(5, view.cursor - int(view.scroll_y)))
        await pilot.pause()
        assert app.is_running  # clicking the row never ran the embedded action


async def test_ctrl_q_takes_the_same_quit_flow(settle):
    source = FakeLive(running_events())
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until_closed(pilot, source)
    assert source.closed


async def test_a_replay_past_its_window_keeps_every_event_navigable_from_disk(tmp_path: Path):
    events = sim(epochs=3, steps_per_epoch=40)
    path = tmp_path / "events.jsonl"
    write_log(path, events)
    app = MonitorApp(ReplaySource(path), capacity=100)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(300):
            await pilot.pause(0.02)
            if app.source.finished and app.history_complete:
                break
        app.drain_all()
        log = app.log_index
        assert log.total == len(events) and log.base == len(events) - 100  # 100 in memory, the rest on disk
        assert app.query_one(LogView).row_count == len(events)
        assert "older on disk" not in status_text(app)  # nothing out of reach: `o` has nothing to search
        assert status_text(app).endswith("FOLLOW · 0 errors 2 warnings")
        app.apply_filter("training.epoch_started")  # every epoch start is older than the window: the name column
        older = [e for e in events if e.name == "training.epoch_started"]
        assert app.query_one(LogView).row_count == len(older) == 3
        await pilot.press("home", "enter")
        assert isinstance(app.screen, DetailScreen) and app.screen.event.id == older[0].id


class PumpedReplay(ReplaySource):
    """A replay fed through the inbox as a live run is (not end first): its window evicts."""

    @property
    def end_first(self) -> bool:
        return False


async def test_older_events_left_memory_but_o_searches_them_on_disk(tmp_path: Path):
    events = sim(epochs=3, steps_per_epoch=40)
    path = tmp_path / "events.jsonl"
    write_log(path, events)
    app = MonitorApp(PumpedReplay(path), capacity=100)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(300):
            await pilot.pause(0.02)
            if app.source.finished and not app.inbox:
                break
        app.drain_all()
        evicted = len(events) - 100
        assert app.log_index.evicted == evicted
        assert f"{evicted:,} older on disk in " in status_text(app)
        assert status_text(app).endswith("events.jsonl · FOLLOW · 0 errors 2 warnings")  # a long path: its middle cut
        app.apply_filter("training.epoch_started")
        assert app.query_one(LogView).row_count == 0  # every epoch start is older than the window
        await pilot.press("o")
        for _ in range(200):
            await pilot.pause(0.02)
            if isinstance(app.screen, EventListScreen):
                break
        screen = app.screen
        assert isinstance(screen, EventListScreen)
        found = screen.query_one(LogView)
        older = [e for e in events[:evicted] if e.name == "training.epoch_started"]
        assert found.row_count == len(older) == 3
        assert "3 of" in screen.title_text and "training.epoch_started" in screen.title_text
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen) and app.screen.event.id == older[0].id


async def test_events_keep_flowing_into_the_main_log_while_a_modal_is_open(settle):
    events = sim(epochs=2, steps_per_epoch=40)
    app = MonitorApp(StaticSource(events[:50]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")  # the timeline has a LogView of its own
        assert isinstance(app.screen, TimelineScreen)
        timeline_rows = app.screen.query_one(LogView).row_count
        app.inbox.extend(events[50:120])
        await pilot.pause(0.3)  # the drain timer runs under the modal
        assert app.log_view.row_count == 120
        assert app.screen.query_one(LogView).row_count == timeline_rows
        await pilot.press("escape", "question_mark")
        app.inbox.extend(events[120:])
        await pilot.pause(0.3)
        assert app.log_view.row_count == len(events)


# -- layout at the two common sizes ---------------------------------------------------------------------

async def test_80x24_keeps_the_loss_chart_key_hints_and_ten_log_rows(settle):
    source = FakeLive(running_events())
    app = MonitorApp(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.pause(0.1)
        lines = screen_lines(app)
        assert any("loss by step" in line for line in lines)  # the chart sits beside the training text
        assert "?Help" in lines[-1].replace(" ", "") and "qQuit" in lines[-1].replace(" ", "")
        assert "pPause" in lines[-1].replace(" ", "")  # live: the training keys are offered
        assert app.log_view.scrollable_content_region.height >= 10
        assert not app.system_pane.display
        await pilot.press("2")  # the switcher: System takes the top
        await pilot.pause()
        assert app.system_pane.display and not app.training_pane.display
        await pilot.press("t")  # plugins take the log's place, full width
        await pilot.pause()
        assert app.plugins_pane.display and not app.log_view.display
        assert app.plugins_pane.outer_size.width == 80
        source._ended.set()


async def test_a_replay_offers_only_the_keys_that_act_there(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    write_log(path, sim(epochs=1, steps_per_epoch=10))
    app = MonitorApp(ReplaySource(path, speed=4.0))  # paced: playback can pause; a whole load can't
    async with app.run_test(size=(120, 40)) as pilot:
        footer = ""
        for _ in range(100):
            await pilot.pause(0.05)
            footer = screen_lines(app)[-1].replace(" ", "")
            if footer:
                break
        assert "pPausereplay" in footer and "sStop" not in footer
        await pilot.press("s")  # not a key here: nothing asks
        assert not isinstance(app.screen, ConfirmScreen)


async def test_120x40_shows_whole_event_names_and_the_loss_in_each_batch_row(settle):
    events = sim(epochs=2, steps_per_epoch=120, system_every=2)
    long_name = Event(name="system.performance_recovered", data={"component": "cpu", "metric": "percent",
                                                                  "value": 50.0, "threshold": 90.0},
                      source="system")
    app = MonitorApp(StaticSource(events + [long_name]))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.pause(0.1)
        lines = screen_lines(app)
        assert any("system.performance_recovered" in line for line in lines)
        batch_rows = [line for line in lines if "training.batch_completed" in line]
        assert batch_rows and all(re.search(r"loss=\d\.\d{3}", line) for line in batch_rows)
        training = next(line for line in lines if "loss " in line and "lr " in line)
        assert re.search(r"loss \d\.\d+", training)
        assert any("errors" in line and "state" in line for line in lines)  # the plugins header whole


async def test_a_field_filter_shows_the_compared_value_in_each_row(settle):
    app = MonitorApp(StaticSource(sim(epochs=4, steps_per_epoch=10)))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.apply_filter("val_accuracy>0.8")
        await pilot.pause(0.1)
        rows = [line for line in screen_lines(app) if "training.e" in line]
        assert rows and all(re.search(r"val_accuracy=0\.\d+", line) for line in rows)


async def test_no_event_string_reaches_the_terminal_as_an_escape_or_as_markup(settle):
    evil = "\x1b]0;PWNED\x07\x1b[2J\x9b31m[@click=app.quit]x[/] [/nonsense]"
    events = sim(epochs=1, steps_per_epoch=6, hostile_text=True)
    for event in events:
        if event.name == "training.started":
            event.data.update(run_name=evil, model_type=evil, device=evil)
    events.append(Event(name="rule.fired", data={"rule": evil, "action": "notify", "reason": evil}, source="rules"))
    events.append(Event(name="training.stopped", data={"step": 3, "reason": evil, "checkpoint_path": evil}))
    app = MonitorApp(StaticSource(events))  # not a recording: the rule's banner shows
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.pause(0.3)
        drawn = "".join(segment.text for strip in app.screen._compositor.render_strips() for segment in strip)
        assert "PWNED" in drawn and not re.search(r"[\x00-\x1f\x7f-\x9f]", drawn)
        # the rule's banner is text: with markup its [@click=app.quit] was a live link in the toast
        banners = [n for n in app._notifications if n.title == "rule"]
        assert banners and all(not n.markup and "[@click=app.quit]" in n.message for n in banners)


async def test_the_status_line_follows_the_view_state_by_itself(settle):
    app = MonitorApp(StaticSource(sim(epochs=1, steps_per_epoch=5)))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app._drain_timer.stop()  # no idle repaint: only the view's own watchers can update the status line
        view = app.query_one(LogView)
        view.frozen_at = app.log_index.total  # set by anyone, not only the space key's action
        await pilot.pause()
        assert "VIEW PAUSED +0 new" in status_text(app)
        view.follow = False
        await pilot.pause()
        assert "follow off" in status_text(app)


# -- the training pane after the run ends, and the footer while paused ----------------------------------

async def test_a_run_stopped_before_its_next_epoch_reads_as_ended_in_the_last_one(settle):
    events = sim(epochs=3, steps_per_epoch=40)
    cut = next(i for i, e in enumerate(events) if e.name == "training.epoch_started" and e.data["epoch"] == 3)
    stopped = Event(name="training.stopped", data={"epoch": 3, "step": 80, "reason": "user"},
                    timestamp=events[cut].timestamp + timedelta(seconds=1), source="trainer")
    app = MonitorApp(StaticSource(events[: cut + 1] + [stopped]))  # epoch 3 began, not one batch of it ran
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        pane = "\n".join(screen_lines(app)[1:19])
        assert "STOPPED" in pane and "Epoch 2/3" in pane and "Batch 40/40" in pane, pane
        assert "Epoch 3/3" not in pane and "Batch 0/" not in pane


async def test_the_footer_offers_p_resume_while_paused(settle):
    source = FakeLive(sim(epochs=2, steps_per_epoch=30, pause_at_step=40))
    source.events = source.events[: next(i for i, e in enumerate(source.events) if e.name == "training.paused") + 1]
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.pause(0.1)
        footer = re.sub(r"\s+", " ", screen_lines(app)[-1])
        assert "p Resume" in footer and "p Pause" not in footer, footer
        await pilot.press("p")
        assert source.controls[-1][0] == "control.resume_requested"
        source._ended.set()
