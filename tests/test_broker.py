"""Redis Streams: a run publishes its log, viewers read it from anywhere, through outages, and steer it.

Each test starts a private `redis-server` (127.0.0.1, a free port, no persistence, so a restart comes
back empty). Without the binary they skip here, and fail under CI (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from kbert_tui.cli import main
from kbert_tui.config import ConfigError, parse_config
from kbert_tui.events.store import read_events
from kbert_tui.remote.broker import BrokerError, BrokerRun, list_runs, redact
from kbert_tui.remote.testing import RedisServer, redis_server_binary
from kbert_tui.session import RunSession
from kbert_tui.training.testing import tiny_config
from kbert_tui.tui import AttachSource, MonitorApp
from test_tui_live import wait_for  # drains the monitor while it waits


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def redis_server(tmp_path):
    binary = redis_server_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: the broker tests must run in CI (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis", binary).start()
    yield server
    server.stop()


class Viewer(threading.Thread):
    """A viewer in its own thread, reading a run's stream until the run is over."""

    def __init__(self, url: str, run_id: str, **kwargs) -> None:
        super().__init__(daemon=True)
        self.broker = BrokerRun(url, run_id, **kwargs)
        self.seen: list = []

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.broker.ended and time.monotonic() < deadline:
            self.seen.extend(self.broker.read(500))


def _viewer(url: str, run_id: str, **kwargs) -> Viewer:
    viewer = Viewer(url, run_id, **kwargs)
    viewer.start()
    return viewer


async def _until(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def _log(session: RunSession) -> list:
    return list(read_events(session.events_path))


async def test_killing_redis_mid_run_loses_nothing_and_duplicates_nothing(tmp_path: Path, redis_server):
    config = tiny_config(tmp_path, training={"epochs": 150}, events={"broker": redis_server.url})
    session = RunSession(config)
    await session.start()
    try:
        await _until(lambda: session.broker.connected)
        viewer = _viewer(redis_server.url, session.run_id)
        await _until(lambda: session.broker.published > 100)
        redis_server.kill()  # mid-run, with everything it held
        await asyncio.sleep(1.0)
        redis_server.start()  # same port, empty
        outcome = await session.wait()
    finally:
        await session.close()
    await asyncio.get_running_loop().run_in_executor(None, viewer.join, 60)
    log = _log(session)
    assert outcome == "completed"
    assert [e.id for e in viewer.seen] == [e.id for e in log]  # no gap, no duplicate, same order
    assert viewer.broker.reconnects >= 1 and viewer.broker.outcome == "completed"
    down = [e for e in log if e.name == "bus.broker_disconnected"]
    back = [e for e in log if e.name == "bus.broker_reconnected"]
    assert len(down) == 1 and len(back) == 1
    assert back[0].data["behind"] > 0 and back[0].data["republish"] > 0  # the restart came back empty
    assert "127.0.0.1" in down[0].data["broker"] and down[0].data["error"]
    (registered,) = list_runs(redis_server.url)
    assert registered["state"] == "completed" and registered["events_published"] == len(log)
    assert session.broker.unpublished is None


async def test_a_run_with_its_broker_down_trains_as_usual_and_says_so(tmp_path: Path):
    nowhere = RedisServer(tmp_path / "unused")  # a free port nobody listens on
    config = tiny_config(tmp_path, training={"epochs": 2}, events={"broker": nowhere.url})
    session = RunSession(config)
    await session.start()
    assert await session.wait() == "completed"
    started = time.monotonic()
    await session.close()
    assert time.monotonic() - started < 3.0  # close gives up on the broker quickly
    log = _log(session)
    (down,) = [e for e in log if e.name == "bus.broker_disconnected"]
    assert "Connect" in down.data["error"] or "refused" in down.data["error"]
    assert session.broker.unpublished == len(log)  # all of it is in the log, none reached Redis


async def test_control_through_the_broker_needs_the_runs_token(tmp_path: Path, redis_server):
    config = tiny_config(tmp_path, training={"epochs": 2000},
                         events={"broker": redis_server.url, "broker_token": "s3cret"})
    session = RunSession(config)
    await session.start()
    try:
        await _until(lambda: session.broker.published > 10)
        intruder = BrokerRun(redis_server.url, session.run_id, token="guess")
        assert intruder.controllable  # it can ask; the run says no
        intruder.send_control("control.stop_requested", {"reason": "user"})
        await _until(lambda: any(e.name == "control.request_rejected" for e in session.bus.history))
        source = AttachSource(BrokerRun(redis_server.url, session.run_id, token="s3cret"))
        app = MonitorApp(source)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: source.run.live and app.state.training.step > 0)
            assert source.controllable
            await pilot.press("p")
            await wait_for(pilot, lambda: app.state.training.status == "paused")
            await pilot.press("s")
            await pilot.press("y")
            await wait_for(pilot, lambda: app.state.training.status == "stopped")
            await pilot.press("q")
            await pilot.pause()
        assert await session.wait() == "stopped"
    finally:
        await session.close()
    log = _log(session)
    (rejected,) = [e for e in log if e.name == "control.request_rejected"]
    assert rejected.data["reason"] == "wrong token" and rejected.data["via"] == "redis"
    requests = [e for e in log if e.name in ("control.pause_requested", "control.stop_requested")]
    assert [e.name for e in requests] == ["control.pause_requested", "control.stop_requested"]
    assert all(e.source == "broker" and e.data["via"] == "redis" for e in requests)
    assert requests[0].data["requested_by"].startswith("broker ")
    paused = next(e for e in log if e.name == "training.paused")
    assert paused.data["requested_by"] == requests[0].data["requested_by"]


async def test_without_a_token_in_the_config_broker_control_is_off(tmp_path: Path, redis_server):
    config = tiny_config(tmp_path, training={"epochs": 2000}, events={"broker": redis_server.url})
    session = RunSession(config)
    await session.start()
    try:
        await _until(lambda: session.broker.published > 10)
        viewer = BrokerRun(redis_server.url, session.run_id, token="anything")
        assert not viewer.controllable  # the registry says control is off: the monitor hides p/s
        viewer.send_control("control.pause_requested", {})
        await _until(lambda: any(e.name == "control.request_rejected" for e in session.bus.history))
        (rejected,) = [e for e in session.bus.history if e.name == "control.request_rejected"]
        assert "broker_token" in rejected.data["reason"]
        assert session.worker.control.paused is False
    finally:
        await session.close()


async def test_attach_over_redis_lists_runs_and_prints_a_finished_one_like_replay(tmp_path: Path, redis_server,
                                                                                  capsys):
    config = tiny_config(tmp_path, training={"epochs": 2}, events={"broker": redis_server.url})
    session = RunSession(config)
    await session.start()
    await session.wait()
    await session.close()
    capsys.readouterr()
    assert main(["attach", redis_server.url]) == 0
    listing = capsys.readouterr().out
    assert session.run_id in listing and "completed" in listing
    assert main(["replay", str(session.events_path)]) == 0
    replay_lines = capsys.readouterr().out.splitlines()
    assert main(["attach", redis_server.url, session.run_id]) == 0
    attach_lines = capsys.readouterr().out.splitlines()
    assert attach_lines[1:] == replay_lines[1:] + ["the run ended: completed"]
    assert attach_lines[0].startswith(f"{redact(redis_server.url)} {session.run_id}: ")


def test_bad_broker_input_is_one_line_and_exit_2(tmp_path: Path, redis_server, capsys):
    assert main(["attach", redis_server.url, "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    closed = RedisServer(tmp_path / "unused")
    assert main(["attach", closed.url]) == 2
    err = capsys.readouterr().err
    assert "cannot reach" in err and len(err.strip().splitlines()) == 1
    assert main(["attach", "http://example.org"]) == 2
    assert "redis://" in capsys.readouterr().err
    assert main(["run", "--broker", "redis://", "--headless"]) == 2
    assert "--broker: no host" in capsys.readouterr().err
    assert main(["attach", str(tmp_path), "some-run"]) == 2
    assert "goes with a redis:// URL" in capsys.readouterr().err
    with pytest.raises(BrokerError, match="cannot reach"):
        BrokerRun(closed.url, "x")


def test_broker_settings_are_checked():
    events = parse_config({"events": {"broker": "redis://h:6379/2", "broker_maxlen": 5000}}).events
    assert (events.broker, events.broker_maxlen, events.broker_token) == ("redis://h:6379/2", 5000, None)
    with pytest.raises(ConfigError, match="events.broker: expected a URL starting with redis://"):
        parse_config({"events": {"broker": "localhost:6379"}})
    with pytest.raises(ConfigError, match="events.broker_maxlen"):
        parse_config({"events": {"broker_maxlen": 10}})
    assert redact("redis://user:pw@host:6379/0") == "redis://***@host:6379/0"


def test_headless_says_when_events_did_not_reach_the_broker(tmp_path: Path, capsys):
    from kbert_tui.headless import run_headless

    nowhere = RedisServer(tmp_path / "unused")
    config = tiny_config(tmp_path, training={"epochs": 1}, events={"broker": nowhere.url})
    assert run_headless(config, None) == 0
    err = capsys.readouterr().err
    assert "events did not reach the broker (Redis was away at the end); the log has them all" in err


def test_a_viewer_ends_when_the_run_could_not_tell_the_broker_it_closed(redis_server):
    import json

    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.hset("kbert:runs", "r1", json.dumps({"run_id": "r1", "state": "running", "control": False}))
    for n, name in enumerate(["training.started", "training.completed"], 1):
        line = json.dumps({"name": name, "timestamp": "2026-11-29T00:00:00+00:00", "data": {}, "correlation_id": "r1"})
        client.xadd("kbert:run:r1:events", {"event": line}, id=f"{n}-0")
    client.close()
    viewer = BrokerRun(redis_server.url, "r1", quiet_s=0.3, block_ms=50)
    seen = []
    deadline = time.monotonic() + 10
    while not viewer.ended and time.monotonic() < deadline:
        seen.extend(viewer.read(100))
    assert [e.name for e in seen] == ["training.started", "training.completed"]
    assert viewer.ended and viewer.outcome == "completed" and "never heard it close" in viewer.note


async def test_wrong_token_floods_and_huge_requests_cost_the_log_a_few_clipped_lines(tmp_path: Path):
    """100 wrong-token requests of 256 KB grew events.jsonl by 26 MB in 3 s; now a few short lines."""
    from kbert_tui.events import EventBus
    from kbert_tui.remote.local import LocalControlWatcher, control_line
    from kbert_tui.remote.broker import BrokerPublisher

    events_path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=events_path)
    watcher = LocalControlWatcher(bus, "run-1", events_path)
    publisher = BrokerPublisher(bus, "run-1", events_path, "redis://127.0.0.1:1/0", maxlen=1000, token="s3cret",
                                relay=watcher.relay, info={})
    _, long = control_line("control.stop_requested", {"requested_by": "\x1b[2J" + "A" * (32 << 10)},
                           source="broker", run_id="run-1")
    await publisher._control_request({b"event": long, b"token": b"guess"})
    _, big = control_line("control.stop_requested", {"requested_by": "A" * (256 << 10)}, source="broker",
                          run_id="run-1")
    for _ in range(100):
        await publisher._control_request({b"event": big, b"token": b"guess"})
    await publisher._control_request({b"event": b"x" * (1 << 20), b"token": b"s3cret"})
    _, forged = control_line("control.pause_requested", {"requested_by": "me"}, source="trainer", run_id="run-1")
    await publisher._control_request({b"event": forged, b"token": b"s3cret"})
    await bus.shutdown()
    log = list(read_events(events_path))
    rejected = [e for e in log if e.name == "control.request_rejected"]
    assert len(rejected) == 10 and publisher.rejections.rejected == 102
    assert rejected[0].data["reason"] == "wrong token" and rejected[0].data["requested_by"].startswith("\\x1b[2JAAA")
    assert rejected[1].data["reason"] == "a request longer than 65536 bytes: not read"
    assert all(len(e.data.get("requested_by", "")) <= 200 for e in rejected)
    assert events_path.stat().st_size < 20_000
    [pause] = [e for e in log if e.name == "control.pause_requested"]
    assert pause.source == "broker" and pause.data["via"] == "redis"  # not the "trainer" it claimed
