"""The monitor on a real (tiny) training run, and the CLI's monitor branches: `run` picks the monitor
or headless mode, `replay` opens a file or explains why it can't."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbert_tui.cli import main
from kbert_tui.events.store import read_events
from kbert_tui.state import RunState
from simulate import simulate_run
from kbert_tui.events.store import JsonlStore
from kbert_tui.training.testing import tiny_config
from kbert_tui.tui import LiveSource, MonitorApp
from kbert_tui.tui.screens import ConfirmScreen


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


async def wait_for(pilot, condition, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.05)):
        pilot.app.drain_all()
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting")


async def test_a_live_run_shows_every_event_and_its_replay_ends_in_the_same_state(tmp_path: Path):
    source = LiveSource(tiny_config(tmp_path, system={"enabled": True, "interval_s": 0.2}), output_dir=tmp_path / "o")
    app = MonitorApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.state.training.status == "completed" and source.outcome is not None)
        await pilot.press("q")  # over: no question
        await pilot.pause()
    assert app.return_value == "completed"
    recorded = list(read_events(source.events_path))
    # events emitted before the monitor subscribed (sampler start, data validation) were backfilled
    assert app.log_index.total == len(recorded)
    assert [app.log_index.get(i).id for i in range(app.log_index.total)] == [e.id for e in recorded]
    assert recorded[0].name == "data.validation_started" or recorded[0].name.startswith("system.")
    replayed = RunState()
    replayed.apply_all(recorded)
    live = app.state.training
    assert (live.status, live.step, live.epochs_done, live.best_value) == (
        replayed.training.status, replayed.training.step, replayed.training.epochs_done,
        replayed.training.best_value)
    assert app.state.system.cpu_percent is not None


async def test_stop_from_the_monitor_checkpoints_and_quit_closes_the_session(tmp_path: Path):
    config = tiny_config(tmp_path, training={"epochs": 200})
    source = LiveSource(config, output_dir=tmp_path / "o")
    app = MonitorApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.state.training.step >= 3)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.state.training.status == "stopped")
        assert app.state.training.checkpoint_path
        await pilot.press("q")
        await pilot.pause()
    assert app.return_value == "stopped"
    assert source.session._closed
    names = [e.name for e in read_events(source.events_path)]
    assert "control.stop_requested" in names and names.index("control.stop_requested") < names.index(
        "training.stopped")
    stop = next(e for e in read_events(source.events_path) if e.name == "control.stop_requested")
    assert stop.source == "tui" and stop.correlation_id == source.session.run_id


def test_replay_of_a_missing_or_unreadable_file_exits_2(tmp_path: Path, capsys):
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err == f"kbert-tui: error: {tmp_path / 'nope.jsonl'}: no such file\n"  # the path once
    assert main(["replay", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "x.jsonl"), "--speed", "-1"]) == 2


def test_replay_without_a_terminal_prints_a_summary(tmp_path: Path, capsys):
    path = tmp_path / "events.jsonl"
    store = JsonlStore(path)
    for event in simulate_run(epochs=2, steps_per_epoch=5, fail_at_step=8):
        store.append(event)
    store.close()
    with open(path, "a") as fh:
        fh.write("not json\n")
    assert main(["replay", str(path)]) == 0
    captured = capsys.readouterr()
    assert "stdout is not a terminal" in captured.err
    assert "1 malformed line skipped" in captured.out
    assert "failed" in captured.out and "loss became nan at step 8" in captured.out


def test_run_without_a_terminal_runs_headless_and_says_so(tmp_path: Path, capsys, monkeypatch):
    import kbert_tui.config

    monkeypatch.setattr(kbert_tui.config, "default_config", lambda: tiny_config(tmp_path))
    assert main(["run", "--output-dir", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "stdout is not a terminal: running headless" in captured.err
    assert "epoch 1: train_loss" in captured.out


def test_replay_of_a_file_holding_no_event_exits_2(tmp_path: Path, capsys):
    path = tmp_path / "notes.jsonl"
    path.write_bytes(b"just some notes\n\xff\xfe binary\n")
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert "notes.jsonl: not an events file" in err and "notes.jsonl:1" in err and "Traceback" not in err


def test_replay_of_a_killed_run_says_it_ended_without_a_final_event(tmp_path: Path, capsys):
    path = tmp_path / "events.jsonl"
    store = JsonlStore(path)
    events = [e for e in simulate_run(epochs=2, steps_per_epoch=5) if e.name != "training.completed"]
    for event in events[: len(events) * 2 // 3]:  # the process was killed mid-run
        store.append(event)
    store.close()
    with open(path, "a") as fh:
        fh.write('{"name": "torn", "timest')
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ended without a final event (last event at " in out and ": running" not in out
    assert "first skipped line: events.jsonl:" in out
