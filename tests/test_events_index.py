"""The index beside an event log: kept by the writer, built for other tools' logs, never trusted blindly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from kbert_tui.events import Event, EventBus, EventQuery
from kbert_tui.events._index_build import COLUMNS, NO_VALUE, NameTable, correlation_hash, index_reference
from kbert_tui.events.index import index_dir, open_index, open_segment
from kbert_tui.events.store import JsonlStore, read_events, segment_paths

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(i: int, name: str = "training.batch_completed", corr: str | None = "run-1") -> Event:
    return Event(name, {"step": i, "epoch": i // 100, "loss": 1.0 / (i + 1)}, timestamp=T0 + timedelta(seconds=i),
                 source="trainer", correlation_id=corr)


def _reference(log: Path) -> dict[str, object]:
    """The plain definition: every line of the file decoded one at a time (names as text)."""
    names = NameTable()
    columns = index_reference(log.read_bytes(), 0, names)
    table = np.array([""] + names.names, object)
    return {key: (table[columns.arrays[key]].tolist() if key == "name" else columns.arrays[key].tolist())
            for key in COLUMNS}


def _as_text(segment) -> dict[str, object]:
    table = np.array([""] + segment.names, object)
    return {key: (table[np.asarray(segment.columns[key])].tolist() if key == "name"
                  else np.asarray(segment.columns[key]).tolist()) for key in COLUMNS}


def _foreign_log(path: Path, count: int, *, start: int = 0) -> None:
    """Lines as other tools write them: json.dumps with its default separators."""
    with open(path, "a") as fh:
        for i in range(start, start + count):
            e = _event(i, "system.cpu_usage" if i % 5 == 0 else "training.batch_completed", corr=f"run-{i // 50}")
            fh.write(json.dumps({"id": e.id, "name": e.name, "timestamp": e.timestamp.isoformat(),
                                 "source": e.source, "correlation_id": e.correlation_id, "data": e.data,
                                 "metadata": {}}) + "\n")


def test_the_writer_keeps_the_index_as_it_writes_and_it_equals_the_reference(tmp_path):
    log = tmp_path / "events.jsonl"
    store = JsonlStore(log)
    for i in range(3000):
        store.append(_event(i, name="training.batch_completed" if i % 3 else "system.cpu_usage"))
    store.close()
    folder = index_dir(log)
    saved = (folder / "offset.u64").stat().st_mtime_ns
    segment = open_segment(log)
    assert segment.folder == folder and len(segment) == 3000 and segment.end == log.stat().st_size
    assert _as_text(segment) == _reference(log)
    assert (folder / "offset.u64").stat().st_mtime_ns == saved  # opened as it was: nothing rebuilt
    assert np.fromfile(folder / "step.i64", "<i8").tolist() == list(range(3000))  # plain numpy reads it


def test_rotation_takes_each_segment_index_along(tmp_path):
    log = tmp_path / "events.jsonl"
    store = JsonlStore(log, max_file_size_mb=0.05)
    for i in range(2000):
        store.append(_event(i))
    store.close()
    files = segment_paths(log)
    assert len(files) > 3 and all(index_dir(f).is_dir() for f in files)
    index = open_index(log)
    assert len(index) == 2000 == len(list(read_events(log)))
    assert index.column("step").tolist() == list(range(2000))
    for file, segment in zip(files, index.segments, strict=True):
        assert segment.folder == index_dir(file) and _as_text(segment) == _reference(file)


def test_a_foreign_log_gets_its_index_built_once_saved_beside_it_and_completed_as_it_grows(tmp_path):
    log = tmp_path / "other.jsonl"
    _foreign_log(log, 1000)
    seen: list[tuple[int, int]] = []
    segment = open_segment(log, progress=lambda done, total: seen.append((done, total)))
    assert segment.folder == index_dir(log) and _as_text(segment) == _reference(log)
    assert seen and seen[-1] == (log.stat().st_size, log.stat().st_size)
    _foreign_log(log, 500, start=1000)  # the other tool writes on
    segment = open_segment(log)
    assert len(segment) == 1500 and _as_text(segment) == _reference(log)
    assert len(np.fromfile(index_dir(log) / "name.u32", "<u4")) == 1500  # completed on disk, not only in memory


def test_a_killed_writer_leaves_an_index_behind_that_is_completed_never_wrong(tmp_path):
    log = tmp_path / "events.jsonl"
    script = textwrap.dedent(f"""
        import sys, time
        from datetime import UTC, datetime
        from kbert_tui.events import Event
        from kbert_tui.events.store import JsonlStore
        store = JsonlStore({str(log)!r})
        i = 0
        while True:
            store.append(Event("training.batch_completed", {{"step": i, "epoch": 0}}, source="t", correlation_id="r"))
            i += 1
            if i == 5000:
                store.wait_written()
                print("ready", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait()
    # the writer died between the log and its index, maybe mid-row: the open repairs, then matches
    segment = open_segment(log, writable=True)
    assert segment.folder == index_dir(log)
    assert _as_text(segment) == _reference(log) and len(segment) >= 5000
    rows = len(segment)
    assert {len(np.fromfile(index_dir(log) / f"{key}.{suffix}", dtype)) for key, suffix, dtype in (
        ("offset", "u64", "<u8"), ("name", "u32", "<u4"), ("time", "i64", "<i8"), ("corr", "u64", "<u8"))} == {rows}
    # a store reopening the log goes on from there
    store = JsonlStore(log)
    store.append(_event(10**6))
    store.close()
    assert _as_text(open_segment(log)) == _reference(log)


def test_a_torn_row_is_cut_back_and_a_damaged_or_foreign_index_is_rebuilt(tmp_path):
    log = tmp_path / "events.jsonl"
    _foreign_log(log, 300)
    open_segment(log)
    folder = index_dir(log)
    with open(folder / "step.i64", "ab") as fh:  # a row torn by a crash
        fh.write(b"\x01\x02\x03")
    assert _as_text(open_segment(log)) == _reference(log)
    steps = np.fromfile(folder / "step.i64", "<i8")
    steps[-1] = 12345  # a wrong value in a row the open re-reads
    steps.tofile(folder / "step.i64")
    assert _as_text(open_segment(log)) == _reference(log)
    offsets = np.fromfile(folder / "offset.u64", "<u8")
    offsets[[10, 11]] = offsets[[11, 10]]  # offsets that go backwards
    offsets.tofile(folder / "offset.u64")
    assert _as_text(open_segment(log)) == _reference(log)
    log.write_text("")  # the log replaced by another with other lines
    _foreign_log(log, 40, start=7)
    assert _as_text(open_segment(log)) == _reference(log)
    log.write_bytes(log.read_bytes()[:100])  # truncated below what the index covers, mid-line
    assert _as_text(open_segment(log)) == _reference(log)


def test_unreadable_and_blank_lines_are_counted_as_the_reader_counts_them(tmp_path):
    log = tmp_path / "events.jsonl"
    _foreign_log(log, 20)
    with open(log, "ab") as fh:
        fh.write(b"not json\n\n   \n[1, 2]\n{\"name\": \"\", \"timestamp\": \"2026-01-01T00:00:00\"}\n")
    _foreign_log(log, 5, start=20)
    with open(log, "ab") as fh:
        fh.write(b'{"name": "last.line", "timestamp": "2026-01-01T00:00:00+00:00"')  # no newline: not finished
    index = open_index(log)
    reader = read_events(log)
    events = list(reader)
    assert len(index) == len(events) + reader.malformed and index.unreadable() == reader.malformed == 4
    assert len(index.segments) == 2  # the saved rows, and the unfinished last line's in memory
    assert _as_text(open_segment(log)) == _reference(log)


def test_a_live_writers_log_is_read_with_its_newest_lines_and_its_index_left_to_the_writer(tmp_path):
    log = tmp_path / "events.jsonl"
    store = JsonlStore(log)
    for i in range(100):
        store.append(_event(i))
    store.wait_written()
    rows_file = index_dir(log) / "offset.u64"
    with open(log, "ab") as fh:  # lines the writer has not indexed (as if just written)
        fh.write(b'{"id": "x", "name": "late.line", "timestamp": "2026-01-02T00:00:00+00:00", "data": {"step": 7}}\n')
    before = rows_file.stat().st_size
    index = open_index(log)
    assert len(index) == 101 and index.names()[-1] == "late.line"
    assert rows_file.stat().st_size == before  # a reader never writes the index a live writer keeps
    store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a read-only mount (root)")
def test_a_log_in_a_read_only_folder_gets_its_index_in_the_cache_directory(tmp_path, monkeypatch):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("no tmpfs here")
    try:
        log = mount / "events.jsonl"
        _foreign_log(log, 200)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))
        segment = open_segment(log)
        assert segment.folder is not None and segment.folder.is_relative_to(tmp_path / "cache")
        assert _as_text(segment) == _reference(log) and not index_dir(log).exists()
        assert open_segment(log).folder == segment.folder  # found there next time
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


async def test_query_events_narrows_through_the_index_and_agrees_with_a_full_scan(tmp_path):
    log = tmp_path / "events.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=log)
    for i in range(5000):
        await bus.emit("training.batch_completed" if i % 10 else "system.cpu_usage", {"step": i, "epoch": i // 1000},
                       correlation_id=f"run-{i // 2500}")
    await bus.flush()
    queries = [EventQuery().event_name_pattern("system.*"),
               EventQuery().step_range(100, 149),
               EventQuery().correlation_id("run-1").event_name_pattern("system.*").limit(7),
               EventQuery().step_range(4990).data_contains({"epoch": 4})]
    for query in queries:
        assert query.narrows_by_index()
        found = await bus.query_events(query)
        assert found == query.run_chunks(read_events(log).chunks())  # the plain scan
    assert [e.data["step"] for e in await bus.query_events(EventQuery().step_range(100, 149))] == list(range(100, 150))
    await bus.shutdown()


def test_correlation_hash_is_stable_and_never_zero():
    assert correlation_hash(None) == 0 and correlation_hash("run-1") == correlation_hash("run-1") != 0
    assert NO_VALUE == np.iinfo(np.int64).min


def test_the_offsets_check_holds_across_its_chunks():
    from kbert_tui.events.index import _ascending

    lengths = np.full(7, 5, np.uint32)
    offsets = np.arange(0, 35, 5, dtype=np.uint64)
    for chunk in (1, 2, 3, 100):
        assert _ascending(offsets, lengths, chunk)
        for row in range(1, 7):  # a line overlapping the one before, at any place relative to the chunks
            bad = offsets.copy()
            bad[row] -= np.uint64(1)
            assert not _ascending(bad, lengths, chunk), (chunk, row)
