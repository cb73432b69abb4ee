"""Pilot tests: a replayed log read through its index — the tail first while a foreign log's index is built,
then every event navigable (the older ones from disk), filters over all of them, `c` on an old event."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from simulate import simulate_run
from textual.widgets import Static

from kbert_tui.events import Event
from kbert_tui.events.index import index_dir
from kbert_tui.state import parse_filter
from kbert_tui.state.disk_log import DiskEventLog
from kbert_tui.tui import MonitorApp, ReplaySource, sources
from kbert_tui.tui.log_view import LogView
from kbert_tui.tui.screens import DetailScreen, TimelineScreen

SIZE = (120, 40)


def write_foreign(path: Path, events: list[Event]) -> None:
    """json.dumps' default layout (not our writer's): the log has no index until it is opened."""
    with open(path, "w", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                                 "source": event.source, "correlation_id": event.correlation_id,
                                 "data": event.data, "metadata": event.metadata}) + "\n")


def status_text(app: MonitorApp) -> str:
    return str(app.query_one("#statusbar", Static).render())


async def loaded(app: MonitorApp, pilot) -> None:
    for _ in range(500):
        await pilot.pause(0.02)
        if app.source.finished and app.history_complete:
            return
    raise AssertionError("the history never loaded")


@pytest.fixture
def foreign(tmp_path: Path) -> tuple[Path, list[Event]]:
    events = list(simulate_run(epochs=3, steps_per_epoch=60, system_every=2))
    path = tmp_path / "events.jsonl"
    write_foreign(path, events)
    return path, events


async def test_a_big_foreign_log_shows_its_tail_then_builds_its_index_then_its_whole_history(
        foreign: tuple[Path, list[Event]], monkeypatch: pytest.MonkeyPatch):
    path, events = foreign
    monkeypatch.setattr(sources, "GLANCE_BYTES", 1)  # "big": every log here
    shown: list[bool] = []
    original = MonitorApp._show_end

    def spy(self: MonitorApp, end, painted, whole: bool = True) -> None:
        shown.append(whole)
        original(self, end, painted, whole)

    monkeypatch.setattr(MonitorApp, "_show_end", spy)
    assert not index_dir(path).exists()
    app = MonitorApp(ReplaySource(path), capacity=100)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert shown == [False, True]  # the tail's state, then the end with its milestones
        assert index_dir(path).is_dir()  # built once, saved beside the log
        log = app.log_index
        assert isinstance(log, DiskEventLog) and log.total == len(events) and log.base == len(events) - 100
        assert app.state.training.status == "completed" and app.state.training.loss_history.count == 180
        assert status_text(app).startswith(f"{len(events):,} events · FOLLOW")
    small = MonitorApp(ReplaySource(path), capacity=100)  # not big: straight to the end, no glance
    monkeypatch.setattr(sources, "GLANCE_BYTES", path.stat().st_size + 1)
    shown.clear()
    async with small.run_test(size=SIZE) as pilot:
        await loaded(small, pilot)
        assert shown == [True]


def test_the_title_shows_how_far_and_how_fast_the_index_is_built(foreign: tuple[Path, list[Event]]):
    path, _ = foreign
    source = ReplaySource(path)
    source.via_index = True
    source.index_progress(0, 1000)
    source.index_progress(430, 1000)
    assert "indexing 43% · " in source.describe() and " MB/s" in source.describe()
    source.index_progress(1000, 1000)
    assert "indexing" not in source.describe() and "read" not in source.describe()
    stages = source.end_first_stages(100, lambda: False)
    assert [next(stages)[0], next(stages)[0]] == ["end", "log"]
    assert "history" not in source.describe()
    assert next(stages)[0] == "history"  # its decoding reported how far it got
    assert source.history_done == 1.0 and "history 100%" in source.describe()
    source.loaded()
    assert "history" not in source.describe() and "end of file" in source.describe()


async def test_filters_reach_every_event_and_enter_and_c_open_an_old_one(foreign: tuple[Path, list[Event]]):
    path, events = foreign
    app = MonitorApp(ReplaySource(path), capacity=100)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        view = app.query_one(LogView)
        assert view.row_count == len(events)
        await pilot.press("home", "enter")  # the very first event, read back from disk
        assert isinstance(app.screen, DetailScreen) and app.screen.event.id == events[0].id
        await pilot.press("escape")
        app.apply_filter("completed")  # free text: the window at once, the older events by a scan
        matcher = parse_filter("completed")
        wanted = [e.id for e in events if matcher.matches_alone(e)]
        for _ in range(300):
            await pilot.pause(0.02)
            if app.log_index.older_complete:  # type: ignore[attr-defined]
                break
        await pilot.pause()
        assert [app.log_index.event_at(r).id for r in range(view.row_count)] == wanted
        assert f"{len(wanted):,} match ·" in status_text(app)
        app.apply_filter("training.epoch_started")  # a name: the index's name column, no scan
        assert view.row_count == 3
        await pilot.press("home", "c")  # an event long out of memory: its thread among its neighbours
        assert isinstance(app.screen, TimelineScreen)
        first_epoch = next(e for e in events if e.name == "training.epoch_started")
        assert app.screen.source_log.get(app.screen.seq).id == first_epoch.id


def test_every_event_is_navigable_before_the_panes_history_is_in(foreign: tuple[Path, list[Event]],
                                                                  monkeypatch: pytest.MonkeyPatch):
    path, events = foreign
    stages = list(ReplaySource(path).end_first_stages(100, lambda: False))
    assert [name for name, _ in stages] == ["end", "log", "history"]  # a small log: no glance
    log = stages[1][1]
    assert isinstance(log, DiskEventLog) and log.total == len(events) and stages[2][1][1] is log
    monkeypatch.setattr(sources, "GLANCE_BYTES", 1)  # a big one: the tail's state first, with or without an index
    for _ in range(2):
        names = [name for name, _ in ReplaySource(path).end_first_stages(100, lambda: False)]
        assert names == ["glance", "end", "log", "history"]
        shutil.rmtree(index_dir(path))
