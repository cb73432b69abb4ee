"""The JSONL log: format, value conversion, rotation, reopening, tolerant reading and queries."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from datetime import datetime, timedelta, UTC
from pathlib import Path

import numpy as np
import pytest

from kbert_tui.events import Event, EventBus, EventQuery
from kbert_tui.events._codec import decode_event, encode_event, encode_event_bytes, to_json
from kbert_tui.events.store import JsonlStore, read_events, segment_paths


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async def test_line_format_and_round_trip(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    await bus.emit("training.started", {"run_id": "r", "ünïcode": "✓"}, source="trainer",
                   correlation_id="r", metadata={"host": "h"})
    await bus.shutdown()
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    record = json.loads(raw)
    assert list(record) == ["id", "name", "timestamp", "source", "correlation_id", "data", "metadata"]
    assert datetime.fromisoformat(record["timestamp"]).utcoffset() == timedelta(0)
    assert record["data"]["ünïcode"] == "✓"
    (event,) = list(read_events(path))
    assert event.name == "training.started" and event.correlation_id == "r" and event.metadata == {"host": "h"}


def test_values_json_cannot_hold_are_converted():
    import mlx.core as mx

    error = ValueError("bad thing")
    data = {
        "tuple": (1, 2),
        "set": {3, 1, 2},
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "path": Path("/tmp/x"),
        "enum": Colour.RED,
        "dc": Point(1, 2.5),
        "np_scalar": np.float32(1.5),
        "np_int": np.int64(7),
        "np_array": np.arange(3),
        "mx_scalar": mx.array(2.0),
        "mx_array": mx.array([1, 2, 3]),
        "big_array": np.zeros((100, 100)),
        "error": error,
        "opaque": Opaque(),
        "bad_repr": BadRepr(),
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": -float("inf"),
        "nested": {1: [float("nan")]},
        "bytes": b"abc",
    }
    out = json.loads(to_json(data))
    assert out["tuple"] == [1, 2] and out["set"] == [1, 2, 3]
    assert out["when"] == "2026-01-02T03:04:05+00:00"
    assert out["path"] == "/tmp/x" and out["enum"] == "red" and out["dc"] == {"x": 1, "y": 2.5}
    assert out["np_scalar"] == 1.5 and out["np_int"] == 7 and out["np_array"] == [0, 1, 2]
    assert out["mx_scalar"] == 2.0 and out["mx_array"] == [1, 2, 3]
    assert out["big_array"]["shape"] == [100, 100] and out["big_array"]["size"] == 10000
    assert out["error"]["type"] == "ValueError" and out["error"]["message"] == "bad thing"
    assert out["opaque"] == "<Opaque thing>"
    assert "BadRepr" in out["bad_repr"]
    assert (out["nan"], out["inf"], out["ninf"]) == ("NaN", "Infinity", "-Infinity")
    assert out["nested"] == {"1": ["NaN"]}
    assert out["bytes"] == "abc"


def test_lines_are_strict_json():
    for line in (encode_event(Event("x", {"v": float("nan")})), encode_event_bytes(Event("x", {"v": float("nan")}))):
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
        assert record["data"]["v"] == "NaN"


@pytest.mark.parametrize("data", [
    {"plain": 1, "f": 0.1, "s": "ü", "nested": {"l": [1, 2.5, "x"]}},
    {"none": None, "nan": float("nan"), "inf": float("-inf")},
    {"np": np.float64(2.5), "npi": np.int32(3), "arr": np.ones(3), "when": datetime(2026, 1, 1)},
    {"big": 2**80, "set": {1}, "path": Path("p"), "key": {1: "int key"}},
    {"text": "null", "surrogate": "\udcff"},
])
def test_fast_and_exact_encoders_agree(data):
    event = Event("x.y", data, source="s", correlation_id=None, metadata={"m": [1]})
    fast = json.loads(encode_event_bytes(event))
    exact = json.loads(encode_event(event))
    assert fast == exact


def test_circular_data_does_not_break_emission():
    data: dict = {"a": 1}
    data["self"] = data
    out = json.loads(to_json(data))
    assert out["a"] == 1 and out["self"] == "<circular dict>"


async def test_emit_never_fails_on_data(tmp_path):
    path = tmp_path / "e.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    await bus.emit("weird", {"obj": object(), "fn": print, "bad": BadRepr()})
    await bus.shutdown()
    assert json.loads(path.read_text())["name"] == "weird"


async def test_rotation_keeps_lines_whole_and_orders_segments(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path, max_file_size_mb=0.01)  # ~10 KB
    for i in range(500):
        await bus.emit("tick", {"i": i, "pad": "x" * 50})
    await bus.shutdown()
    files = segment_paths(path)
    assert len(files) > 3
    assert files[0].name == "events.1.jsonl" and files[-1] == path
    limit = int(0.01 * 1024 * 1024)
    seen: list[int] = []
    for file in files:
        raw = file.read_bytes()
        assert len(raw) <= limit and raw.endswith(b"\n")
        seen.extend(json.loads(line)["data"]["i"] for line in raw.splitlines())
    assert seen == list(range(500))
    assert [e.data["i"] for e in read_events(path)] == list(range(500))


def test_segment_numbers_sort_numerically(tmp_path):
    for n in (1, 2, 10):
        (tmp_path / f"events.{n}.jsonl").write_text("")
    (tmp_path / "events.jsonl").write_text("")
    (tmp_path / "events.x.jsonl").write_text("")
    assert [p.name for p in segment_paths(tmp_path / "events.jsonl")] == [
        "events.1.jsonl", "events.2.jsonl", "events.10.jsonl", "events.jsonl"]


async def test_reopening_appends_and_repairs_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    await bus.emit("first", {})
    await bus.shutdown()
    with open(path, "ab") as fh:
        fh.write(b'{"id":"torn","name":"half')  # a writer died mid-line
    bus = EventBus(enable_persistence=True, persistence_path=path)
    await bus.emit("second", {})
    await bus.shutdown()
    reader = read_events(path)
    assert [e.name for e in reader] == ["first", "second"]
    assert reader.malformed == 1


async def test_reopening_continues_segment_numbering(tmp_path):
    path = tmp_path / "events.jsonl"
    for _ in range(2):
        bus = EventBus(enable_persistence=True, persistence_path=path, max_file_size_mb=0.001)
        for i in range(40):
            await bus.emit("tick", {"i": i})
        await bus.shutdown()
    numbers = [int(p.suffixes[-2][1:]) for p in segment_paths(path)[:-1]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert sum(1 for _ in read_events(path)) == 80


def test_reader_skips_and_counts_malformed_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    good = encode_event(Event("ok", {"n": 1}))
    path.write_text(
        good
        + "not json\n"
        + "[1, 2]\n"
        + '{"name": "", "timestamp": "2026-01-01T00:00:00+00:00", "data": {}}\n'
        + '{"name": "no.time", "data": {}}\n'
        + '{"name": "bad.time", "timestamp": "yesterday", "data": {}}\n'
        + '{"name": "bad.data", "timestamp": "2026-01-01T00:00:00+00:00", "data": 3}\n'
        + "\n"
        + '{"name": "minimal", "timestamp": "2026-01-01T00:00:00Z", "data": {"k": 1}}\n'
        + '{"name": "trunc'
    )
    reader = read_events(path)
    events = list(reader)
    assert [e.name for e in events] == ["ok", "minimal"]
    assert reader.malformed == 7
    assert "events.jsonl:2" in (reader.first_error or "")
    minimal = events[1]
    assert minimal.source == "unknown" and minimal.correlation_id is None and minimal.id
    assert minimal.timestamp.tzinfo is not None


def test_read_events_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such events file"):
        read_events(tmp_path / "missing.jsonl")


def test_decode_accepts_naive_timestamps_as_utc():
    event = decode_event('{"name":"x","timestamp":"2026-01-01T00:00:00","data":{}}')
    assert event.timestamp == datetime(2026, 1, 1, tzinfo=UTC)


async def test_query_over_segments_with_every_criterion(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path, max_file_size_mb=0.005)
    for epoch in range(1, 11):
        await bus.emit("training.epoch_completed", {"epoch": epoch, "metrics": {"val": {"acc": epoch / 10}}},
                       source="trainer", correlation_id="run-a" if epoch <= 5 else "run-b")
        for i in range(20):
            await bus.emit("system.cpu_usage", {"percent": float(i), "epoch": epoch}, source="system")
    await bus.flush()
    assert len(segment_paths(path)) > 2

    q = EventQuery().event_name_pattern("training.*").data_contains({"epoch": 5})
    assert [e.data["epoch"] for e in await bus.query_events(q)] == [5]

    q = EventQuery().data_contains({"metrics": {"val": {"acc": 0.3}}})
    assert [e.data["epoch"] for e in await bus.query_events(q)] == [3]

    q = EventQuery().source("trainer").correlation_id("run-b").limit(2)
    assert [e.data["epoch"] for e in await bus.query_events(q)] == [6, 7]

    everything = await bus.query_events(EventQuery())
    assert len(everything) == 210
    middle = everything[100].timestamp
    q = EventQuery().event_name_pattern("system.*").time_range(start=middle)
    later = await bus.query_events(q)
    assert later and all(e.timestamp >= middle for e in later)

    # naive datetimes mean local time, as in the seed's datetime.now() - timedelta(hours=1)
    q = EventQuery().event_name_pattern("training.*").time_range(start=datetime.now() - timedelta(hours=1))
    assert len(await bus.query_events(q)) == 10
    q = EventQuery().time_range(end=datetime.now() - timedelta(hours=1))
    assert await bus.query_events(q) == []
    await bus.shutdown()


def test_query_prefilter_does_not_miss_foreign_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    # written by another tool: spaced separators, escaped unicode, data before name
    path.write_text(
        '{"data": {"epoch": 5.0, "who": "\\u00e9"}, "name": "training.x", "timestamp": "2026-01-01T00:00:00Z"}\n'
    )
    reader = read_events(path)
    q = EventQuery().event_name_pattern("training.*").data_contains({"epoch": 5, "who": "é"})
    assert [e.name for e in q.run(reader.raw_lines())] == ["training.x"]


def test_store_rejects_nonpositive_size(tmp_path):
    with pytest.raises(ValueError):
        JsonlStore(tmp_path / "x.jsonl", max_file_size_mb=0)


def test_query_numbers_match_by_value_not_by_text(tmp_path):
    path = tmp_path / "events.jsonl"
    values = ["5", "5.0", "5e0", "50", "5.5", "15", "-5", "true", '"5"']
    path.write_text("".join(
        f'{{"name":"n","timestamp":"2026-01-01T00:00:00Z","data":{{"epoch":{v},"k":{i}}}}}\n'
        for i, v in enumerate(values)))
    found = EventQuery().data_contains({"epoch": 5}).run(read_events(path).raw_lines())
    assert [e.data["k"] for e in found] == [0, 1, 2]
    found = EventQuery().data_contains({"epoch": True}).run(read_events(path).raw_lines())
    assert [e.data["k"] for e in found] == [7]
    found = EventQuery().data_contains({"epoch": -5}).run(read_events(path).raw_lines())
    assert [e.data["k"] for e in found] == [6]


# -- issue 19: the codec's edges -----------------------------------------------------------------


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**200, 10**30 + 1])
async def test_integers_past_64_bits_read_back_as_the_same_ints(tmp_path, value):
    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    await bus.emit("x", {"n": value, "inner": [value]})
    await bus.shutdown()
    (event,) = list(read_events(path))
    assert event.data == {"n": value, "inner": [value]} and type(event.data["n"]) is int
    assert decode_event(path.read_bytes()).data["n"] == value
    (found,) = await bus.query_events(EventQuery().data_contains({"n": value}))
    assert found.data == {"n": value, "inner": [value]}


def test_a_non_string_key_that_spells_a_string_key_of_the_same_object_keeps_both_under_distinct_keys():
    for event in (Event("x", {"m": {1: "a", "1": "b"}}), Event("x", {"m": {"1": "b", 1: "a"}, "v": None})):
        for line in (encode_event(event), encode_event_bytes(event).decode()):
            pairs = json.loads(line, object_pairs_hook=lambda items: items)
            data = dict(pairs)["data"]
            inner = dict(dict(data)["m"])
            assert len(dict(data)["m"]) == 2 and inner == {"1": "b", "1 (int)": "a"}, line


def test_a_uuid_is_written_the_same_way_whatever_else_the_event_holds():
    import uuid

    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    lines = [encode_event_bytes(Event("x", data)) for data in (
        {"u": ident}, {"u": ident, "none": None}, {"u": ident, "big": 2**70}, {"u": ident, 1: "int key"},
        {"u": ident, "nan": float("nan")})]
    assert {json.loads(line)["data"]["u"] for line in lines} == {str(ident)}
    assert json.loads(encode_event(Event("x", {"u": ident})))["data"]["u"] == str(ident)


async def test_negative_zero_survives_a_round_trip(tmp_path):
    import math

    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    await bus.emit("x", {"z": -0.0, "l": [-0.0], "with_none": None})
    await bus.emit("y", {"z": -0.0})
    await bus.shutdown()
    for event in read_events(path):
        assert math.copysign(1.0, event.data["z"]) == -1.0


# -- issue 19: what the log may be, and who may write it ------------------------------------------


@pytest.mark.timeout(30)
def test_a_fifo_or_a_device_as_the_log_is_refused_at_construction(tmp_path):
    from kbert_tui.events import PersistenceError

    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "named pipe"), (Path("/dev/zero"), "character device"), (tmp_path, "directory")):
        with pytest.raises(PersistenceError, match="not a regular file") as caught:
            EventBus(enable_persistence=True, persistence_path=path)
        assert str(path) in str(caught.value) and kind in str(caught.value)


async def test_a_second_bus_on_the_same_log_is_refused_naming_the_file_and_the_holder(tmp_path):
    from kbert_tui.events import PersistenceError

    path = tmp_path / "events.jsonl"
    first = EventBus(enable_persistence=True, persistence_path=path, max_file_size_mb=0.01)
    with pytest.raises(PersistenceError) as caught:
        EventBus(enable_persistence=True, persistence_path=tmp_path / "." / "events.jsonl")
    message = str(caught.value)
    assert str(path) in message and f"pid {os.getpid()}" in message and "already" in message
    for i in range(2000):  # past several rotations: every event of the one writer is kept
        await first.emit("tick", {"i": i})
    await first.shutdown()
    second = EventBus(enable_persistence=True, persistence_path=path)  # released on close
    await second.emit("tick", {"i": 2000})
    await second.shutdown()
    assert [e.data["i"] for e in read_events(path)] == list(range(2001))


def test_a_writer_that_died_does_not_keep_the_log_locked(tmp_path):
    import signal
    import subprocess
    import sys

    path = tmp_path / "events.jsonl"
    code = ("import sys, time; from kbert_tui.events import EventBus; "
            f"bus = EventBus(enable_persistence=True, persistence_path={str(path)!r}); "
            "print('ready', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        from kbert_tui.events import PersistenceError

        with pytest.raises(PersistenceError, match=f"pid {child.pid}"):
            EventBus(enable_persistence=True, persistence_path=path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    bus = EventBus(enable_persistence=True, persistence_path=path)
    bus.emit_sync("after", {})
    bus.close()
    assert [e.name for e in read_events(path)] == ["after"]


def test_the_writer_lock_goes_with_its_writer(tmp_path):
    path = tmp_path / "events.jsonl"
    store = JsonlStore(path)
    assert (tmp_path / "events.jsonl.lock").read_text().startswith(f"pid {os.getpid()} on ")
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.idx"]  # the log and its index
