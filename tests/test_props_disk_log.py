"""Differential: a name filter answered from the index's name column equals the matcher over decoded events."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kbert_tui.events import Event
from kbert_tui.events.index import open_index
from kbert_tui.state import parse_filter
from kbert_tui.state.disk_log import name_only
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
