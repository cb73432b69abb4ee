"""The monitor under Ctrl-C, a second interrupt, a huge constant loss and its own crash (pilot tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kbert_tui.events import Event
from kbert_tui.tui import MonitorApp, StaticSource
from kbert_tui.tui.screens import ConfirmScreen
from test_tui_app import SIZE, FakeLive, running_events, sim, until_closed


async def test_ctrl_c_stops_a_live_run_without_asking(settle):
    source = FakeLive(running_events())
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")  # was Textual's "Press ctrl+q to quit" toast; training went on
        await until_closed(pilot, source)
        assert not isinstance(app.screen, ConfirmScreen)
    assert source.closed and app.return_value == "stopped"
    assert app.interrupted == (130, "interrupted (Ctrl-C)") and app.interrupted_live


async def test_ctrl_c_interrupts_from_the_filter_box_and_from_a_question(settle):
    for keys in (("slash", "l", "o"), ("q",)):
        source = FakeLive(running_events())
        app = MonitorApp(source)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press(*keys)
            await pilot.press("ctrl+c")
            await until_closed(pilot, source)
        assert source.closed and app.interrupted is not None, keys


async def test_a_second_ctrl_c_or_signal_does_not_cut_the_close_short(settle):
    class SlowClose(FakeLive):
        closes = 0

        async def close(self) -> None:
            SlowClose.closes += 1
            await asyncio.sleep(0.3)  # stopping the run, flushing the log
            await super().close()

    source = SlowClose(running_events())
    app = MonitorApp(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause(0.05)
        app.interrupt(143, "terminated (SIGTERM)")
        await pilot.press("ctrl+c")
        await until_closed(pilot, source)
    assert source.closed and SlowClose.closes == 1
    assert app.interrupted == (130, "interrupted (Ctrl-C)")  # the first one says why


def _huge_loss_events(loss: float) -> list[Event]:
    events = sim(epochs=2, steps_per_epoch=10)
    for event in events:
        if "loss" in event.data:
            event.data["loss"] = loss
    return events


async def test_a_huge_constant_loss_is_drawn(settle):
    for loss in (1e16, 1e308):  # ZeroDivisionError in the chart: the replay crashed (and exited 0)
        app = MonitorApp(StaticSource(_huge_loss_events(loss)))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.pause(0.1)
        assert app.crash is None and app.return_code in (None, 0)


def test_a_crash_in_the_monitor_exits_1_with_one_line(monkeypatch, capsys):
    from textual.app import App

    import kbert_tui.tui as tui

    class Broken(StaticSource):
        def describe(self) -> str:
            raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(MonitorApp, "run", lambda self: App.run(self, headless=True, size=SIZE))
    assert tui.run_replay(Broken(sim(epochs=1, steps_per_epoch=3))) == 1  # was 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("kbert-tui: error: the monitor failed: ZeroDivisionError: float division by zero "
                          "(traceback: ")
    assert "ZeroDivisionError" in Path(err.split("traceback: ")[1].rstrip(")\n")).read_text()


def test_a_replay_stuck_after_its_terminal_hung_up_still_ends(tmp_path):
    """After SIGHUP Textual can block for good writing to the terminal that went away (its writer thread's
    full queue): a replay or attach must not be left behind. Here the app's run never returns at all."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    log = tmp_path / "events.jsonl"
    log.write_text('{"name": "training.started", "timestamp": "2026-01-01T00:00:00+00:00", "data": {}}\n')
    script = textwrap.dedent(f"""
        import sys, threading
        from kbert_tui import tui
        from kbert_tui.tui.app import MonitorApp

        def run_forever(self, *args, **kwargs):
            print("running", flush=True)
            threading.Event().wait()  # as if blocked on the dead terminal: never returns

        MonitorApp.run = run_forever
        sys.exit(tui.run_replay(tui.open_replay({str(log)!r})))
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "running"
    started = time.monotonic()
    child.send_signal(signal.SIGHUP)
    try:
        assert child.wait(timeout=15) == 128 + signal.SIGHUP
    finally:
        child.kill()
    assert time.monotonic() - started < 10
