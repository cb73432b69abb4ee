"""The log index against plain references (issue 24), on generated logs in any layout with damaged lines.

- Arrow's fast path (`index_block`) gives exactly the columns of the one-line-at-a-time reference
  (`index_reference`), for any block: where Arrow could read a line differently the block must fall back.
- The index agrees with `read_events`: a row per non-blank line, name 0 exactly for the lines it skips.
- `EventQuery.run_index` (columns narrow, then decode) finds exactly what the plain scan finds.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kbert_tui.events import EventQuery
from kbert_tui.events._index_build import COLUMNS, NameTable, index_block, index_reference
from kbert_tui.events.index import open_index
from kbert_tui.events.store import read_events

from kbert_tui.events._codec import encode_event
from kbert_tui.state.compare import compare_table, load_run, render_table
from test_props_readers import BASE, NAMES, logs, records, spelled
from test_props_resume import interrupted
from test_props_resume import reference as resume_reference


def _text_columns(columns: Any, names: NameTable) -> dict[str, list[Any]]:
    table = np.array([""] + names.names, object)
    return {key: (table[columns.arrays[key]].tolist() if key == "name" else columns.arrays[key].tolist())
            for key in COLUMNS}


STEPS = st.sampled_from([0, 7, -3, 2**31, 2**63 - 1, 2**63, -(2**63), 1.0, 2.5, True, None, "3", [1]])


@st.composite
def plain_records(draw: st.DrawFn) -> dict[str, Any]:
    """Event records with steps and epochs of every kind (the columns Arrow reads)."""
    record = draw(records())
    if isinstance(record.get("data"), dict):
        for key in ("step", "epoch"):
            if draw(st.booleans()):
                record["data"][key] = draw(STEPS)
    return record


@st.composite
def clean_records(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed events (what Arrow's path takes), steps and epochs of every kind among them."""
    moment = BASE + timedelta(seconds=draw(st.integers(0, 20)), microseconds=draw(st.integers(0, 999_999)))
    data: dict[str, Any] = {"x": draw(st.sampled_from([0, 1.5, "a/b", None, [1, {"y": 2}]]))}
    for key in ("step", "epoch"):
        if draw(st.integers(0, 3)):
            data[key] = draw(st.integers(-5, 10) | STEPS if draw(st.integers(0, 5)) == 0 else st.integers(-5, 10))
    return {"id": draw(st.sampled_from(["e1", "e2", "ü-3"])), "name": draw(st.sampled_from(NAMES)),
            "timestamp": draw(st.sampled_from([moment.isoformat(), moment.isoformat().replace("+00:00", "Z")])),
            "source": "trainer", "correlation_id": draw(st.sampled_from([None, "run-1", "run/2", "5"])),
            "data": data, "metadata": {}}


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    """Whole-line blocks: mostly lines Arrow takes (no CR, no BOM), sometimes any generated log."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(logs())
    make = clean_records if kind < 3 else plain_records
    lines = [draw(spelled(draw(make()))).encode() for _ in range(draw(st.integers(1, 12)))]
    data = b"\n".join(lines) + b"\n"
    if draw(st.integers(0, 5)) == 0:
        data += draw(st.sampled_from([b"not json\n", b"[1]\n", b'{"name": "x"}\n', b"\n", b"  \n"]))
    return data


def test_a_plain_block_takes_arrows_path(monkeypatch):
    from kbert_tui.events import _index_build

    def refuse(*args: Any) -> None:
        raise AssertionError("fell back to the reference")

    monkeypatch.setattr(_index_build, "index_reference", refuse)
    line = b'{"id": "e%d", "name": "t.b", "timestamp": "2026-01-01T00:00:0%d.5+00:00", "data": {"step": %d}}\n'
    block = b"".join(line % (i, i, i) for i in range(5))
    assert index_block(block, 10, NameTable()).arrays["step"].tolist() == list(range(5))


@given(blocks(), st.integers(0, 10**12))
def test_arrow_fast_path_gives_the_reference_columns(data, base):
    fast_names, plain_names = NameTable(), NameTable()
    fast = index_block(data, base, fast_names)
    plain = index_reference(data, base, plain_names)
    assert _text_columns(fast, fast_names) == _text_columns(plain, plain_names)


_count = [0]


def _write(tmp: Path, data: bytes) -> Path:
    _count[0] += 1
    folder = tmp / f"log{_count[0]}"
    folder.mkdir()
    path = folder / "events.jsonl"
    path.write_bytes(data)
    return path


@given(data=blocks())
def test_the_index_has_a_row_per_line_and_names_exactly_what_readers_read(tmp_path_factory, data):
    path = _write(tmp_path_factory.mktemp("idx"), data)
    index = open_index(path)
    reader = read_events(path)
    events = list(reader)
    names = [n for segment in index.segments
             for n in np.array([""] + segment.names, object)[np.asarray(segment.columns["name"])].tolist()]
    assert [n for n in names if n] == [e.name for e in events]
    assert index.unreadable() == reader.malformed and len(index) == len(events) + reader.malformed


QUERIES = st.fixed_dictionaries({}, optional={
    "pattern": st.sampled_from(NAMES + ["training.*", "*.cpu_*", "?", "data/*", "nothing.here"]),
    "start": st.integers(0, 20), "end": st.integers(0, 20),
    "steps": st.tuples(st.none() | st.integers(-5, 10), st.none() | st.integers(-5, 10)),
    "corr": st.sampled_from(["run-1", "run/2", "5", "absent"]),
    "limit": st.integers(0, 5),
})


def _query(spec: dict[str, Any]) -> EventQuery:
    query = EventQuery()
    if "pattern" in spec:
        query.event_name_pattern(spec["pattern"])
    if "start" in spec or "end" in spec:
        query.time_range(BASE + timedelta(seconds=spec["start"]) if "start" in spec else None,
                         BASE + timedelta(seconds=spec["end"]) if "end" in spec else None)
    if "steps" in spec:
        query.step_range(*spec["steps"])
    if "corr" in spec:
        query.correlation_id(spec["corr"])
    if "limit" in spec:
        query.limit(spec["limit"])
    return query


@given(data=blocks(), spec=QUERIES)
def test_a_query_through_the_index_finds_what_the_plain_scan_finds(tmp_path_factory, data, spec):
    path = _write(tmp_path_factory.mktemp("q"), data)
    query = _query(spec)
    expected = query.run_chunks(read_events(path).chunks())
    assert _seen(query.run_index(open_index(path))) == _seen(expected)


def _seen(events: list[Any]) -> list[tuple[Any, ...]]:
    """Events as read (a line without an id gets a fresh one at each read: ids are left out)."""
    return [(e.name, e.timestamp, e.source, e.correlation_id, repr(e.data), e.metadata) for e in events]


# -- compare's table through the index ---------------------------------------------------------------

ODD_LINES = [b"", b"not json\n",
             b'{"name": "training.batch_completed", "timestamp": "2026-01-01T00:00:00+00:00", "data": {"step": "x"}}\n']


@given(resumed=st.booleans(), killed_at=st.integers(1, 20), back=st.integers(0, 21), paused=st.booleans(),
       loss=st.sampled_from([None, "nan", 0.5, "x"]), extra=st.sampled_from(ODD_LINES), escaped=st.booleans())
def test_compare_reads_the_same_table_through_the_index(tmp_path_factory, resumed, killed_at, back, paused, loss,
                                                        extra, escaped):
    """The table `kbert-tui compare` prints, from the index's few lines, equals the one from every line
    (a run killed and resumed, paused, with odd lines among its events)."""
    events = interrupted(resume_reference(), killed_at, max(0, killed_at - back)) if resumed else resume_reference()
    last_batch = max(i for i, e in enumerate(events) if e.name == "training.batch_completed")
    events[last_batch].data["loss"] = loss  # maybe a batch the record does not take: it reads back further
    lines = [encode_event(e).encode() for e in events]
    if escaped:  # another writer may spell a key with escapes: the resume must still be seen
        lines = [line.replace(b'"resumed_at_step"', b'"resumed\\u005fat_step"') for line in lines]
    if paused:
        cut = len(lines) // 2
        lines[cut:cut] = [b'{"id": "p", "name": "training.paused", "timestamp": "2026-01-01T00:00:00+00:00", '
                          b'"data": {"step": 3}}\n', extra]
    path = _write(tmp_path_factory.mktemp("cmp"), b"".join(lines) + extra)
    tables = [render_table(compare_table([load_run(path, "r", curves=curves)]), "json") for curves in (True, False)]
    assert tables[0] == tables[1]
