"""A real `kbert-tui run` process: SIGTERM stops it cleanly, and a handler that never returns can't keep it alive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kbert_tui.training.testing import tiny_document

from test_cli import write_toml


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
        raise AssertionError("the process hung")
    names = _names(out / "events.jsonl")
    # The worker thread went on; everything it emitted reached the log although the loop never turned.
    assert names.count("training.epoch_completed") == 3 and "training.completed" in names
    assert "gave up waiting for" in stderr and "stuck:StuckPlugin.on_epoch" in stderr, stderr
    assert proc.returncode == 0, stderr
    assert time.monotonic() - started < 110
