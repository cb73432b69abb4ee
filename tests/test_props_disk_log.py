"""Differential: a name filter answered from the index's name column equals the matcher over decoded events."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kbert_tui.events import Event
from kbert_tui.events.index import open_index
from kbert_tui.state import parse_filter
from kbert_tui.state.disk_log import name_only
from kbert_tui.state.log_index import _search_indexed, search_decoding
from kbert_tui.state.replay_load import load_indexed

NAMES = ["training.started", "training.batch_completed", "training.epoch_completed", "system.cpu_usage",
         "system.performance_warning", "model.forward_pass", "plugin.loaded", "data.batch_loaded"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

name_term = st.one_of(
    st.sampled_from(NAMES),
    st.sampled_from(["training.*", "system.*", "*.batch_*", "model.?orward_pass", "*", "plugin.[lx]oaded", "nope.*"]),
    st.sampled_from(NAMES + ["training.*"]).map(lambda n: f"name:{n}"),
)


@st.composite
def name_queries(draw: st.DrawFn) -> str:
    terms = draw(st.lists(st.tuples(st.booleans(), name_term), min_size=1, max_size=4))
    words = [("!" if negate else "") + term for negate, term in terms]
    joins = draw(st.lists(st.sampled_from([" ", " OR ", " AND "]), min_size=len(words) - 1, max_size=len(words) - 1))
    query = words[0] + "".join(join + word for join, word in zip(joins, words[1:], strict=True))
    return f"!({query})" if draw(st.booleans()) else query


@given(st.lists(st.sampled_from(NAMES), min_size=1, max_size=120), st.integers(1, 40), name_queries(),
       st.lists(st.integers(0, 119), max_size=5))
def test_the_name_column_filter_equals_the_matcher_over_decoded_events(names: list[str], capacity: int, query: str,
                                                                      junk: list[int]):
    events = [Event(name, {"step": i}, timestamp=T0 + timedelta(seconds=i), source="t", correlation_id="r",
                    id=f"e{i}") for i, name in enumerate(names)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i, event in enumerate(events):
                if i in junk:
                    fh.write("{not json\n")  # a line readers skip: sequence numbers must not count it
                fh.write(json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                                     "source": event.source, "correlation_id": event.correlation_id,
                                     "data": event.data}) + "\n")
        result = load_indexed(open_index(path), capacity)
        assert result is not None
        _, log = result
        matcher = parse_filter(query)
        assert name_only(matcher)
        log.set_filter(matcher)
        assert log.older_complete  # answered from the column, no scan
        got = [log.get(log.seq_at(row)).id for row in range(len(log))]
    assert got == [event.id for event in events if matcher.matches(event)]


texts = st.one_of(st.sampled_from(["Timeout", "loss", "é", "a\\b", "NULL", "none", "x-y.z_w", "\n", "\u2028"]),
                  st.text(max_size=6))
values = st.one_of(st.sampled_from([float("nan"), float("inf"), None, 10**20, 1e-05, True]), texts,
                   st.floats(allow_nan=True), st.integers(-10**25, 10**25))


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.dictionaries(texts, values, min_size=1, max_size=3)), min_size=4,
                max_size=40),
       st.sampled_from(["null", "none", "nu", "on", "nan", "infinity", "true", "e-", "é", "a\\b", "timeout", "x-y",
                        ".", "completed"]),
       st.integers(1, 3), st.booleans())
def test_a_free_text_scan_of_the_older_lines_equals_the_matcher_over_decoded_events(
        records: list[tuple[str, dict]], needle: str, capacity: int, ascii_only: bool):
    events = [Event(name, data, timestamp=T0 + timedelta(seconds=i), source="t", correlation_id="r", id=f"e{i}")
              for i, (name, data) in enumerate(records)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for event in events:  # json.dumps: NaN and Infinity as such, non-ASCII escaped or not
                fh.write(json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                                     "source": event.source, "correlation_id": event.correlation_id,
                                     "data": event.data}, ensure_ascii=ascii_only).replace("Timeout", "\\u0054imeout")
                         + "\n")  # another writer may escape any letter
        result = load_indexed(open_index(path), capacity)
        assert result is not None
        _, log = result
        matcher = parse_filter(json.dumps(needle) if "\\" in needle else needle)
        log.set_filter(matcher)
        *_, (found, done) = log.scan_older(matcher, every_s=0.0)
        assert done and log.add_older(matcher, found, done)
        decoded = [log.get(s) for s in range(log.total)]  # as the readers decode the lines
        got = [log.seq_at(row) for row in range(len(log))]
    assert got == [s for s, event in enumerate(decoded) if matcher.matches_alone(event)]


words = st.sampled_from(["Timeout", "loss", "x-y", "a\\b", "é", "null", "completed"])


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.dictionaries(words, st.one_of(words, values), min_size=1,
                                                                  max_size=3)), min_size=1, max_size=40),
       st.sampled_from([None, "timeout", "x-y", "completed", "é", "a\\b", "null", "training.*", "!system.*",
                        "name:model.forward_pass OR plugin.*", "loss OR timeout", "timeout training.*",
                        "x-y !system.*", "completed step>2", "epoch:1 timeout", "(timeout OR loss) x-y",
                        "!timeout", "!(x-y completed)"]),
       st.integers(0, 45), st.integers(1, 12), st.lists(st.integers(0, 40), max_size=4))
def test_the_indexed_o_search_equals_decoding_every_event(records: list[tuple[str, dict]], query: str | None,
                                                         count: int, capacity: int, junk: list[int]):
    events = [Event(name, data, timestamp=T0 + timedelta(seconds=i), source="t", correlation_id="r", id=f"e{i}")
              for i, (name, data) in enumerate(records)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for i, event in enumerate(events):
                if i in junk:
                    fh.write("{not json\n")
                fh.write(json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                                     "source": event.source, "correlation_id": event.correlation_id,
                                     "data": event.data}).replace("Timeout", "\\u0054imeout") + "\n")
        matcher = parse_filter(json.dumps(query) if query and "\\" in query else query) if query else None
        indexed = _search_indexed(path, count, matcher, capacity, None)
        plain = search_decoding(path, count, matcher, capacity)
    assert indexed and plain  # neither cancelled, and the index was there
    (found, matched, _), (expected, expected_matched, _) = indexed, plain
    assert matched == expected_matched
    assert (found.total, found.base) == (expected.total, expected.base)
    assert [found.get(s).id for s in range(found.base, found.total)] == \
        [expected.get(s).id for s in range(expected.base, expected.total)]
