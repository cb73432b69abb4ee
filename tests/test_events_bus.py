"""EventBus behaviour: emission paths, patterns, filters, ordering, failures, backlog, flush, metrics."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC

import pytest

from kbert_tui.events import (
    Event,
    EventBus,
    EventBusError,
    EventFilter,
    EventMetrics,
    EventQuery,
    SubscriptionLimitError,
    create_default_event_bus,
)
from kbert_tui.events.testing import RecordingBus


async def test_event_fields_and_unique_ids():
    bus = EventBus()
    seen: list[Event] = []
    await bus.subscribe("*", seen.append)
    for i in range(1000):
        await bus.emit("x.y", {"i": i}, source="test", correlation_id="c", metadata={"m": 1})
    await bus.flush()
    first = seen[0]
    assert first.name == "x.y" and first.data == {"i": 0} and first.source == "test"
    assert first.correlation_id == "c" and first.metadata == {"m": 1}
    assert first.timestamp.tzinfo is not None and first.timestamp.utcoffset() == UTC.utcoffset(None)
    assert len({e.id for e in seen}) == 1000
    with pytest.raises(AttributeError):
        first.name = "other"  # type: ignore[misc]


def test_ids_differ_across_processes(tmp_path):
    import subprocess
    import sys

    code = "from kbert_tui.events._event import new_event_id; print(new_event_id())"
    ids = {subprocess.check_output([sys.executable, "-c", code], text=True).strip() for _ in range(3)}
    assert len(ids) == 3


async def test_async_and_sync_handlers_both_receive():
    bus = EventBus()
    got: list[str] = []

    async def async_handler(event: Event) -> None:
        got.append("async:" + event.name)

    def sync_handler(event: Event) -> None:
        got.append("sync:" + event.name)

    await bus.subscribe("training.*", async_handler)
    bus.subscribe_sync("training.*", sync_handler)
    await bus.emit("training.started", {})
    bus.emit_sync("training.completed", {})
    await bus.flush()
    assert sorted(got) == sorted(
        ["async:training.started", "sync:training.started", "async:training.completed", "sync:training.completed"]
    )


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("training.*", ["training.started", "training.batch.completed"], ["trainingx", "model.training.x"]),
        ("model.checkpoint_*", ["model.checkpoint_saved", "model.checkpoint_loaded"], ["model.forward_pass"]),
        ("*.error", ["plugin.error", "a.b.error"], ["plugin.errors", "error"]),
        ("*", ["anything", "a.b.c"], []),
        ("data.cache_?it", ["data.cache_hit"], ["data.cache_miss"]),
        ("Training.*", ["Training.x"], ["training.x"]),
    ],
)
async def test_glob_patterns(pattern, matches, misses):
    bus = EventBus()
    got: list[str] = []
    await bus.subscribe(pattern, lambda e: got.append(e.name))
    for name in matches + misses:
        await bus.emit(name, {})
    await bus.flush()
    assert got == matches


@pytest.mark.parametrize("bad", ["", None, 3, b"x.*"])
async def test_bad_patterns_raise_value_error(bad):
    bus = EventBus()
    with pytest.raises(ValueError):
        await bus.subscribe(bad, lambda e: None)
    with pytest.raises(ValueError):
        bus.subscribe_sync(bad, lambda e: None)


async def test_bad_event_names_raise_value_error():
    bus = EventBus()
    with pytest.raises(ValueError):
        await bus.emit("", {})
    with pytest.raises(ValueError):
        bus.emit_sync(None, {})  # type: ignore[arg-type]


async def test_max_subscribers_is_enforced_with_clear_error():
    bus = EventBus(max_subscribers=2)
    await bus.subscribe("a", lambda e: None)
    await bus.subscribe("b", lambda e: None)
    with pytest.raises(SubscriptionLimitError, match="max_subscribers=2"):
        await bus.subscribe("c", lambda e: None)


async def test_unsubscribe():
    bus = EventBus()
    got: list[str] = []
    sub = await bus.subscribe("*", lambda e: got.append(e.name))
    await bus.emit("one", {})
    await bus.flush()
    assert await bus.unsubscribe(sub) is True
    assert await bus.unsubscribe(sub) is False
    assert await bus.unsubscribe("nope") is False
    await bus.emit("two", {})
    await bus.flush()
    assert got == ["one"]


async def test_filter_rejects_counts_and_does_not_persist(tmp_path):
    class OnlyImportant(EventFilter):
        def should_process(self, event: Event) -> bool:
            return bool(event.data.get("important"))

    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    bus.add_filter(OnlyImportant())
    got: list[str] = []
    await bus.subscribe("*", lambda e: got.append(e.name))
    await bus.emit("a.no", {"important": False})
    await bus.emit("a.yes", {"important": True})
    await bus.flush()
    assert got == ["a.yes"]
    metrics = await bus.get_metrics()
    assert metrics.filtered_events == 1 and metrics.total_events == 2
    await bus.shutdown()
    assert [line for line in path.read_text().splitlines() if "a.no" in line] == []
    assert len(path.read_text().splitlines()) == 1


async def test_emit_sync_from_threads_keeps_per_thread_order():
    bus = EventBus()
    got: list[tuple[int, int]] = []

    async def handler(event: Event) -> None:
        got.append((event.data["thread"], event.data["i"]))

    await bus.subscribe("worker.step", handler)

    def worker(t: int) -> None:
        for i in range(2000):
            bus.emit_sync("worker.step", {"thread": t, "i": i}, source=f"worker-{t}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        await asyncio.sleep(0.01)
    await bus.flush()
    assert len(got) == 8000
    for t in range(4):
        assert [i for (th, i) in got if th == t] == list(range(2000))


async def test_handlers_run_on_the_loop_thread_even_for_thread_emits():
    bus = EventBus()
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    await bus.subscribe("x", lambda e: threads.add(threading.get_ident()))
    worker = threading.Thread(target=lambda: bus.emit_sync("x", {}))
    worker.start()
    worker.join()
    await bus.flush()
    assert threads == {loop_thread}


def test_emit_sync_without_a_loop_delivers_before_returning():
    bus = EventBus()
    got: list[str] = []

    async def async_handler(event: Event) -> None:
        got.append("async")

    bus.subscribe_sync("x.*", lambda e: got.append("sync"))
    bus.subscribe_sync("x.*", async_handler)
    bus.emit_sync("x.y", {})
    assert sorted(got) == ["async", "sync"]
    bus.close()


def test_bus_usable_across_successive_asyncio_runs():
    bus = EventBus()
    got: list[str] = []
    bus.subscribe_sync("*", lambda e: got.append(e.name))

    async def one(name: str) -> None:
        await bus.emit(name, {})
        await bus.flush()

    asyncio.run(one("first"))
    asyncio.run(one("second"))
    bus.emit_sync("third", {})
    assert got == ["first", "second", "third"]


async def test_emitting_never_waits_for_handlers():
    bus = EventBus()
    release = asyncio.Event()
    done: list[int] = []

    async def slow(event: Event) -> None:
        await release.wait()
        done.append(event.data["i"])

    await bus.subscribe("x", slow)
    await asyncio.wait_for(bus.emit("x", {"i": 1}), timeout=0.5)
    bus.emit_sync("x", {"i": 2})
    assert done == []
    release.set()
    await bus.flush()
    assert done == [1, 2]


async def test_slow_handler_does_not_delay_others():
    bus = EventBus()
    fast: list[float] = []
    loop = asyncio.get_running_loop()

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.5)

    await bus.subscribe("x", slow)
    await bus.subscribe("x", lambda e: fast.append(loop.time()))
    started = loop.time()
    for i in range(5):
        await bus.emit("x", {"i": i})
    await asyncio.sleep(0.05)
    assert len(fast) == 5 and max(fast) - started < 0.2
    await bus.flush()


async def test_failing_handler_reports_and_others_continue():
    bus = RecordingBus()
    got: list[int] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    errors: list[Event] = []
    sub = await bus.subscribe("work.*", broken)
    await bus.subscribe("work.*", lambda e: got.append(e.data["i"]))
    await bus.subscribe("bus.handler_error", errors.append)
    for i in range(3):
        await bus.emit("work.item", {"i": i})
    await bus.flush()
    assert got == [0, 1, 2]
    assert len(errors) == 3
    payload = errors[0].data
    assert payload["subscription_id"] == sub and payload["pattern"] == "work.*"
    assert payload["event_name"] == "work.item" and "boom" in payload["error"]
    assert "RuntimeError" in payload["traceback"]
    assert (await bus.get_metrics()).handler_errors == 3


async def test_failing_error_handler_does_not_loop():
    bus = EventBus()
    calls = 0

    def broken(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("always")

    await bus.subscribe("*", broken)
    await bus.emit("x", {})
    await asyncio.wait_for(bus.flush(), timeout=2)
    # the original event, then one bus.handler_error whose own failure is not reported again
    assert calls == 2


async def test_backlog_overflow_drops_oldest_counts_and_announces():
    bus = EventBus(buffer_size=10)
    release = asyncio.Event()
    got: list[int] = []
    announcements: list[Event] = []

    async def slow(event: Event) -> None:
        await release.wait()
        got.append(event.data["i"])

    await bus.subscribe("work", slow)
    await bus.subscribe("bus.subscriber_*", announcements.append)
    await bus.emit("work", {"i": 0})
    await asyncio.sleep(0)  # the slow handler now holds event 0
    for i in range(1, 31):
        await bus.emit("work", {"i": i})
    metrics = await bus.get_metrics()
    assert metrics.dropped_events == 20
    release.set()
    await bus.flush()
    assert got == [0] + list(range(21, 31))
    names = [e.name for e in announcements]
    assert names == ["bus.subscriber_overflow", "bus.subscriber_recovered"]
    assert announcements[0].data["policy"] == "drop_oldest"
    assert announcements[1].data["dropped"] == 20


async def test_fast_emitter_does_not_overflow_fast_handlers():
    bus = EventBus(buffer_size=100)
    got: list[int] = []

    async def handler(event: Event) -> None:
        got.append(event.data["i"])

    await bus.subscribe("x", handler)
    for i in range(5000):
        await bus.emit("x", {"i": i})
    await bus.flush()
    assert got == list(range(5000))
    assert (await bus.get_metrics()).dropped_events == 0


async def test_persisted_log_never_drops_even_when_a_subscriber_does(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus(buffer_size=5, enable_persistence=True, persistence_path=path)
    release = asyncio.Event()

    async def slow(event: Event) -> None:
        await release.wait()

    await bus.subscribe("work", slow)
    for i in range(50):
        await bus.emit("work", {"i": i})
    release.set()
    await bus.shutdown()
    work = [line for line in path.read_text().splitlines() if '"name":"work"' in line]
    assert len(work) == 50


async def test_flush_waits_for_cascaded_events(tmp_path):
    bus = EventBus(enable_persistence=True, persistence_path=tmp_path / "e.jsonl")
    got: list[str] = []

    async def stage1(event: Event) -> None:
        await asyncio.sleep(0.01)
        await bus.emit("stage.two", {})

    def stage2(event: Event) -> None:
        bus.emit_sync("stage.three", {})

    await bus.subscribe("stage.one", stage1)
    await bus.subscribe("stage.two", stage2)
    await bus.subscribe("stage.*", lambda e: got.append(e.name))
    await bus.emit("stage.one", {})
    await bus.flush()
    assert got == ["stage.one", "stage.two", "stage.three"]
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert len(lines) == 3


async def test_flush_includes_events_from_threads():
    bus = EventBus()
    got: list[int] = []
    await bus.subscribe("t", lambda e: got.append(e.data["i"]))
    worker = threading.Thread(target=lambda: [bus.emit_sync("t", {"i": i}) for i in range(500)])
    worker.start()
    worker.join()
    await bus.flush()
    assert got == list(range(500))


async def test_shutdown_flushes_is_idempotent_and_blocks_later_emits(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    got: list[int] = []

    async def handler(event: Event) -> None:
        await asyncio.sleep(0)
        got.append(event.data["i"])

    await bus.subscribe("x", handler)
    for i in range(100):
        await bus.emit("x", {"i": i})
    await bus.shutdown()
    await bus.shutdown()
    assert got == list(range(100))
    assert len(path.read_text().splitlines()) == 100
    with pytest.raises(EventBusError, match="shut down"):
        await bus.emit("x", {})
    with pytest.raises(EventBusError):
        bus.emit_sync("x", {})


async def test_correlated_events_in_memory_and_from_disk(tmp_path):
    for persist in (False, True):
        bus = EventBus(
            enable_persistence=persist,
            persistence_path=tmp_path / f"{persist}.jsonl" if persist else None,
            max_file_size_mb=0.002,
            history_size=10,
        )
        await bus.emit("run.a", {"n": 1}, correlation_id="run-1")
        for i in range(30):
            await bus.emit("noise", {"i": i})
        await bus.emit("run.b", {"n": 2}, correlation_id="run-1")
        related = await bus.get_correlated_events("run-1")
        if persist:
            # run.a left the 10-event memory long ago and sits in a rotated segment
            assert [e.name for e in related] == ["run.a", "run.b"]
        else:
            assert [e.name for e in related] == ["run.b"]
        await bus.shutdown()


async def test_metrics_fields():
    bus = EventBus()
    await bus.subscribe("a.*", lambda e: None)
    for _ in range(20):
        await bus.emit("a.one", {})
    await bus.emit("a.two", {})
    await bus.flush()
    metrics = await bus.get_metrics()
    assert isinstance(metrics, EventMetrics)
    assert metrics.total_events == 21
    assert metrics.events_by_name == {"a.one": 20, "a.two": 1}
    assert metrics.events_per_second > 0
    assert metrics.avg_processing_time_ms >= 0
    assert metrics.subscriber_count == 1 and metrics.queue_depth == 0
    assert metrics.delivered_events == 21


async def test_query_in_memory_when_not_persisting():
    bus = create_default_event_bus()
    await bus.emit("training.epoch_completed", {"epoch": 5, "metrics": {"loss": 0.1}}, source="trainer")
    await bus.emit("training.epoch_completed", {"epoch": 6}, source="trainer")
    await bus.emit("model.saved", {"epoch": 5}, source="model")
    found = await bus.query_events(EventQuery().event_name_pattern("training.*").data_contains({"epoch": 5}))
    assert [e.data["epoch"] for e in found] == [5]
    found = await bus.query_events(EventQuery().source("model"))
    assert [e.name for e in found] == ["model.saved"]


async def test_emit_from_another_event_loop_thread_is_delivered_on_the_owner_loop():
    bus = EventBus()
    owner = threading.get_ident()
    threads: list[int] = []
    await bus.subscribe("x", lambda e: threads.append(threading.get_ident()))

    def other_loop() -> None:
        asyncio.run(bus.emit("x", {}))

    worker = threading.Thread(target=other_loop)
    worker.start()
    worker.join()
    await bus.flush()
    assert threads == [owner]


async def test_non_dict_data_is_wrapped():
    bus = RecordingBus()
    await bus.emit("x", 5)  # type: ignore[arg-type]
    await bus.emit("y", None)
    assert bus.events[0].data == {"value": 5} and bus.events[1].data == {}


async def test_fixtures_come_from_the_installed_pytest_plugin(recording_bus, event_bus):
    await recording_bus.emit("training.started", {"run_id": "r"})
    recording_bus.assert_emitted("training.*", count=1, run_id="r")
    with pytest.raises(AssertionError, match="expected 2 event"):
        recording_bus.assert_emitted("training.*", count=2)
    assert isinstance(event_bus, EventBus) and not isinstance(event_bus, RecordingBus)


def test_a_users_suite_gets_the_fixtures(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_user.py").write_text(
        "async def test_mine(recording_bus):\n"
        "    await recording_bus.emit('plugin.activated', {'plugin_name': 'mine'})\n"
        "    recording_bus.assert_emitted('plugin.*', count=1, plugin_name='mine')\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
