"""The fast paths of issue 15 give the same answers as the plain ones: lazy event fields, lines built
from parts, the bulk decoder, the byte-level query filters, and the free-text index."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import pickle
from datetime import datetime, UTC

import pytest

from kbert_tui.events import Event, EventBus, EventQuery
from kbert_tui.events._codec import _encode_exact, decode_event, decode_lines, encode_fresh, encode_line
from kbert_tui.events._query import _name_regex, _narrow
from kbert_tui.events.store import JsonlStore, read_events


def _bus_event(bus: EventBus, name: str = "training.batch_completed", data: dict | None = None, **kw) -> Event:
    return bus._make_event(name, {"loss": 0.5} if data is None else data, kw.get("source"),
                           kw.get("correlation_id"), kw.get("metadata"))


# -- lazy fields ---------------------------------------------------------------------------------


def test_an_emitted_event_builds_its_id_timestamp_and_metadata_when_read_and_keeps_them():
    bus = EventBus()
    before = datetime.now(UTC)
    event = _bus_event(bus)
    after = datetime.now(UTC)
    assert "timestamp" not in event.__dict__ and "id" not in event.__dict__
    stamp, ident = event.timestamp, event.id
    assert before <= stamp <= after and stamp.tzinfo is not None
    assert event.timestamp is stamp and event.id is ident  # built once
    assert event.metadata == {} and event.correlation_id is None and event.source == "unknown"
    other = _bus_event(bus)
    assert other.id != ident and other.id.rsplit("-", 1)[0] == ident.rsplit("-", 1)[0]
    with pytest.raises(AttributeError):
        event.no_such_field  # noqa: B018


def test_a_lazy_event_compares_copies_pickles_and_converts_like_an_eager_one():
    bus = EventBus()
    lazy = _bus_event(bus, data={"n": [1, 2]}, correlation_id="run-1", metadata={"m": 1})
    eager = Event(lazy.name, {"n": [1, 2]}, timestamp=lazy.timestamp, source=lazy.source,
                  correlation_id="run-1", metadata={"m": 1}, id=lazy.id)
    fresh = _bus_event(bus)
    assert lazy == eager
    assert dataclasses.asdict(fresh)["id"] == fresh.id
    assert copy.copy(fresh) == fresh and pickle.loads(pickle.dumps(fresh)) == fresh
    assert dataclasses.replace(fresh, name="other").timestamp == fresh.timestamp


def test_the_snapshot_copies_nested_containers_and_keeps_other_values():
    bus = EventBus()
    marker = object()
    data = {"d": {"l": [1, {"x": 1}]}, "t": ([1],), "s": {1, 2}, "o": marker, "f": 1.5}
    event = _bus_event(bus, data=data)
    data["d"]["l"][1]["x"] = 2
    data["t"][0].append(2)
    data["s"].add(3)
    assert event.data == {"d": {"l": [1, {"x": 1}]}, "t": ([1],), "s": {1, 2}, "o": marker, "f": 1.5}
    assert event.data["o"] is marker


# -- lines from parts ----------------------------------------------------------------------------


@pytest.mark.parametrize("data, corr, metadata", [
    ({"batch": 12, "loss": 0.43, "metrics": {"lr": 1e-4}}, None, None),
    ({"text": 'é "quoted"\n', "n": 2**40}, "run-1", {"rank": 0}),
    ({}, "a\"b", {}),
    ({"pct": "100%s%%"}, "run-%d", {"m": "%x"}),
])
def test_the_bus_writes_exactly_what_the_exact_encoder_writes(data, corr, metadata):
    bus = EventBus(default_source="trainer 50%")
    event = _bus_event(bus, name="training.%s", data=data, correlation_id=corr, metadata=metadata)
    line = encode_fresh(event)
    assert line is not None and line == _encode_exact(event, None).encode()
    assert decode_event(line) == event


def test_a_whole_second_is_written_as_isoformat_writes_it():
    bus = EventBus()
    event = _bus_event(bus)
    nanos, prefix, number = event.__dict__["_origin"]
    event.__dict__["_origin"] = (nanos - nanos % 1_000_000_000, prefix, number)
    line = encode_fresh(event)
    assert line is not None and line == _encode_exact(event, None).encode()
    assert b'+00:00","source"' in line and b"." not in line.split(b'"timestamp":"')[1][:20]


def test_nan_and_none_in_data_leave_the_fast_encoder_to_the_exact_one():
    bus = EventBus()
    for data in ({"x": float("nan")}, {"x": None}):
        event = _bus_event(bus, data=data)
        assert encode_fresh(event) is None
        line, degraded = encode_line(event)
        assert degraded is None and json.loads(line)["data"] == {"x": "NaN" if data["x"] is not None else None}


# -- the bulk decoder ----------------------------------------------------------------------------


def test_decode_lines_agrees_with_decode_event_and_names_each_bad_line():
    bus = EventBus()
    good = [encode_fresh(_bus_event(bus, data={"i": i})) for i in range(3)]
    lines = [good[0], b"not json", good[1], b"[1]", b'{"name":"m","timestamp":"2026-01-01T00:00:00","data":{}}',
             b'{"id":"x","name":"t","timestamp":"never","source":"s","correlation_id":null,"data":{},"metadata":{}}',
             good[2]]
    events, problems = decode_lines(lines)
    assert [e.name for e in events] == ["training.batch_completed"] * 2 + ["m", "training.batch_completed"]
    assert [i for i, _ in problems] == [1, 3, 5]
    assert "not JSON" in problems[0][1] and "bad timestamp" in problems[2][1]
    for line, event in zip([good[0], good[1], good[2]], [events[0], events[1], events[3]], strict=True):
        assert event == decode_event(line)
    assert events[2].timestamp.tzinfo is UTC


def test_a_decoded_event_is_an_ordinary_event():
    [event], _ = decode_lines([b'{"id":"a-1","name":"x.y","timestamp":"2026-01-01T00:00:00.5+00:00",'
                               b'"source":"s","correlation_id":null,"data":{"k":[1]},"metadata":{}}'])
    assert event == Event("x.y", {"k": [1]}, timestamp=datetime(2026, 1, 1, 0, 0, 0, 500000, UTC),
                          source="s", id="a-1")
    assert pickle.loads(pickle.dumps(event)) == event


# -- byte-level query filters --------------------------------------------------------------------


def test_the_byte_level_tests_keep_every_line_whose_name_may_match_in_any_layout():
    tests = [_name_regex(["training.*", "a?c", "é?"]).search]  # type: ignore[union-attr]
    keep = [b'{"id":"1","name":"training.x"}', b'{"id":"1","name":"abc"}', b'{"name":"\xc3\xa9\xe2\x82\xac"}',
            b'{"id":"1","name":"sys\\"x"}', b'{"id":"1\\"","name":"system"}', b'{ "id": "1", "name" :\t"a\xc3\xa9c"}',
            b'{"data":{},"name": "training.y","id":"2"}']
    drop = [b'{"id":"1","name":"system.x"}', b'{"id":"1","name":"abcd"}', b'{"name":"training"}']
    assert _narrow(keep + drop, tests) == keep
    assert _narrow(drop, tests) == []  # without a backslash in the chunk: the C-level filter alone
    assert _name_regex(["*"]) is None and _name_regex(["x[ab]"]) is None and _name_regex(['a"b']) is None


async def test_a_query_over_chunks_finds_what_matching_every_event_finds(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path, max_file_size_mb=0.05)
    for i in range(600):
        await bus.emit(("training.step", "system.cpu", "train\"ing.odd")[i % 3], {"i": i, "epoch": i % 4},
                       correlation_id="run-1" if i % 2 else None)
    await bus.flush()
    queries = [EventQuery().event_name_pattern("training.*"), EventQuery(),
               EventQuery().event_name_pattern("train*").data_contains({"epoch": 2}),
               EventQuery().correlation_id("run-1").limit(7)]
    everything = list(read_events(path))
    assert len(everything) == 600
    for query in queries:
        found = await bus.query_events(query)
        assert found == query.run_events(everything)
    await bus.shutdown()


# -- the store's batches -------------------------------------------------------------------------


def test_a_batch_that_crosses_the_size_limit_rotates_between_whole_lines(tmp_path):
    store = JsonlStore(tmp_path / "e.jsonl", max_file_size_mb=0.01)
    bus = EventBus()
    for i in range(2000):
        store.append(_bus_event(bus, data={"i": i, "pad": "x" * 40}))
    store.close()
    logs = sorted(tmp_path.glob("*.jsonl"), key=lambda p: (len(p.name), p.name))
    rows = [json.loads(line) for file in logs for line in file.read_bytes().splitlines()]
    assert len(logs) > 5 and store.written == 2000
    assert sorted(p.name for p in tmp_path.glob("*.idx")) == sorted(p.name + ".idx" for p in logs)  # each its index
    assert sorted(r["data"]["i"] for r in rows) == list(range(2000))


def test_emit_from_the_loop_and_from_threads_keeps_each_threads_order_in_log_and_delivery(tmp_path):
    async def main() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        path = tmp_path / "events.jsonl"
        bus = EventBus(enable_persistence=True, persistence_path=path)
        seen: list[tuple[int, int]] = []
        await bus.subscribe("t.*", lambda e: seen.append((e.data["t"], e.data["i"])))
        loop = asyncio.get_running_loop()
        threads = [loop.run_in_executor(None, lambda t=t: [bus.emit_sync("t.x", {"t": t, "i": i}) for i in range(2000)])
                   for t in (1, 2)]
        for i in range(2000):
            await bus.emit("t.y", {"t": 0, "i": i})
            if not i % 100:
                await asyncio.sleep(0)
        await asyncio.gather(*threads)
        await bus.shutdown()
        logged = [(r["data"]["t"], r["data"]["i"]) for r in map(json.loads, path.read_bytes().splitlines())]
        return seen, logged

    seen, logged = asyncio.run(main())
    assert seen == logged and len(seen) == 6000
    for t in (0, 1, 2):
        assert [i for tt, i in seen if tt == t] == list(range(2000))


# -- logs written by others (issue 19) -----------------------------------------------------------


def _line(name: str, data: dict, *, spaced: bool = True, **fields) -> bytes:
    record = {"id": fields.get("id", "e1"), "name": name,
              "timestamp": fields.get("timestamp", "2026-01-01T00:00:00+00:00"),
              "source": fields.get("source", "s"), "correlation_id": fields.get("correlation_id"), "data": data,
              "metadata": {}}
    return json.dumps(record, **({} if spaced else {"separators": (",", ":"), "ensure_ascii": False})).encode()


def _found(query: EventQuery, lines: list[bytes]) -> list[str]:
    return [e.id for e in query.run(lines)]


def test_a_name_glob_with_a_question_mark_matches_a_name_with_a_non_ascii_character():
    lines = [_line("résumé.saved", {}, spaced=False, id="raw"), _line("résumé.saved", {}, id="escaped"),
             _line("rxsumx.saved", {}, spaced=False, id="ascii")]
    assert _found(EventQuery().event_name_pattern("r?sum?.saved"), lines) == ["raw", "escaped", "ascii"]
    assert _found(EventQuery().event_name_pattern("r?s*"), lines) == ["raw", "escaped", "ascii"]


def test_data_contains_zero_matches_minus_zero_and_every_spelling_of_an_equal_number():
    spellings = [b"0", b"-0", b"0.0", b"-0.0", b"0e5", b"-0E-3"]
    lines = [b'{"id":"%d","name":"n","timestamp":"2026-01-01T00:00:00+00:00","source":"s","correlation_id":null,'
             b'"data":{"x": %s},"metadata":{}}' % (i, s) for i, s in enumerate(spellings)]
    assert _found(EventQuery().data_contains({"x": 0}), lines) == [str(i) for i in range(len(spellings))]
    five = [b'{"name":"n","timestamp":"2026-01-01T00:00:00","id":"%d","data":{"x":%s}}' % (i, s)
            for i, s in enumerate([b"5", b"5.0", b"50e-1", b"0.5e1", b"4.99999999999999999999", b"15", b"5.5"])]
    assert _found(EventQuery().data_contains({"x": 5}), five) == ["0", "1", "2", "3", "4"]


def test_every_byte_level_test_keeps_lines_that_spell_the_same_thing_with_escapes_or_in_another_key_order():
    plain = {"run": "r/1", "epoch": 2}
    lines = [
        _line("training.step", plain, correlation_id="c/1", source="trainer", id="spaced"),
        _line("training.step", plain, spaced=False, correlation_id="c/1", source="trainer", id="compact"),
        json.dumps({"data": plain, "name": "training.step", "source": "trainer", "correlation_id": "c/1",
                    "timestamp": "2026-01-01T00:00:00+00:00", "id": "reordered"}).encode(),
        (b'{"n\\u0061me":"tr\\u0061ining.step","id":"escaped","timestamp":"2026-01-01T00:00:00+00:00","source":'
         b'"tr\\u0061iner","correlation_id":"c\\/1","d\\u0061ta":{"r\\u0075n":"r\\/1","ep\\u006fch":2}}'),
        (b'{"id":"corr-int","name":"training.step","timestamp":"2026-01-01T00:00:00+00:00","correlation_id":5,'
         b'"data":{"run":"r/1","epoch":2}}'),
    ]
    query = (EventQuery().event_name_pattern("training.*").data_contains(plain).correlation_id("c/1")
             .source("trainer"))
    assert _found(query, lines) == ["spaced", "compact", "reordered", "escaped"]
    assert _found(EventQuery().correlation_id("5"), lines) == ["corr-int"]
    assert _found(EventQuery().source("unknown"), lines) == ["corr-int"]


def test_an_integer_past_64_bits_reads_back_exact_from_every_decoder():
    big, negative = 2**70 + 1, -(2**64) - 3
    line = b'{"name":"n","timestamp":"2026-01-01T00:00:00","data":{"x":%d,"y":%d,"id":"%d"}}' % (big, negative, big)
    [event], _ = decode_lines([line])
    assert event.data == {"x": big, "y": negative, "id": str(big)} and type(event.data["x"]) is int
    assert decode_event(line).data["x"] == big


def test_each_unreadable_line_of_a_chunk_is_counted_once():
    good = b'{"name":"n","timestamp":"2026-01-01T00:00:00","data":{}}'
    events, problems = decode_lines([b"not json", good, b"{", b"null", b"[1]", b"{}{}"])
    assert len(events) == 1 and [index for index, _ in problems] == [0, 2, 3, 4, 5]
