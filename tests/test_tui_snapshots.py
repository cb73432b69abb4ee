"""Snapshot tests at fixed sizes (SVGs under snapshots/). Everything shown comes from simulated events
with fixed timestamps, so there is no clock to drift; the filter input does not blink."""

from __future__ import annotations

from simulate import simulate_run
from kbert_tui.tui import MonitorApp, StaticSource
from kbert_tui.tui.log_view import LogView


def app_for(**kw) -> MonitorApp:
    return MonitorApp(StaticSource(list(simulate_run(**kw)), label="recorded run"))


def test_completed_run_80x24(snap_compare, settle):
    assert snap_compare(app_for(epochs=3, steps_per_epoch=40), terminal_size=(80, 24), run_before=settle)


def test_failed_run_light_theme_120x40(snap_compare, settle):
    async def before(pilot) -> None:
        pilot.app.theme = "textual-light"
        await settle(pilot)

    assert snap_compare(app_for(epochs=3, steps_per_epoch=120, fail_at_step=230, system_every=2),
                        terminal_size=(120, 40), run_before=before)


def test_filter_error_inline_100x30(snap_compare, settle):
    async def before(pilot) -> None:
        await settle(pilot)
        await pilot.press("slash")
        pilot.app.query_one("#filter").value = "training.* loss>abc"
        await pilot.press("enter")

    assert snap_compare(app_for(epochs=2, steps_per_epoch=20), terminal_size=(100, 30), run_before=before)


def test_thread_of_a_new_best_model_100x30(snap_compare, settle):
    async def before(pilot) -> None:
        await settle(pilot)
        view = pilot.app.query_one(LogView)
        view.follow = False
        log = view.events_log
        view.set_cursor(next(r for r in range(len(log)) if log.event_at(r).name == "training.new_best_model"))
        await pilot.press("c")
        await pilot.pause()

    assert snap_compare(app_for(epochs=1, steps_per_epoch=10), terminal_size=(100, 30), run_before=before)


def test_paused_run_with_plugins_toggled_80x24(snap_compare, settle):
    events = list(simulate_run(epochs=2, steps_per_epoch=30, pause_at_step=40))
    cut = next(i for i, e in enumerate(events) if e.name == "training.paused")

    async def before(pilot) -> None:
        await settle(pilot)
        await pilot.press("t")

    assert snap_compare(MonitorApp(StaticSource(events[: cut + 1], label="recorded run")),
                        terminal_size=(80, 24), run_before=before)


# -- the two sizes that matter: 80x24 (the default terminal) and 120x40, live and in replay ---------------

def _live_app() -> MonitorApp:
    from test_tui_app import FakeLive, running_events

    return MonitorApp(FakeLive(running_events()))


async def _replay_settle(pilot) -> None:
    app = pilot.app
    for _ in range(500):
        await pilot.pause(0.01)
        if app.source.finished and app.history_complete and not app.inbox:  # the whole history swapped in
            break
    app.drain_all()
    await pilot.pause()


def _replay_app(tmp_path) -> MonitorApp:
    from test_tui_app import write_log

    from kbert_tui.tui import ReplaySource

    path = tmp_path / "events.jsonl"
    write_log(path, list(simulate_run(epochs=3, steps_per_epoch=60, system_every=3)))
    return MonitorApp(ReplaySource(path))


def test_live_run_80x24(snap_compare, settle):
    assert snap_compare(_live_app(), terminal_size=(80, 24), run_before=settle)


def test_live_run_120x40(snap_compare, settle):
    assert snap_compare(_live_app(), terminal_size=(120, 40), run_before=settle)


def test_replay_end_80x24(snap_compare, tmp_path):
    assert snap_compare(_replay_app(tmp_path), terminal_size=(80, 24), run_before=_replay_settle)


def test_replay_end_120x40(snap_compare, tmp_path):
    assert snap_compare(_replay_app(tmp_path), terminal_size=(120, 40), run_before=_replay_settle)


def test_narrow_system_pane_and_plugins_80x24(snap_compare, settle):
    async def before(pilot) -> None:
        await settle(pilot)
        await pilot.press("2", "t")
        await pilot.pause()

    assert snap_compare(app_for(epochs=2, steps_per_epoch=30), terminal_size=(80, 24), run_before=before)


def test_help_80x24(snap_compare, settle):
    async def before(pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(app_for(epochs=1, steps_per_epoch=5), terminal_size=(80, 24), run_before=before)


def test_filter_shows_the_compared_field_120x40(snap_compare, settle):
    async def before(pilot) -> None:
        await settle(pilot)
        pilot.app.apply_filter("val_accuracy>0.7")
        await pilot.pause()

    assert snap_compare(app_for(epochs=4, steps_per_epoch=20), terminal_size=(120, 40), run_before=before)
