"""Loading a recording end first: the end state from the tail and the milestones equals the full reduction's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from simulate import simulate_run

from kbert_tui.events.store import JsonlStore, read_events
from kbert_tui.state import RunState
from kbert_tui.state.replay_load import load_all, load_end


def write(path: Path, events, segment_mb: float = 100.0) -> None:
    store = JsonlStore(path, max_file_size_mb=segment_mb)
    for event in events:
        store.append(event)
    store.close()


def test_the_end_matches_the_whole_reduction_across_segments_and_runs(tmp_path: Path):
    events = list(simulate_run(epochs=3, steps_per_epoch=400, run_id="run-a", system_every=2))
    events += list(simulate_run(epochs=2, steps_per_epoch=300, run_id="run-b", system_every=2))
    path = tmp_path / "events.jsonl"
    write(path, events, segment_mb=0.2)
    files = read_events(path).files
    assert len(files) > 2
    full = RunState()
    full.apply_all(events)
    end = load_end(files, capacity=1000, tail_bytes=64 << 10)
    assert end.runs == 2 and end.run_ids == ["run-a", "run-b"]
    assert 0 < end.log.total < len(events) and end.log.get(end.log.total - 1).id == events[-1].id
    a, b = end.state.training, full.training
    assert (a.run_id, a.status, a.epochs_done, a.step, a.loss, a.best_value, a.best_epoch) == (
        b.run_id, b.status, b.epochs_done, b.step, b.loss, b.best_value, b.best_epoch) == (
        "run-b", "completed", 2, 600, b.loss, b.best_value, b.best_epoch)
    assert [m["epoch"] for m in a.epoch_metrics] == [1, 2]  # the second run's, not both
    assert {n: p.state for n, p in end.state.plugins.plugins.items()} == {
        n: p.state for n, p in full.plugins.plugins.items()}
    state, log = load_all(iter(read_events(path)), capacity=1000)
    assert log.total == len(events) and log.evicted == len(events) - 1000
    assert log.get(log.total - 1).id == events[-1].id and log.get(log.base).id == events[-1000].id
    assert state.training.loss_history.count == full.training.loss_history.count == 600


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_replaying_a_device_or_a_fifo_exits_2_in_one_line_instead_of_reading_forever(tmp_path: Path, kind: str):
    if kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "events.jsonl"
        os.mkfifo(path)
        writer = subprocess.Popen(["sh", "-c", f"cat /dev/zero > {path}"])  # a FIFO that never ends
    try:
        done = subprocess.run([sys.executable, "-m", "kbert_tui", "replay", str(path)], capture_output=True,
                              check=False,
                              text=True, timeout=20, stdin=subprocess.DEVNULL)
    finally:
        if kind == "fifo":
            writer.kill()
            writer.wait()
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.count("\n") == 1 and "not a regular file" in done.stderr and str(path) in done.stderr
    with pytest.raises(OSError, match="not a regular file"):
        read_events(path)


def test_the_end_of_a_log_written_with_spaces_and_escapes_finds_its_milestones(tmp_path: Path):
    events = list(simulate_run(epochs=3, steps_per_epoch=200, run_id="run-s", system_every=2))
    path = tmp_path / "events.jsonl"
    write(path, events)
    lines = path.read_bytes().splitlines()
    spaced = [json.dumps(json.loads(line)).encode() for line in lines]  # json.dumps' default separators
    spaced[0] = spaced[0].replace(b'"name": "training.', b'"name": "tr\\u0061ining.')  # the start, escaped
    path.write_bytes(b"\n".join(spaced) + b"\n")
    full = RunState()
    full.apply_all(events)
    end = load_end(read_events(path).files, capacity=1000, tail_bytes=16 << 10)
    a, b = end.state.training, full.training
    assert end.runs == 1 and end.run_ids == ["run-s"]
    assert (a.run_id, a.status, a.epochs_done, a.best_epoch) == (b.run_id, b.status, b.epochs_done, b.best_epoch)
    assert [m["epoch"] for m in a.epoch_metrics] == [1, 2, 3]
