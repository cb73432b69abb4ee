"""A real `kbert-tui run` process: Ctrl-C, SIGINT, SIGTERM and SIGHUP stop it cleanly (headless, and in the
monitor in a real terminal under tmux), and a handler that never returns can't keep it alive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbert_tui.training.testing import tiny_document

from test_cli import write_toml
from test_cli_bad_input import tmux  # noqa: F401  -- the fixture: a command in a detached 120x40 tmux session


def _start(config: Path, out: Path, env_path: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(env_path), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "kbert_tui", "run", str(config), "--headless", "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )


def _names(path: Path) -> list[str]:
    return [json.loads(line)["name"] for line in path.read_text().splitlines()]


def test_sigterm_stops_the_run_with_a_checkpoint_and_exits_143(tmp_path):
    document = tiny_document(tmp_path, training={"epochs": 500})
    config = write_toml(tmp_path / "long.toml", document)
    out = tmp_path / "out"
    proc = _start(config, out)
    events = out / "events.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if events.exists() and b"training.batch_completed" in events.read_bytes():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError(f"the run never started: {proc.communicate()}")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    names = _names(events)
    assert "training.stopped" in names and "training.completed" not in names
    stopped = [json.loads(line) for line in events.read_text().splitlines() if '"training.stopped"' in line][0]
    assert Path(stopped["data"]["checkpoint_path"]).exists()


PLUGIN = '''
import time
from kbert_tui.plugins import PluginPort


class StuckPlugin(PluginPort):
    name, version = "stuck", "1.0.0"

    async def initialize(self) -> None:
        await self.subscribe("training.epoch_completed", self.on_epoch)

    def on_epoch(self, event) -> None:
        while True:  # blocking I/O that never returns
            time.sleep(1)
'''


def test_a_handler_that_blocks_the_loop_for_good_neither_loses_events_nor_hangs_the_process(tmp_path):
    (tmp_path / "stuck_plugin.py").write_text(PLUGIN)
    document = tiny_document(tmp_path, training={"epochs": 3})
    document["plugins"] = {"stuck": {"plugin": "stuck_plugin:StuckPlugin"}}
    config = write_toml(tmp_path / "stuck.toml", document)
    out = tmp_path / "out"
    started = time.monotonic()
    proc = _start(config, out, env_path=tmp_path)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the process hung") from None
    names = _names(out / "events.jsonl")
    # The worker thread went on; everything it emitted reached the log although the loop never turned.
    assert names.count("training.epoch_completed") == 3 and "training.completed" in names
    assert "gave up waiting for" in stderr and "stuck:StuckPlugin.on_epoch" in stderr, stderr
    assert proc.returncode == 0, stderr
    # the loop never ran the session's close: the guard gave session.json its final state (it stayed "running")
    assert json.loads((out / "session.json").read_text())["state"] == "completed"
    assert time.monotonic() - started < 110


def _wait_for_steps(events: Path, proc: subprocess.Popen[str] | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists() and b"training.batch_completed" in events.read_bytes():
            return
        time.sleep(0.1)
    if proc is not None:
        proc.kill()
        raise AssertionError(f"the run never started: {proc.communicate()}")
    raise AssertionError("the run never started")


def _stopped_cleanly(out: Path) -> None:
    """The run ended by a stop: training.stopped with its checkpoint in the log, session.json final."""
    events = out / "events.jsonl"
    names = _names(events)
    assert "training.stopped" in names and "training.completed" not in names
    stopped = [json.loads(line) for line in events.read_text().splitlines() if '"training.stopped"' in line][0]
    assert Path(stopped["data"]["checkpoint_path"]).exists()
    info = json.loads((out / "session.json").read_text())
    assert info["state"] == "stopped" and info.get("ended_at")


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_sigint_and_sighup_stop_a_headless_run_with_a_checkpoint(tmp_path, signum, status):
    document = tiny_document(tmp_path, training={"epochs": 5000})
    config = write_toml(tmp_path / "long.toml", document)
    out = tmp_path / "out"
    proc = _start(config, out)
    _wait_for_steps(out / "events.jsonl", proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert "stopping the run and saving a checkpoint" in stderr and "Traceback" not in stderr
    _stopped_cleanly(out)


# ---------------------------------------------------------------------- the monitor in a real terminal (tmux)

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture
def monitor(tmp_path, tmux):  # noqa: F811 -- the fixture imported above, asked for by name
    """`kbert-tui run` of a long tiny run in the monitor, in a real terminal, once its steps show."""
    document = tiny_document(tmp_path, training={"epochs": 5000})
    out = tmp_path / "out"
    config = write_toml(tmp_path / "long.toml", document)
    session = tmux([sys.executable, "-m", "kbert_tui", "run", config.name, "--output-dir", str(out)])
    _wait_for_steps(out / "events.jsonl")
    session.wait_for("RUNNING")
    session.out = out
    return session


@needs_tmux
def test_ctrl_c_in_the_monitor_stops_the_run_with_a_checkpoint_and_exits_130(monitor):
    monitor.keys("C-c")  # was Textual's "Press ctrl+q to quit" toast, the run going on
    assert monitor.exit_status() == 130, monitor.screen()
    assert "interrupted (Ctrl-C): the run was stopped with a checkpoint" in monitor.screen()
    _stopped_cleanly(monitor.out)


@needs_tmux
def test_ctrl_q_asks_then_stops_the_run_and_exits_3(monitor):
    monitor.keys("C-q")
    monitor.wait_for("Stop & quit")
    monitor.keys("y")
    assert monitor.exit_status() == 3, monitor.screen()
    _stopped_cleanly(monitor.out)


@needs_tmux
@pytest.mark.parametrize("signum, status, why", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                                 (signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                 (signal.SIGHUP, 129, "hung up (SIGHUP)")])
def test_a_signal_to_the_monitor_stops_the_run_and_leaves_session_json_final(monitor, signum, status, why):
    pid = json.loads((monitor.out / "session.json").read_text())["pid"]
    os.kill(pid, signum)  # SIGINT exited 0 with session.json still "running"
    assert monitor.exit_status() == status, monitor.screen()
    assert f"{why}: the run was stopped with a checkpoint" in monitor.screen()
    _stopped_cleanly(monitor.out)


@needs_tmux
def test_closing_the_terminal_stops_the_run_and_ends_the_process(monitor):
    pid = json.loads((monitor.out / "session.json").read_text())["pid"]
    monitor.close()  # the terminal goes away: SIGHUP, and every later write to it fails
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:  # it hung: Textual blocked restoring the terminal and the exit guard died printing to it
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the monitor's process outlived its terminal by 40 s")
    _stopped_cleanly(monitor.out)
