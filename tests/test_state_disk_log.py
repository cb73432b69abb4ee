"""A recording's whole log through its index: the end, the history and every event navigable from disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from simulate import simulate_run

from kbert_tui.events import Event
from kbert_tui.events.index import open_index
from kbert_tui.events.store import JsonlStore, read_events
from kbert_tui.state import EventLog, event_kind, parse_filter
from kbert_tui.state.disk_log import DiskEventLog, name_only, read_lines
from kbert_tui.state.replay_load import end_from_index, load_all, load_end, load_indexed


def two_runs() -> list[Event]:
    events = list(simulate_run(epochs=3, steps_per_epoch=120, run_id="run-a", system_every=2))
    return events + list(simulate_run(epochs=2, steps_per_epoch=90, run_id="run-b", system_every=2))


def write_foreign(path: Path, events: list[Event], junk_every: int = 0) -> None:
    """The log as another tool writes it: json.dumps' default separators, a junk line now and then."""
    with open(path, "w", encoding="utf-8") as fh:
        for i, event in enumerate(events):
            fh.write(json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                                 "source": event.source, "correlation_id": event.correlation_id,
                                 "data": event.data, "metadata": event.metadata}) + "\n")
            if junk_every and i % junk_every == 0:
                fh.write("not an event\n")


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Event]]:
    events = two_runs()
    path = tmp_path_factory.mktemp("seg") / "events.jsonl"
    store = JsonlStore(path, max_file_size_mb=0.1)  # our writer, rotating: an index per segment, kept as it writes
    for event in events:
        store.append(event)
    store.close()
    assert len(read_events(path).files) > 2
    return path, events


def test_the_end_through_the_index_is_the_end_found_by_scanning(segmented: tuple[Path, list[Event]]):
    path, events = segmented
    index = open_index(path)
    fast = end_from_index(index, capacity=500, tail_bytes=32 << 10)
    plain = load_end(read_events(path).files, capacity=500, tail_bytes=32 << 10)
    assert (fast.runs, fast.run_ids, fast.malformed) == (plain.runs, plain.run_ids, plain.malformed) == (
        2, ["run-a", "run-b"], 0)
    assert [fast.log.get(s).id for s in range(fast.log.total)] == [plain.log.get(s).id for s in range(plain.log.total)]
    a, b = fast.state.training, plain.state.training
    assert (a.run_id, a.status, a.epochs_done, a.step, a.loss, a.best_value, a.epoch_metrics) == (
        b.run_id, b.status, b.epochs_done, b.step, b.loss, b.best_value, b.epoch_metrics)
    assert a.status == "completed" and a.step == 180


def test_the_history_through_the_index_keeps_the_loss_curve_and_reads_older_events_from_disk(
        segmented: tuple[Path, list[Event]]):
    path, events = segmented
    result = load_indexed(open_index(path), capacity=300, chunk=500)
    assert result is not None
    state, log = result
    plain = load_all(iter(read_events(path)), capacity=300)
    assert plain is not None
    full, _ = plain
    assert isinstance(log, DiskEventLog) and log.total == len(events) and log.base == len(events) - 300
    assert log.evicted == 0 and len(log) == len(events)
    assert [log.get(s).id for s in range(0, len(events), 37)] == [e.id for e in events[::37]]
    assert log.seq_at(0) == 0 and log.row_of(5) == 5 and log.event_at(len(events) - 1).id == events[-1].id
    a, b = state.training, full.training
    assert (a.loss_history.count, a.step, a.status, a.best_value, a.epoch_metrics) == (
        b.loss_history.count, b.step, b.status, b.best_value, b.epoch_metrics)
    assert (state.events_seen, state.errors_seen, state.warnings_seen) == (
        full.events_seen, full.errors_seen, full.warnings_seen)


def test_a_foreign_log_with_junk_lines_numbers_only_its_events(tmp_path: Path):
    events = list(simulate_run(epochs=2, steps_per_epoch=60, system_every=3))
    path = tmp_path / "foreign.jsonl"
    write_foreign(path, events, junk_every=50)
    index = open_index(path)
    assert index.unreadable() == len(range(0, len(events), 50))
    result = load_indexed(index, capacity=100)
    assert result is not None
    _, log = result
    assert log.total == len(events)
    assert [log.get(s).id for s in range(len(events))] == [e.id for e in events]
    log.set_filter(parse_filter("training.epoch_*"))
    wanted = [i for i, e in enumerate(events) if e.name.startswith("training.epoch_")]
    assert [log.seq_at(r) for r in range(len(log))] == wanted
    assert end_from_index(index, capacity=100).malformed == index.unreadable()


@pytest.mark.parametrize(("query", "expected"), [
    ("training.*", True), ("training.started OR name:plugin.*", True), ("!system.*", True),
    ("(training.epoch_* OR model.*) !model.forward_pass", True), ("name:x AND y.z", True),
    ("loss>1", False), ("training.* loss>1", False), ("timeout", False), ('"training.started"', False),
    ("source:trainer", False), ("corr:run-*", False), ("epoch:2", False), ("caused-by:x.y", False),
    ("a*=b", False), ("training.* OR warmup", False),
])
def test_name_only_recognises_filters_that_judge_the_name_alone(query: str, expected: bool):
    assert name_only(parse_filter(query)) is expected


def test_a_filter_fills_in_older_matches_as_the_scan_finds_them(segmented: tuple[Path, list[Event]]):
    path, events = segmented
    result = load_indexed(open_index(path), capacity=200)
    assert result is not None
    _, log = result
    matcher = parse_filter("loss<1.5 step:3")
    log.set_filter(matcher)
    assert not log.older_complete and len(log) == sum(matcher.matches_alone(e) for e in events[-200:])
    stages = list(log.scan_older(matcher, every_s=0.0))
    assert stages[-1][1] and not any(done for _, done in stages[:-1])
    assert log.add_older(matcher, *stages[-1]) and log.older_complete
    wanted = [i for i, e in enumerate(events) if matcher.matches_alone(e)]
    assert wanted and [log.seq_at(r) for r in range(len(log))] == wanted
    assert log.row_of(wanted[0]) == 0 and log.nearest_row(wanted[0] + 1) == 1
    assert log.rows_before(wanted[1]) == 1 and log.rows_before(len(events)) == len(wanted)
    assert not log.add_older(parse_filter("x"), np.array([1]), True)  # a stale scan's result is ignored


def test_an_older_events_neighbourhood_holds_its_thread(segmented: tuple[Path, list[Event]]):
    path, events = segmented
    result = load_indexed(open_index(path), capacity=200)
    assert result is not None
    _, log = result
    around, local = log.neighbourhood(10)
    assert around.get(local).id == events[10].id and around.total == min(len(events), 10 + 2001)
    run = [around.get(s).id for s in around.scope(local, "run")]
    assert run == [e.id for e in events[:around.total] if e.correlation_id == events[10].correlation_id]


def test_a_free_text_scan_finds_a_word_another_writer_spelled_with_escapes(tmp_path: Path):
    events = list(simulate_run(epochs=2, steps_per_epoch=30, system_every=3))
    events[5] = Event("plugin.message", {"message": "Timeout waiting"}, id="odd", source="plugin:x")
    path = tmp_path / "foreign.jsonl"
    write_foreign(path, events)
    text = path.read_text(encoding="utf-8").replace("Timeout waiting", "\\u0054imeout waiting")
    path.write_text(text, encoding="utf-8")  # the line holds no "timeout": the prefilter must still offer it
    result = load_indexed(open_index(path), capacity=20)
    assert result is not None
    _, log = result
    matcher = parse_filter("timeout")
    log.set_filter(matcher)
    *_, (found, done) = log.scan_older(matcher)
    assert done and found.tolist() == [5]


def test_e_and_shift_e_find_errors_and_warnings_among_the_older_events(segmented: tuple[Path, list[Event]]):
    path, events = segmented
    result = load_indexed(open_index(path), capacity=100)
    assert result is not None
    _, log = result
    plain = EventLog(len(events))
    plain.extend(events)  # the reference: every event in memory
    for matcher in (None, parse_filter("system.*"), parse_filter("!system.*")):
        log.set_filter(matcher)
        plain.set_filter(matcher)
        for forward in (True, False):
            for seq in (0, 1, 50, log.base - 1, log.base, len(events) // 2, len(events) - 1):
                for limit in (None, len(events) // 3):
                    assert log.problem_after(seq, forward=forward, limit=limit) == plain.problem_after(
                        seq, forward=forward, limit=limit), (matcher and matcher.query, forward, seq, limit)
    assert sum(event_kind(e) in ("error", "warning") for e in events) >= 2


def test_reading_lines_by_spans_gives_the_files_lines(segmented: tuple[Path, list[Event]],
                                                      monkeypatch: pytest.MonkeyPatch):
    from kbert_tui.events import _log_index as index_module
    from kbert_tui.events.store import segment_paths

    path, events = segmented
    index = open_index(path)
    plain = [line.strip() for file in segment_paths(path) for line in file.read_bytes().split(b"\n") if line.strip()]
    rng = np.random.default_rng(7)
    for size in (1, 5, 300, len(events)):
        rows = np.sort(rng.choice(len(index), size=size, replace=False))
        assert read_lines(index, rows) == [plain[r] for r in rows.tolist()]
    monkeypatch.setattr(index_module, "_SPAN_MAX", 1000)  # many small spans
    monkeypatch.setattr(index_module, "_SPAN_GAP", 0)
    rows = np.sort(rng.choice(len(index), size=400, replace=False))
    assert read_lines(index, rows) == [plain[r] for r in rows.tolist()]
    shuffled = rng.permutation(rows)
    assert index.lines(shuffled) == [plain[r] for r in shuffled.tolist()]  # any order, answered in that order
    assert read_lines(index, np.empty(0, np.int64)) == []


@pytest.mark.parametrize("query", [None, "system.*", "loss", "cpu training.*", "loss<2"])
def test_o_on_a_live_rotating_log_through_its_index_equals_decoding_every_event(tmp_path: Path, query: str | None):
    from kbert_tui.state.log_index import _search_indexed, search_decoding

    events = two_runs()
    path = tmp_path / "events.jsonl"
    store = JsonlStore(path, max_file_size_mb=0.1)  # still open: the writer holds the log and keeps its index
    try:
        for event in events:
            store.append(event)
        assert store.wait_written(timeout=30)
        assert len(read_events(path).files) > 2
        matcher = parse_filter(query) if query else None
        count = len(events) - 100  # those that left a 100-event window
        indexed = _search_indexed(path, count, matcher, 100, None)
        plain = search_decoding(path, count, matcher, 100)
    finally:
        store.close()
    assert indexed and plain
    (found, matched, _), (expected, expected_matched, _) = indexed, plain
    assert matched == expected_matched and matched
    assert [found.get(s).id for s in range(found.base, found.total)] == \
        [expected.get(s).id for s in range(expected.base, expected.total)]
