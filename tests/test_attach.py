"""`kbert-tui attach`: monitors in other processes follow a headless run, steer it, and leave it alone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbert_tui.cli import main
from kbert_tui.events import EventBus
from kbert_tui.events.store import read_events
from kbert_tui.remote import AttachedRun, LocalControlWatcher, RunInfo, resolve_run, send_control
from kbert_tui.tui import AttachSource, MonitorApp
from kbert_tui.tui.screens import ConfirmScreen
from test_tui_live import wait_for  # drains the monitor while it waits

RUN_SCRIPT = """
import sys
from pathlib import Path
from kbert_tui.headless import run_headless
from kbert_tui.training.testing import tiny_config
folder, epochs = Path(sys.argv[1]), int(sys.argv[2])
sys.exit(run_headless(tiny_config(folder, training={"epochs": epochs}), None))
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


class HeadlessRun:
    """`kbert-tui run --headless` on the tiny dataset, in another process."""

    def __init__(self, folder: Path, epochs: int) -> None:
        self.out = folder / "out"
        self.proc = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, str(folder), str(epochs)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))

    def wait_started(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.out / "events.jsonl"
            if events.exists() and b"training.started" in events.read_bytes():
                return
            assert self.proc.poll() is None, self.proc.stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.05)
        raise AssertionError("the run did not start")

    def finish(self, timeout: float = 120.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> list:
        return list(read_events(self.out / "events.jsonl"))


async def test_a_monitor_attached_to_a_headless_run_sees_it_live_pauses_resumes_and_stops_it(tmp_path: Path):
    run = HeadlessRun(tmp_path, epochs=2000)
    try:
        run.wait_started()
        source = AttachSource(AttachedRun(resolve_run(run.out)))
        app = MonitorApp(source)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: source.run.live and app.state.training.step > 0)
            step = app.state.training.step
            await wait_for(pilot, lambda: app.state.training.step >= step + 5)  # live: it keeps moving
            assert source.controllable and "live" in source.describe()
            await pilot.press("p")
            await wait_for(pilot, lambda: app.state.training.status == "paused")
            paused_at = app.state.training.step
            await pilot.pause(0.5)
            app.drain_all()
            assert app.state.training.step == paused_at  # really paused, in the other process
            await pilot.press("p")
            await wait_for(pilot, lambda: app.state.training.step > paused_at)
            await pilot.press("s")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, lambda: source.run.ended)
            assert source.run.outcome == "stopped" and app.state.training.status == "stopped"
            await pilot.press("q")
            await pilot.pause()
        assert run.finish() >= 0  # it exited by itself (its status for "stopped" is the CLI's business)
    finally:
        run.finish()
    log = run.log()
    assert [app.log_index.get(i).id for i in range(app.log_index.total)] == [e.id for e in log]
    requests = [e for e in log if e.name.startswith("control.")]
    assert [e.name for e in requests] == ["control.pause_requested", "control.resume_requested",
                                          "control.stop_requested"]
    for request in requests:
        assert request.source == "attach" and request.data["via"] == "control file"
        assert request.data["requested_by"].startswith("attach ") and "pid" in request.data["requested_by"]
    effects = {e.name: e for e in log if e.name in ("training.paused", "training.resumed", "training.stopped")}
    assert set(effects) == {"training.paused", "training.resumed", "training.stopped"}
    assert all(e.data["requested_by"] == requests[0].data["requested_by"] for e in effects.values())
    assert RunInfo.read(run.out / "session.json").state == "stopped"


async def test_two_monitors_at_once_and_detaching_leaves_the_run_alone(tmp_path: Path):
    run = HeadlessRun(tmp_path, epochs=150)  # long enough to detach mid-run on a loaded machine
    try:
        run.wait_started()
        watcher = AttachedRun(resolve_run(run.out))
        first = AttachSource(AttachedRun(resolve_run(run.out / "events.jsonl")))
        app = MonitorApp(first)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.state.training.step > 0)
            await pilot.press("q")  # a detaching monitor asks nothing
            await pilot.pause()
        assert run.proc.poll() is None  # still training
        seen = []
        deadline = time.monotonic() + 120
        while not watcher.ended and time.monotonic() < deadline:
            batch = watcher.read(1000)
            seen.extend(batch)
            if not batch:
                time.sleep(0.02)
        assert run.finish() == 0
    finally:
        run.finish()
    log = run.log()
    assert watcher.outcome == "completed" and watcher.note == "the run ended: completed"
    assert [e.id for e in seen] == [e.id for e in log]
    assert not any(e.name.startswith("control.") for e in log)


async def test_attach_to_a_finished_run_is_a_replay_and_headless_prints_like_replay(tmp_path: Path, capsys,
                                                                                   monkeypatch):
    run = HeadlessRun(tmp_path, epochs=2)
    assert run.finish() == 0
    log = run.log()
    attached = AttachedRun(resolve_run(run.out))
    events = []
    while batch := attached.read(100):
        events.extend(batch)
    assert attached.ended and attached.outcome == "completed"
    assert [e.id for e in events] == [e.id for e in log]
    assert attached.time_to_live is not None

    assert main(["replay", str(run.out / "events.jsonl")]) == 0
    replay_lines = capsys.readouterr().out.splitlines()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (run.out).rename(tmp_path / "runs" / "only")
    assert main(["attach"]) == 0  # the newest run under runs/
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == replay_lines[1:] + ["the run ended: completed"]


def test_attach_headless_follows_a_live_run_to_its_end(tmp_path: Path, capsys):
    run = HeadlessRun(tmp_path, epochs=40)
    try:
        run.wait_started()
        assert main(["attach", str(run.out)]) == 0
    finally:
        run.finish()
    out = capsys.readouterr().out
    assert "epoch 40:" in out and out.rstrip().endswith("the run ended: completed")
    assert "following" in out  # it was attached while the run was going


def test_attach_to_something_that_is_not_a_run_exits_2(tmp_path: Path, capsys, monkeypatch):
    assert main(["attach", str(tmp_path / "nope")]) == 2
    assert "cannot attach" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["attach", str(tmp_path / "empty")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["attach"]) == 2
    assert "no run found under" in capsys.readouterr().err


async def test_read_only_sends_nothing_and_a_log_without_a_process_offers_no_control(tmp_path: Path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("")
    RunInfo(run_id="r1", pid=os.getpid(), host=os.uname().nodename, events=str(folder / "events.jsonl")).write(
        folder / "session.json")
    target = resolve_run(folder)
    read_only = AttachSource(AttachedRun(target), read_only=True)
    assert not read_only.controllable and "read-only" in read_only.describe()
    app = MonitorApp(read_only)
    async with app.run_test(size=(120, 40)) as pilot:
        app.state.training.status = "running"
        await pilot.press("p")
        await pilot.pause(0.1)
    assert not (folder / "control.jsonl").exists()
    RunInfo(run_id="r1", pid=os.getpid(), host=os.uname().nodename, events=str(folder / "events.jsonl"),
            state="completed").write(folder / "session.json")
    assert not AttachSource(AttachedRun(target)).controllable  # nobody watches the control file any more


async def test_the_control_watcher_relays_requests_for_its_run_and_rejects_the_rest(tmp_path: Path):
    events_path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=events_path)
    watcher = LocalControlWatcher(bus, "run-1", events_path, poll_s=0.01)
    (tmp_path / "control.jsonl").write_text('{"name":"control.stop_requested","data":{}}\n')  # before: ignored
    await watcher.start()
    info = json.loads((tmp_path / "session.json").read_text())
    assert info["state"] == "running" and info["pid"] == os.getpid()
    control = tmp_path / "control.jsonl"
    send_control(control, "control.pause_requested", {"requested_by": "me"}, source="attach", run_id="run-1")
    send_control(control, "control.resume_requested", {}, source="attach", run_id="another-run")
    with open(control, "a") as fh:
        fh.write('{"name":"control.explode","timestamp":"2026-01-01T00:00:00+00:00","data":{}}\n')
        fh.write("not json\n")
    for _ in range(200):
        await bus.flush()
        if any(e.name == "control.request_rejected" for e in bus.history):
            break
        await asyncio.sleep(0.01)
    for _ in range(200):
        await bus.flush()
        if sum(e.name == "control.request_rejected" for e in bus.history) == 2:
            break
        await asyncio.sleep(0.01)
    names = [e.name for e in bus.history]
    assert sorted(names) == ["control.pause_requested", "control.request_rejected", "control.request_rejected"]
    reasons = sorted(e.data["reason"] for e in bus.history if e.name == "control.request_rejected")
    assert reasons[0] == "not a control request" and reasons[1].startswith("not an event line: not JSON")
    [pause] = [e for e in bus.history if e.name == "control.pause_requested"]
    assert pause.data["requested_by"] == "me" and pause.data["via"] == "control file"
    assert pause.correlation_id == "run-1" and pause.source == "attach"
    await bus.shutdown()
    await watcher.close("completed")
    assert RunInfo.read(tmp_path / "session.json").state == "completed"
    with pytest.raises(ValueError):
        send_control(control, "training.started", {}, source="x", run_id=None)


async def test_a_request_that_cannot_be_sent_is_shown_not_raised(tmp_path: Path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("")
    RunInfo(run_id="r1", pid=os.getpid(), host=os.uname().nodename, events=str(folder / "events.jsonl")).write(
        folder / "session.json")
    (folder / "control.jsonl").mkdir()  # unwritable as a file, like someone else's run's control file
    source = AttachSource(AttachedRun(resolve_run(folder)))
    app = MonitorApp(source)
    async with app.run_test(size=(120, 40)) as pilot:
        app.state.training.status = "running"
        await pilot.press("p")
        for _ in range(50):
            await pilot.pause(0.02)
            if source.control_error:
                break
        assert app.is_running
    assert "request not sent: IsADirectoryError" in source.describe()


# ------------------------------------------------------------------ the control file, attacked (issue 19)


class ControlledRun:
    """A bus with its log and a LocalControlWatcher on `folder`, for poking at the control file."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        self.events_path = folder / "events.jsonl"
        self.control = folder / "control.jsonl"
        self.bus = EventBus(enable_persistence=True, persistence_path=self.events_path)
        self.watcher = LocalControlWatcher(self.bus, "run-1", self.events_path, poll_s=0.01)

    def names(self) -> list[str]:
        return [e.name for e in self.bus.history]

    def of(self, name: str) -> list:
        return [e for e in self.bus.history if e.name == name]

    async def settle(self, until=lambda: False, turns: int = 100) -> None:
        for _ in range(turns):
            await self.bus.flush()
            if until():
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.bus.shutdown()
        await self.watcher.close("completed")


def _request(name: str = "control.stop_requested", **fields) -> bytes:
    from kbert_tui.remote.local import control_line

    _, line = control_line(name, fields.pop("data", {"requested_by": "me"}), source=fields.pop("source", "attach"),
                           run_id="run-1")
    record = json.loads(line)
    record.update(fields)
    return json.dumps(record).encode() + b"\n"


@pytest.mark.parametrize("kind", ["symlink", "mode 0666"])
async def test_a_control_file_others_could_write_is_refused_and_never_read(tmp_path: Path, kind: str):
    run = ControlledRun(tmp_path / "run")
    if kind == "symlink":
        elsewhere = tmp_path / "shared" / "anyone.jsonl"
        elsewhere.parent.mkdir()
        elsewhere.write_text("")
        run.control.symlink_to(elsewhere)
        expected = "is a symbolic link"
    else:
        run.control.write_text("")
        run.control.chmod(0o666)
        expected = "writable by group or others (mode 0666)"
    await run.watcher.start()
    with open(run.control, "ab") as fh:
        fh.write(_request())
    await run.settle(turns=30)
    assert "control.stop_requested" not in run.names()
    [refused] = run.of("control.request_rejected")
    assert expected in refused.data["reason"] and "control requests through it are off" in refused.data["reason"]
    assert refused.data["via"] == "control file" and run.watcher.problem == refused.data["reason"]
    assert not AttachedRun(resolve_run(tmp_path / "run")).controllable  # session.json says so: no p / s
    await run.close()


async def test_bad_lines_are_rejected_in_bounded_numbers_and_a_huge_line_is_skipped_unread(tmp_path: Path):
    run = ControlledRun(tmp_path / "run")
    await run.watcher.start()
    with open(run.control, "ab") as fh:
        fh.write(b"not json\n")
        fh.write(b"x" * (2 << 20) + b"\n")  # 2 MB: skipped without being held or parsed
        fh.write(_request("control.pause_requested"))
    await run.settle(lambda: "control.pause_requested" in run.names())
    rejected = run.of("control.request_rejected")
    assert sorted(e.data["reason"].split(":")[0] for e in rejected) == ["a line longer than 65536 bytes",
                                                                        "not an event line"]
    assert "control.pause_requested" in run.names()
    from kbert_tui.remote.local import RejectionBudget

    now = [0.0]
    run.watcher.rejections = RejectionBudget(limit=3, window_s=60.0, clock=lambda: now[0])
    with open(run.control, "ab") as fh:
        fh.write(b"".join(b"{garbage %d\n" % n for n in range(100)))
    await run.settle(lambda: run.watcher.rejections.rejected >= 100)
    assert run.watcher.rejections.rejected == 100 and len(run.of("control.request_rejected")) == 2 + 3
    now[0] = 61.0  # a minute later the next one is written, with the count of those left out
    with open(run.control, "ab") as fh:
        fh.write(b"[1]\n")
    await run.settle(lambda: len(run.of("control.request_rejected")) == 6)
    assert run.of("control.request_rejected")[-1].data["suppressed"] == 97
    await run.close()


async def test_the_same_request_appended_twice_is_acted_on_once(tmp_path: Path):
    run = ControlledRun(tmp_path / "run")
    await run.watcher.start()
    line = _request("control.checkpoint_requested")
    respaced = json.dumps(json.loads(line), separators=(",", ":")).encode() + b"\n"
    with open(run.control, "ab") as fh:
        fh.write(line + line + respaced)  # the same line twice, then the same request id written another way
    await run.settle(lambda: len(run.of("control.request_rejected")) == 2)
    assert len(run.of("control.checkpoint_requested")) == 1
    assert [e.data["reason"] for e in run.of("control.request_rejected")] == [
        "the same line again: acted on once", "already acted on (the same request id again)"]
    await run.close()


async def test_the_run_names_the_source_and_keeps_only_clipped_known_fields(tmp_path: Path):
    run = ControlledRun(tmp_path / "run")
    await run.watcher.start()
    with open(run.control, "ab") as fh:
        fh.write(_request(source="trainer", data={"requested_by": "\x1b]0;PWNED\x07\x1b[2J" + "y" * 5000,
                                                  "reason": "r" * 500, "extra": "z" * 10_000}))
    await run.settle(lambda: "control.stop_requested" in run.names())
    [stop] = run.of("control.stop_requested")
    assert stop.source == "attach"  # the sender said "trainer"
    assert set(stop.data) == {"requested_by", "reason", "via", "request_id"}
    assert stop.data["requested_by"].startswith("\\x1b]0;PWNED\\x07\\x1b[2J")
    assert "\x1b" not in stop.data["requested_by"]
    assert len(stop.data["requested_by"]) == 200 and len(stop.data["reason"]) == 200
    await run.close()


async def test_a_64_mb_line_does_not_hold_the_loop(tmp_path: Path):
    run = ControlledRun(tmp_path / "run")
    await run.watcher.start()
    with open(run.control, "ab") as fh:
        fh.write(b"z" * (64 << 20) + b"\n")
        fh.write(_request("control.pause_requested"))
    longest, last = 0.0, time.perf_counter()
    for _ in range(3000):
        await asyncio.sleep(0)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
        if "control.pause_requested" in run.names():
            break
        await run.bus.flush()
    assert "control.pause_requested" in run.names()
    assert longest < 0.5, f"the loop stood still {longest:.2f} s"  # it read the whole line at once: 4.2 s
    await run.close()


def test_a_monitor_does_not_append_through_a_symlinked_control_file(tmp_path: Path):
    from kbert_tui.remote.local import send_control as send

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "control.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        send(tmp_path / "control.jsonl", "control.stop_requested", {}, source="attach", run_id="r")
    assert victim.read_text() == "precious\n"
