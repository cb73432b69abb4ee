"""`kbert-tui watch -- COMMAND`: a script's run watched from outside, headless and in a real terminal (tmux)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from simulate import simulate_run

from kbert_tui.cli import main
from kbert_tui.events import catalog as ev
from kbert_tui.events.store import JsonlStore, read_events
from kbert_tui.remote import AttachedRun, resolve_run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mlx_mlp.py"
KBERT = [sys.executable, "-m", "kbert_tui"]


@pytest.fixture(autouse=True)
def not_watched(monkeypatch):
    monkeypatch.delenv("KBERT_TUI_RUN_DIR", raising=False)
    monkeypatch.delenv("KBERT_TUI_RUN_ID", raising=False)


def events_of(folder: Path) -> list:
    return list(read_events(folder / "events.jsonl"))


def wait_for_event(folder: Path, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "events.jsonl").exists() and name in [e.name for e in events_of(folder)]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never came")


def test_watch_runs_the_example_headless_and_its_run_replays_and_compares(tmp_path: Path, capsys):
    out = tmp_path / "run"
    code = main(["watch", "--output-dir", str(out), "--", sys.executable, str(EXAMPLE), "--epochs", "2",
                 "--steps", "5"])
    assert code == 0
    printed = capsys.readouterr()
    assert "epoch 2: val_accuracy" in printed.out  # the child's own lines, passed through
    assert "completed in" in printed.out and "exited 0" in printed.out
    events = events_of(out)
    names = [e.name for e in events]
    assert names.count(ev.TRAINING_BATCH_COMPLETED) == 10 and names.count(ev.TRAINING_EPOCH_COMPLETED) == 2
    assert (names.index(ev.PROCESS_STARTED) < names.index(ev.TRAINING_STARTED) < names.index(ev.TRAINING_COMPLETED)
            < names.index(ev.PROCESS_EXITED))
    lines = [e.data["line"] for e in events if e.name == ev.PROCESS_OUTPUT]
    assert [line for line in lines if line.startswith("epoch")] == [
        line for line in printed.out.splitlines() if line.startswith("epoch") and "val_accuracy" in line
        and "train_loss" not in line]
    exited = next(e.data for e in events if e.name == ev.PROCESS_EXITED)
    assert exited["returncode"] == 0 and exited["how"] == "exited 0"
    started = next(e for e in events if e.name == ev.TRAINING_STARTED)
    run_id = json.loads((out / "session.json").read_text())["run_id"]
    assert started.data["run_id"] == run_id and all(e.correlation_id == run_id for e in events)
    assert json.loads((out / "session.json").read_text())["state"] == "completed"
    assert (out / "metrics.csv").read_text().count("\n") == 1 + 10 + 2
    assert not (out / "watch-outbox.jsonl").exists()  # relayed, then removed
    # replayed and compared with a built-in run like any other
    assert main(["replay", str(out / "events.jsonl")]) == 0
    assert "completed, epoch 2/2, step 10/10" in capsys.readouterr().out
    built_in = tmp_path / "built-in.jsonl"
    store = JsonlStore(built_in)
    for event in simulate_run(epochs=2, steps_per_epoch=5):
        store.append(event)
    store.close()
    assert main(["compare", str(out), str(built_in), "--format", "csv"]) == 0
    table = capsys.readouterr().out
    rows = {line.split(",")[0]: line for line in table.splitlines()}
    assert rows["run"].startswith("run,completed,10,2,") and rows["built-in"].startswith("built-in,completed,10,2,")
    assert ",delay," in rows["run"] + table.splitlines()[0] + ","  # the script's config is compared too


def test_the_commands_exit_status_and_output_lines_come_through(tmp_path: Path, capsys):
    script = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)"
    assert main(["watch", "--output-dir", str(tmp_path / "o"), "--", sys.executable, "-c", script]) == 3
    events = events_of(tmp_path / "o")
    output = [(e.data["stream"], e.data["line"]) for e in events if e.name == ev.PROCESS_OUTPUT]
    assert sorted(output) == [("stderr", "to stderr"), ("stdout", "to stdout")]
    assert next(e.data["how"] for e in events if e.name == ev.PROCESS_EXITED) == "exited 3"
    assert json.loads((tmp_path / "o" / "session.json").read_text())["state"] == "failed"
    # the monitor's Training pane says the command failed, and its last words, though it never called init()
    failed = next(e.data for e in events if e.name == ev.TRAINING_FAILED)
    assert failed["error"] == f"{Path(sys.executable).name} exited 3: to stderr"
    err = capsys.readouterr().err
    assert "to stderr" in err and f"error: {Path(sys.executable).name} exited 3: to stderr" in err


def test_a_script_that_dies_before_finish_ends_its_run_as_failed(tmp_path: Path):
    script = ("import os, time, kbert_tui; run = kbert_tui.init('dies'); run.log({'loss': 1.0}); "
              "time.sleep(0.5); os.kill(os.getpid(), 9)")  # the log's writer puts lines on disk within ms
    assert main(["watch", "--output-dir", str(tmp_path / "o"), "--", sys.executable, "-c", script]) == 137
    events = events_of(tmp_path / "o")
    failed = next(e.data for e in events if e.name == ev.TRAINING_FAILED)
    assert failed["error"] == "the script killed by SIGKILL before run.finish()"
    assert [e.name for e in events if e.name.startswith("process.")][-1] == ev.PROCESS_EXITED


@pytest.mark.parametrize(("command", "says"), [
    (["no-such-command-xyz", "arg"], "kbert-tui: error: watch: no-such-command-xyz: command not found\n"),
    (["./missing.py"], "kbert-tui: error: watch: ./missing.py: no such file\n"),
    ([], "kbert-tui: error: watch: no command given (kbert-tui watch -- python train.py)\n"),
])
def test_a_command_that_cannot_start_is_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch, command, says):
    monkeypatch.chdir(tmp_path)
    assert main(["watch", "--", *command]) == 2
    assert capsys.readouterr().err == says
    assert not (tmp_path / "runs").exists()


def start_watch(tmp_path: Path, *command: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    process = subprocess.Popen([*KBERT, "watch", "--headless", "--output-dir", str(out), "--", *command],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, out


def test_pause_and_stop_from_attach_reach_the_script(tmp_path: Path):
    process, out = start_watch(tmp_path, sys.executable, str(EXAMPLE), "--epochs", "50", "--delay", "0.05")
    try:
        wait_for_event(out, ev.TRAINING_BATCH_COMPLETED)
        monitor = AttachedRun(resolve_run(out))
        monitor.send_control(ev.CONTROL_PAUSE_REQUESTED, {})
        wait_for_event(out, ev.TRAINING_PAUSED)
        steps = sum(e.name == ev.TRAINING_BATCH_COMPLETED for e in events_of(out))
        time.sleep(0.6)
        assert sum(e.name == ev.TRAINING_BATCH_COMPLETED for e in events_of(out)) == steps  # it waits
        monitor.send_control(ev.CONTROL_STOP_REQUESTED, {"reason": "seen enough"})
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "stop requested at step" in stdout
    names = [e.name for e in events_of(out)]
    assert names.index(ev.TRAINING_PAUSED) < names.index(ev.TRAINING_STOPPED) < names.index(ev.PROCESS_EXITED)
    assert json.loads((out / "session.json").read_text())["state"] == "stopped"


def test_ctrl_c_stops_a_script_that_logs_through_the_client_and_exits_130(tmp_path: Path):
    process, out = start_watch(tmp_path, sys.executable, str(EXAMPLE), "--epochs", "50", "--delay", "0.05")
    try:
        wait_for_event(out, ev.TRAINING_BATCH_COMPLETED)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "stop requested at step" in stdout
    stopped = next(e.data for e in events_of(out) if e.name == ev.TRAINING_STOPPED)
    assert stopped["reason"] == "session closed"
    assert json.loads((out / "session.json").read_text())["state"] == "stopped"


def test_ctrl_c_stops_a_script_that_does_not_log_with_signals_and_exits_130(tmp_path: Path):
    process, out = start_watch(tmp_path, sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)")
    try:
        wait_for_event(out, ev.PROCESS_OUTPUT)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    exited = next(e.data for e in events_of(out) if e.name == ev.PROCESS_EXITED)
    assert exited["how"] in ("killed by SIGINT", "exited 1") and exited["seconds"] < 30


# ---------------------------------------------------------------------- in a real terminal (tmux)

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@needs_tmux
def test_in_a_terminal_watch_shows_the_script_and_attach_pauses_and_stops_it(tmp_path: Path):
    from test_cli_bad_input import Tmux

    python = shutil.which("python", path=str(Path(sys.executable).parent)) or sys.executable
    watched = Tmux(tmp_path, [*KBERT, "watch", "--output-dir", "run", "--", python, str(EXAMPLE),
                              "--epochs", "50", "--delay", "0.1"])
    attached = None
    try:
        watched.wait_for("RUNNING")
        watched.wait_for("training.batch_completed")
        attached = Tmux(tmp_path, [*KBERT, "attach", "run"])
        attached.wait_for("RUNNING")
        attached.keys("p")
        watched.wait_for("PAUSED")
        attached.wait_for("PAUSED")
        attached.keys("s")
        attached.wait_for("Stop")
        attached.keys("y")
        screen = watched.wait_for("STOPPED")
        assert "process.exited" in watched.wait_for("process.exited")
        assert "stop requested at step" in screen or "stop requested" in watched.screen()
        watched.keys("q")
        assert watched.exit_status() == 0
        assert "exited 0; events:" in watched.screen()
    finally:
        watched.close()
        if attached is not None:
            attached.close()
    names = [e.name for e in events_of(tmp_path / "run")]
    assert ev.TRAINING_PAUSED in names and ev.TRAINING_STOPPED in names
    stop = next(e for e in events_of(tmp_path / "run") if e.name == ev.CONTROL_STOP_REQUESTED)
    assert stop.data["requested_by"].startswith("attach ")


def test_an_earlier_watchs_leftover_outbox_is_not_this_runs(tmp_path: Path):
    out = tmp_path / "o"
    out.mkdir()
    stale = '{"id":"x-1","name":"training.started","timestamp":"2026-01-01T00:00:00+00:00","source":"client",' \
            '"correlation_id":"old","data":{},"metadata":{}}\n'
    (out / "watch-outbox.jsonl").write_text(stale)
    (out / "watch-outbox.1.jsonl").write_text(stale)  # a rotated segment of it
    assert main(["watch", "--output-dir", str(out), "--", sys.executable, "-c", "print('fresh')"]) == 0
    assert ev.TRAINING_STARTED not in [e.name for e in events_of(out)]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("watch-")) == []


def test_a_command_the_system_cannot_execute_is_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.bin"
    script.write_bytes(b"\x7fELF not really\n")
    script.chmod(0o755)
    assert main(["watch", "--output-dir", "o", "--", str(script)]) == 2
    err = capsys.readouterr().err
    assert err.endswith(f"kbert-tui: error: {script}: Exec format error\n")
    assert not (tmp_path / "o").exists()  # nothing written


def test_output_lines_are_kept_without_colours_and_redraws(tmp_path: Path, capsys):
    script = ("import sys; print('\\x1b[1;32mgreen\\x1b[0m done'); "
              "print('10%\\r50%\\r\\x1b[2K100% \\x1b]0;title\\x07ok')")
    assert main(["watch", "--output-dir", str(tmp_path / "o"), "--", sys.executable, "-c", script]) == 0
    lines = [e.data["line"] for e in events_of(tmp_path / "o") if e.name == ev.PROCESS_OUTPUT]
    assert lines == ["green done", "100% ok"]
    assert "\x1b[1;32mgreen" in capsys.readouterr().out  # passed through as the command wrote it
