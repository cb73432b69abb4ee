"""Multi-rank training through `mlx.launch` (ring backend on 127.0.0.1): ranks in every event, one merged run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path

import numpy as np
import pytest

from kbert_tui.cli import main
from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.events.store import read_events
from kbert_tui.remote import AttachedRun, rank_logs, resolve_run
from kbert_tui.state import RunState
from kbert_tui.state.ranks import MergedLogReader
from kbert_tui.training.distributed import Ranks, rank_events_path
from kbert_tui.training.testing import tiny_document
from kbert_tui.training.steps import class_counts
from test_cli import write_toml

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


def ranked(name: str, data: dict, rank: int, seconds: float, world: int = 2) -> Event:
    return Event(name=name, data=data, timestamp=T0 + timedelta(seconds=seconds), source="trainer",
                 correlation_id="run-1", metadata={"rank": rank, "world_size": world, "host": "h"})


def batch(rank: int, step: int, seconds: float, loss: float = 0.5) -> Event:
    return ranked(ev.TRAINING_BATCH_COMPLETED, {"batch": step, "step": step, "epoch": 1, "loss": loss,
                                                "metrics": {"step_time_ms": 10.0 + rank}}, rank, seconds)


# ---------------------------------------------------------------------- plain pieces


def test_a_rank_takes_every_world_size_th_row_and_names_its_log():
    rows = np.arange(7)
    assert Ranks(rank=1, world_size=2).shard(rows).tolist() == [1, 3, 5]
    assert Ranks(rank=0, world_size=2).shard(rows).tolist() == [0, 2, 4, 6]
    assert Ranks().shard(rows).tolist() == rows.tolist()
    assert Ranks().share_text("run-1") == "run-1"  # one process: no collective
    assert Ranks().all_sum([1.0, 2.0]).tolist() == [1.0, 2.0]
    log = Path("/r/events.jsonl")
    assert rank_events_path(log, 0) == log
    assert rank_events_path(log, 3) == Path("/r/events.rank3.jsonl")


def test_class_counts_sum_across_shards_to_the_whole_sets_counts():
    truth, pred = np.array([0, 1, 1, 2, 0, 1]), np.array([0, 1, 0, 2, 2, 1])
    whole = class_counts(truth, pred, 3)
    halves = class_counts(truth[0::2], pred[0::2], 3) + class_counts(truth[1::2], pred[1::2], 3)
    assert whole.tolist() == halves.tolist()
    tp, fp, fn = whole.reshape(3, 3)
    assert tp.tolist() == [1, 2, 1] and fp.tolist() == [1, 0, 1] and fn.tolist() == [1, 1, 0]


def test_the_state_keeps_a_lane_per_rank_and_rank_0_drives_the_panes():
    state = RunState()
    state.apply(ranked(ev.TRAINING_STARTED, {"run_id": "run-1", "total_epochs": 1, "steps_per_epoch": 200}, 0, 0))
    for step in range(1, 121):
        state.apply(batch(0, step, step, loss=1.0 / step))
        if step < 120:
            state.apply(batch(1, step, step + 0.01, loss=9.0))  # another rank's numbers never reach the panes
    state.apply(ranked(ev.TRAINING_STARTED, {"run_id": "run-1"}, 1, 0.5))  # a late start does not reset the run
    assert state.ranks.summary() == "ranks 2: r0 step 120 10 ms · r1 step 119 11 ms"
    assert state.training.step == 120 and state.training.loss == pytest.approx(1 / 120)
    assert state.training.loss_history.count == 120
    assert state.ranks.lanes[1].host == "h"
    state.apply(ranked(ev.TRAINING_FAILED, {"error": "rank 1: boom", "error_type": "RuntimeError"}, 1, 200))
    assert state.training.status == "failed" and state.training.error == "rank 1: boom"
    assert "r1 step 119 11 ms failed" in state.ranks.summary()
    assert RunState().ranks.summary() is None  # a single process's run has no lanes


def _write_log(path: Path, events: list[Event]) -> None:
    from kbert_tui.events._codec import encode_event_bytes

    path.write_bytes(b"".join(encode_event_bytes(e) + b"\n" for e in events))


def test_replay_and_attach_read_every_ranks_log_merged_in_time_order(tmp_path: Path):
    rank0 = [batch(0, s, s) for s in (1, 3, 5)]
    rank1 = [batch(1, s, s + 0.5) for s in (1, 3)] + [ranked(ev.TRAINING_COMPLETED, {}, 1, 9)]
    _write_log(tmp_path / "events.jsonl", rank0)
    _write_log(tmp_path / "events.rank1.jsonl", rank1)
    (tmp_path / "events.rank1.1.jsonl").write_text("")  # a rotated segment of rank 1 is not another rank
    (tmp_path / "other.rank2.jsonl").write_text("")  # nor is another log's rank file
    logs = rank_logs(tmp_path / "events.jsonl")
    assert logs == {0: tmp_path / "events.jsonl", 1: tmp_path / "events.rank1.jsonl"}
    merged = list(MergedLogReader(logs))
    assert [e.timestamp for e in merged] == sorted(e.timestamp for e in rank0 + rank1)
    assert [e.metadata["rank"] for e in merged] == [0, 1, 0, 1, 0, 1]
    run = AttachedRun(resolve_run(tmp_path), quiet_s=0.0)
    seen: list[Event] = []
    for _ in range(20):
        seen += run.read()
    run.close()
    assert sorted(e.id for e in seen) == sorted(e.id for e in rank0 + rank1)
    assert [e.timestamp for e in seen] == sorted(e.timestamp for e in seen)


# ---------------------------------------------------------------------- a real 2-rank run


def _launcher() -> str | None:
    return shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or shutil.which("mlx.launch")


def _launch(launcher: str, ranks: int, args: list[str], cwd: Path, timeout: float = 120):
    return subprocess.run([launcher, "-n", str(ranks), "--backend", "ring", "--python", sys.executable, *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ring(tmp_path_factory) -> str:
    """mlx.launch, once it has shown it can run a 2-rank ring on this machine (127.0.0.1)."""
    launcher = _launcher()
    if launcher is None:
        pytest.skip("mlx.launch is not installed beside this Python (it comes with mlx)")
    folder = tmp_path_factory.mktemp("ring")
    (folder / "probe.py").write_text("import mlx.core as mx\ng = mx.distributed.init()\n"
                                     "print('sum', mx.distributed.all_sum(mx.array([1.0]), group=g).item())\n")
    probe = _launch(launcher, 2, ["probe.py"], folder, timeout=60)
    if probe.returncode != 0 or probe.stdout.count("sum 2.0") != 2:
        pytest.skip(f"mlx.launch could not run a 2-rank ring on 127.0.0.1: {(probe.stderr or probe.stdout)[-300:]}")
    return launcher


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _losses(events: list[dict]) -> dict[int, float]:
    return {e["data"]["step"]: e["data"]["loss"] for e in events if e["name"] == ev.TRAINING_BATCH_COMPLETED}


def test_two_ranks_train_one_run_that_matches_one_rank(tmp_path: Path, ring: str):
    write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path))
    two = _launch(ring, 2, ["-m", "kbert_tui", "run", "tiny.toml", "--headless"], tmp_path)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    one = subprocess.run([sys.executable, "-m", "kbert_tui", "run", "tiny.toml", "--headless", "--output-dir", "one"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]

    out = tmp_path / "out"
    r0, r1 = _events(out / "events.jsonl"), _events(out / "events.rank1.jsonl")
    for rank, events in enumerate((r0, r1)):
        # the bus's own reports (bus.*, e.g. a handler abandoned under load) are made inside kbert_tui.events,
        # which knows nothing of ranks: the rank's file says whose they are
        ours = [e for e in events if e["source"] != "bus"]
        assert {(e["metadata"].get("rank"), e["metadata"].get("world_size")) for e in ours} == {(rank, 2)}, \
            [(e["name"], e["metadata"]) for e in ours if e["metadata"].get("rank") != rank]
    assert {e["correlation_id"] for e in r0 + r1 if e.get("correlation_id")} == {r0[0]["correlation_id"]}
    assert [e["name"] for e in r0 + r1].count(ev.TRAINING_COMPLETED) == 2

    # the same loss on both ranks at every step, and the 1-rank run's loss on the same global batch
    loss0, loss1, single = _losses(r0), _losses(r1), _losses(_events(tmp_path / "one" / "events.jsonl"))
    assert loss0 == loss1 and sorted(loss0) == sorted(single) == list(range(1, 13))
    assert all(loss0[s] == pytest.approx(single[s], rel=1e-4) for s in single)

    def final(events: list[dict]) -> dict:
        return next(e for e in events if e["name"] == ev.TRAINING_COMPLETED)["data"]["final_metrics"]

    assert final(r0) == final(r1)
    assert final(r0)["val_accuracy"] == pytest.approx(final(_events(tmp_path / "one" / "events.jsonl"))["val_accuracy"],
                                                      abs=0.05)
    # checkpoints and predictions are rank 0's alone
    assert not [e for e in r1 if e["name"] == ev.MODEL_CHECKPOINT_SAVED]
    assert [e for e in r0 if e["name"] == ev.MODEL_CHECKPOINT_SAVED]
    assert (out / "predictions.csv").is_file()
    assert (out / "metrics.csv").read_text().count("timestamp,") == 1  # plugins run on rank 0 alone

    # a replay of the run directory reads both ranks, merged in time order
    merged = list(MergedLogReader(rank_logs(out / "events.jsonl")))
    assert len(merged) == len(r0) + len(r1)
    assert [e.timestamp for e in merged] == sorted(e.timestamp for e in merged)
    state = RunState()
    state.apply_all(merged)
    assert state.ranks.summary().startswith("ranks 2: r0 step 12 ") and " · r1 step 12 " in state.ranks.summary()
    assert state.training.status == "completed" and state.training.step == 12


def test_run_ranks_launches_the_ranks_itself_and_bad_arguments_say_so(tmp_path: Path, ring: str, capsys):
    write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path, training={"epochs": 1}))
    assert main(["run", str(tmp_path / "tiny.toml"), "--ranks", "2", "--hostfile", "hosts.json"]) == 2
    assert "the hostfile lists the ranks" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "tiny.toml"), "--hostfile", str(tmp_path / "none")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "tiny.toml"), "--ranks", "0"]) == 2
    assert main(["run", str(tmp_path / "tiny.toml"), "--ranks", "2", "--output-dir", str(tmp_path / "two")]) == 0
    logs = rank_logs(tmp_path / "two" / "events.jsonl")
    assert sorted(logs) == [0, 1]
    assert all(any(e.name == ev.TRAINING_COMPLETED for e in read_events(path)) for path in logs.values())


def test_a_stop_from_an_attached_monitor_stops_every_rank_at_the_same_step(tmp_path: Path, ring: str):
    write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path, training={"epochs": 400}))
    # `run --ranks` (mlx.launch exits 0 whatever its ranks did; `run --ranks` reports theirs)
    proc = subprocess.Popen([sys.executable, "-m", "kbert_tui", "run", "tiny.toml", "--ranks", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = tmp_path / "out"
        deadline = time.monotonic() + 60
        while not ((out / "events.rank1.jsonl").exists() and b"batch_completed" in (out / "events.jsonl").read_bytes()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()  # type: ignore[union-attr]
            time.sleep(0.05)
        run = AttachedRun(resolve_run(out))
        run.send_control(ev.CONTROL_STOP_REQUESTED, {"reason": "user"})
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, output[-2000:]  # stopped by the user, on every rank
    stops = {rank: [e for e in read_events(path) if e.name == ev.TRAINING_STOPPED]
             for rank, path in rank_logs(out / "events.jsonl").items()}
    assert len(stops[0]) == len(stops[1]) == 1
    assert stops[0][0].data["step"] == stops[1][0].data["step"]
    assert stops[0][0].data["checkpoint_path"] and stops[1][0].data["checkpoint_path"] is None
    assert stops[1][0].data["requested_by"] == "another rank"


def test_a_rank_that_dies_ends_the_run_failed_without_hanging(tmp_path: Path, ring: str):
    import psutil

    write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path, training={"epochs": 400}))
    proc = subprocess.Popen([sys.executable, "-m", "kbert_tui", "run", "tiny.toml", "--ranks", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, deadline = tmp_path / "out", time.monotonic() + 60
        while not ((out / "events.rank1.jsonl").exists() and b"batch_completed" in (out / "events.jsonl").read_bytes()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()  # type: ignore[union-attr]
            time.sleep(0.05)
        rank1 = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if "kbert_tui" in " ".join(p.cmdline()) and p.environ().get("MLX_RANK") == "1"]
        assert len(rank1) == 1
        rank1[0].kill()
        output, _ = proc.communicate(timeout=60)  # mlx.launch stops rank 0, which gives up on its peer
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, output[-2000:]
    assert "rank 1 ended without an exit status" in output
    failed = [e for e in read_events(out / "events.jsonl") if e.name == ev.TRAINING_FAILED]
    assert len(failed) == 1 and failed[0].data["error"].startswith("rank 0: "), failed


def test_progress_lines_come_from_rank_0_alone(capsys):
    from kbert_tui.cli import _Progress

    _print_progress = _Progress()
    done = {"total_duration": 1.0, "predictions_path": None}
    _print_progress(ranked(ev.TRAINING_COMPLETED, done, 1, 1))
    assert capsys.readouterr().out == ""
    _print_progress(ranked(ev.TRAINING_COMPLETED, done, 0, 1))
    assert capsys.readouterr().out == "completed in 1.0 s\n"
    _print_progress(ranked(ev.TRAINING_STOPPED, {"step": 3, "reason": "user", "checkpoint_path": None}, 0, 1))
    assert "stopped at step 3" in capsys.readouterr().out


def test_a_rank_that_cannot_join_the_others_says_so_in_one_line(tmp_path: Path):
    write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path))
    env = {**os.environ, "MLX_RANK": "0", "MLX_WORLD_SIZE": "2", "MLX_HOSTFILE": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "kbert_tui", "run", "tiny.toml", "--headless"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("kbert-tui: error: cannot join the other ranks (MLX_RANK=0, MLX_HOSTFILE=")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
