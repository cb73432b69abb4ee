"""Every reader of an events file against a plain `json.loads`-per-line reference (issue 19).

Logs are generated in any valid JSONL layout (separators with or without spaces, any key order, strings
spelled raw or with \\uXXXX / \\/ escapes, CRLF line ends, a UTF-8 BOM, blank lines) with damaged lines
among them (truncated, not JSON, JSON but not an object, fields missing or of the wrong type). Each
reader must give exactly the reference's events, in order, and never raise:
`read_events`, `EventBus.query_events`, the replay loader's end-first read, the attach follower and the
monitor's `o` search.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kbert_tui.events import EventBus, EventQuery
from kbert_tui.events.follow import LogFollower
from kbert_tui.events.store import read_events
from kbert_tui.state import parse_filter
from kbert_tui.state.log_index import search_older
from kbert_tui.state.replay_load import _IS_MILESTONE, end_events

# -- the plain reference ---------------------------------------------------------------------------


def reference(data: bytes) -> tuple[list[tuple[Any, ...]], int]:
    """(events, skipped lines): each `\\n`-separated line stripped, blank ones ignored, `json.loads`, and
    the event rules of the README (name a non-empty string, an ISO timestamp, data an object)."""
    events: list[tuple[Any, ...]] = []
    skipped = 0
    for raw in data.split(b"\n"):
        line = raw.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            skipped += 1
            continue
        event = _reference_event(record)
        if event is None:
            skipped += 1
        else:
            events.append(event)
    return events, skipped


def _reference_event(record: Any) -> tuple[Any, ...] | None:
    if not isinstance(record, dict):
        return None
    name, stamp, data = record.get("name"), record.get("timestamp"), record.get("data", {})
    if not isinstance(name, str) or not name or not isinstance(stamp, str) or not isinstance(data, dict):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {"value": metadata}
    source, corr, ident = record.get("source"), record.get("correlation_id"), record.get("id")
    return (ident if isinstance(ident, str) and ident else None, name, moment, source if isinstance(source, str)
            else "unknown", corr if corr is None or isinstance(corr, str) else str(corr), data, metadata)


def seen(event: Any, expected: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event read by a reader, in the reference's terms (a generated id only where the line had none)."""
    return (event.id if expected[0] is not None else None, event.name, event.timestamp, event.source,
            event.correlation_id, event.data, event.metadata)


def same(events: list[Any], expected: list[tuple[Any, ...]]) -> bool:
    """Equal events in the same order: exact times (offset too), data equal down to 0 vs -0.0 and int vs float."""
    if len(events) != len(expected):
        return False
    return all(_key(seen(e, x)) == _key(x) for e, x in zip(events, expected, strict=True))


def _key(event: tuple[Any, ...]) -> tuple[Any, ...]:
    ident, name, moment, source, corr, data, metadata = event
    return ident, name, moment.isoformat(), source, corr, _exact(data), _exact(metadata)


def _exact(value: Any) -> str:
    return repr(value)  # repr tells -0.0 from 0, 5 from 5.0; NaN reprs equal


# -- generated logs --------------------------------------------------------------------------------

NAMES = ["training.batch_completed", "training.started", "training.epoch_completed", "system.cpu_usage",
         "résumé.saved", "data/x.y", 'quote"d', "ü", "training.é", "bus.loop_blocked", "control.pause"]
TEXT = st.text(alphabet=st.sampled_from(list("abé/\"\\ \n\t€😀0-.x")) | st.characters(codec="utf-8"), max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0, 5, 2**64, -(2**70), 10**20])
           | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-0.0, 5.0, 0.5]) | TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["x", "epoch", "é", "a/b", 'q"']) | TEXT, inner, max_size=3),
                      max_leaves=8)
DATA = st.dictionaries(st.sampled_from(["x", "epoch", "loss", "é", "run_id", "a/b"]) | TEXT, VALUES, max_size=4)
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """One event record, now and then with a field missing or of the wrong type."""
    moment = BASE + timedelta(seconds=draw(st.integers(0, 20)), microseconds=draw(st.integers(0, 3)))
    stamp = draw(st.sampled_from([moment.isoformat(), moment.replace(tzinfo=None).isoformat(),
                                  moment.astimezone(timezone(timedelta(hours=2))).isoformat()]))
    record: dict[str, Any] = {
        "id": draw(st.sampled_from(["e1", "e2", "ü-3"]) | st.uuids().map(str)),
        "name": draw(st.sampled_from(NAMES)),
        "timestamp": stamp,
        "source": draw(st.sampled_from(["trainer", "system", "unknown", "a/b"])),
        "correlation_id": draw(st.sampled_from([None, "run-1", "run/2", "5"])),
        "data": draw(DATA | st.fixed_dictionaries({"x": st.sampled_from([0, -0.0, 0.0, 5, 5.0, 2**64, "a/b", None])},
                                                  optional={"é": st.none(), "a/b": st.booleans()})),
        "metadata": draw(st.sampled_from([{}, {"k": 1}])),
    }
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.integers(0, 3)) == 0:
            key = draw(st.sampled_from(sorted(record)))
            if draw(st.booleans()):
                del record[key]
            else:
                record[key] = draw(st.sampled_from([None, 5, "", "never", [1], {"a": 1}, True, 1.5]))
    return record


@st.composite
def spelled(draw: st.DrawFn, value: Any) -> str:
    """`value` as JSON text in a layout of the draw's choosing (and its escapes)."""
    if isinstance(value, dict):
        items = list(value.items())
        order = draw(st.permutations(range(len(items))) | st.just(range(len(items))))  # any order, often ours
        colon, comma = draw(st.sampled_from([":", ": ", " : ", ":\t"])), draw(st.sampled_from([",", ", ", " ,\t"]))
        inner = comma.join(draw(spelled(items[i][0])) + colon + draw(spelled(items[i][1])) for i in order)
        return "{" + draw(st.sampled_from(["", " "])) + inner + "}"
    if isinstance(value, list):
        return "[" + draw(st.sampled_from([",", ", "])).join(draw(spelled(v)) for v in value) + "]"
    if isinstance(value, str):  # each character raw or escaped, as one drawn mask says
        mask = draw(st.sampled_from([0, 0, -1]) | st.integers(0, 2 ** len(value) - 1)) if value else 0
        return '"' + "".join(_char(c, bool(mask >> i & 1)) for i, c in enumerate(value)) + '"'
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 and draw(st.booleans()):
        whole = int(value)
        return draw(st.sampled_from([f"{'-' if math.copysign(1, value) < 0 else ''}{abs(whole)}.0",
                                     f"{value!r}", f"{whole * 10}e-1" if whole else f"{value!r}"]))
    return json.dumps(value)


def _char(c: str, escape: bool) -> str:
    """One character of a JSON string: escaped where JSON requires it, else raw or escaped as asked."""
    required = json.dumps(c, ensure_ascii=False)[1:-1]
    if required != c:  # a quote, a backslash, a control character
        return f"\\u{ord(c):04x}" if escape else required
    if not escape:
        return c
    if c == "/":
        return "\\/"
    return json.dumps(c)[1:-1] if ord(c) > 0xFFFF else f"\\u{ord(c):04x}"  # a surrogate pair past the BMP


@st.composite
def logs(draw: st.DrawFn) -> bytes:
    """A whole events file: good lines in any layout, damaged ones, blank ones, CRLF, maybe a BOM."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["good"] * 6 + ["truncated", "garbage", "not-object", "blank", "deep"]))
        if kind in ("good", "truncated"):
            text = draw(spelled(draw(records()))).encode()
            if kind == "truncated":
                text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
        elif kind == "garbage":
            text = draw(st.sampled_from([b"not json", b"{", b'{"name": "x",}', b"\xff\xfe", b"NaN", b"{}{}"]))
        elif kind == "not-object":
            text = draw(st.sampled_from([b"[1, 2]", b"5", b'"training.started"', b"null", b"true"]))
        elif kind == "deep":
            depth = draw(st.sampled_from([50, 3000]))
            text = (b'{"name":"x","timestamp":"2026-01-01T00:00:00","data":'
                    + b'{"a":' * depth + b"1" + b"}" * depth + b"}")
        else:
            text = draw(st.sampled_from([b"", b"  ", b"\t"]))
        lines.append(text + draw(st.sampled_from([b"\n", b"\n", b"\r\n"])))
    data = b"".join(lines)
    if draw(st.booleans()):
        data = data.rstrip(b"\r\n")  # the last line without its newline
    if draw(st.integers(0, 4)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


def _write(tmp: Path, data: bytes) -> Path:
    folder = tmp / f"log{_write.count}"  # type: ignore[attr-defined]
    _write.count += 1  # type: ignore[attr-defined]
    folder.mkdir()
    path = folder / "events.jsonl"
    path.write_bytes(data)
    return path


_write.count = 0  # type: ignore[attr-defined]


# -- the readers -----------------------------------------------------------------------------------


@given(logs())
def test_read_events_gives_what_json_loads_per_line_gives(tmp_path_factory, data):
    path = _write(tmp_path_factory.mktemp("r"), data)
    expected, skipped = reference(data)
    reader = read_events(path)
    assert same(list(reader), expected)
    assert reader.malformed == skipped


QUERIES = [
    lambda: EventQuery(),
    lambda: EventQuery().event_name_pattern("training.*"),
    lambda: EventQuery().event_name_pattern("r?sum?.saved"),
    lambda: EventQuery().event_name_pattern("?").event_name_pattern("data/*"),
    lambda: EventQuery().event_name_pattern('quote"d'),
    lambda: EventQuery().correlation_id("run-1"),
    lambda: EventQuery().correlation_id("run/2").source("trainer"),
    lambda: EventQuery().correlation_id("5"),
    lambda: EventQuery().source("unknown"),
    lambda: EventQuery().data_contains({"x": 0}),
    lambda: EventQuery().data_contains({"epoch": 5}).event_name_pattern("training.*"),
    lambda: EventQuery().data_contains({"x": 2**64}),
    lambda: EventQuery().data_contains({"é": None}),
    lambda: EventQuery().data_contains({"a/b": True}),
    lambda: EventQuery().data_contains({"x": "a/b"}),
    lambda: EventQuery().time_range(BASE + timedelta(seconds=5), BASE + timedelta(seconds=15)),
    lambda: EventQuery().event_name_pattern("training.*").limit(3),
]


@given(logs(), st.sampled_from(range(len(QUERIES))))
def test_query_events_gives_what_matching_each_json_loads_event_gives(tmp_path_factory, data, which):
    path = _write(tmp_path_factory.mktemp("q"), data)
    query = QUERIES[which]()

    async def run() -> tuple[list[Any], int]:
        bus = EventBus(enable_persistence=True, persistence_path=path)
        try:
            return await bus.query_events(query), bus.last_query_skipped
        finally:
            await bus.shutdown()

    found, skipped = asyncio.run(run())
    expected, expected_skipped = reference(path.read_bytes())  # the bus may have ended a torn last line
    plain = read_events(path)
    everything = list(plain)
    assert same(everything, expected)
    reference_of = {id(event): record for event, record in zip(everything, expected, strict=True)}
    wanted = query.run_events(everything)  # the plain path: every decoded event through `matches`
    assert same(found, [reference_of[id(event)] for event in wanted])
    # Lines no byte-level test lets through are not decoded, so not counted: a query that tests no
    # bytes counts every unreadable line.
    assert skipped <= expected_skipped
    if which in (0, len(QUERIES) - 2):
        assert skipped == expected_skipped


@given(logs(), st.sampled_from([0, 200, 1 << 20]))
def test_the_replay_end_holds_every_milestone_before_the_tail_and_every_event_of_it(tmp_path_factory, data, tail):
    path = _write(tmp_path_factory.mktemp("e"), data)
    cut = 0  # where the tail starts: the first line start after the last `tail` bytes begin
    if tail < len(data):
        cut = data.find(b"\n", len(data) - tail) + 1 or len(data)
    before, before_skipped = reference(data[:cut])
    after, after_skipped = reference(data[cut:])
    end = end_events([path], tail)
    assert same(end.milestones, [e for e in before if _IS_MILESTONE.match(e[1])])
    assert same(end.tail, after)
    assert after_skipped <= end.malformed <= after_skipped + before_skipped


@given(logs())
def test_the_follower_delivers_every_complete_line_as_json_loads_reads_it(tmp_path_factory, data):
    path = _write(tmp_path_factory.mktemp("f"), data)
    complete = data[: data.rfind(b"\n") + 1]  # the active file's unfinished last line waits for its newline
    expected, skipped = reference(complete)
    with LogFollower(path) as follower:
        events = follower.read_events()
        assert follower.read_events() == []
        assert same(events, expected)
        assert follower.malformed == skipped


SEARCHES = [None, "training.*", "résumé", "run/2", "!system.*", '"a/b"', "é", "source:trainer"]


@given(logs(), st.sampled_from(SEARCHES), st.sampled_from([3, 10**9]))
def test_the_o_search_finds_what_the_filter_finds_among_json_loads_events(tmp_path_factory, data, text, count):
    path = _write(tmp_path_factory.mktemp("o"), data)
    matcher = parse_filter(text) if text is not None else None
    everything = list(read_events(path))
    expected, skipped = reference(data)
    assert same(everything, expected)
    wanted = [record for event, record in zip(everything[:count], expected, strict=False)  # the first count
              if matcher is None or matcher.matches_alone(event)]
    result = search_older(path, count, matcher, capacity=1000)
    assert result is not None
    found, matched, malformed = result
    assert matched == len(wanted)
    assert same([found.get(seq) for seq in range(found.base, found.total)], wanted)
    if count > len(expected):
        assert malformed == skipped
