"""Differential: a window filtered a slice at a time, with events arriving and leaving meanwhile, shows the
rows judging each event alone shows (and, while it is still judging, a prefix of them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from kbert_tui.events import Event
from kbert_tui.state import EventLog, EventMatcher, parse_filter
from kbert_tui.state import log_index

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = ["training.batch_completed", "training.epoch_completed", "system.cpu_usage", "system.performance_warning"]
QUERIES = ["slow", "slow disk", "system.*", "!training.*", "step>5", "loss<0.5 OR slow", "epoch:1", "epoch:0 slow",
           "training.* note:ok"]

events = st.builds(lambda name, step, note, loss: (name, {"step": step, "note": note, "loss": loss}),
                   st.sampled_from(NAMES), st.integers(0, 12), st.sampled_from(["ok", "slow disk", "Slow"]),
                   st.floats(0, 1))
steps = st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 9)), st.tuples(st.just("more"), st.just(0)),
                           st.tuples(st.just("filter"), st.integers(0, len(QUERIES) - 1))), max_size=12)


def build(records: list[tuple[str, dict]]) -> list[Event]:
    out = []
    epoch = 0
    for i, (name, data) in enumerate(records):
        if name == "training.epoch_completed":
            epoch += 1
            data = {**data, "epoch": epoch}
        out.append(Event(name, data, timestamp=T0 + timedelta(seconds=i), source="t", correlation_id="r", id=f"e{i}"))
    return out


def rows(log: EventLog) -> list[int]:
    return [log.seq_at(r) for r in range(len(log))]


@given(st.lists(events, min_size=1, max_size=80), st.integers(1, 30), st.integers(0, len(QUERIES) - 1), steps,
       st.integers(1, 5))
def test_a_window_filtered_in_slices_shows_what_judging_each_event_shows(records: list[tuple[str, dict]], capacity: int,
                                                                     query: int, plan: list[tuple[str, int]],
                                                                    chunk: int):
    stream = iter(build(records))
    log = EventLog(capacity)
    with mock.patch.object(log_index, "_FILTER_CHUNK", chunk):
        log.extend(next(stream) for _ in range(len(records) // 2))
        matcher = parse_filter(QUERIES[query])
        log.set_filter(matcher, budget_s=0.0)
        for action, value in plan:
            if action == "append":
                log.extend(event for _, event in zip(range(value), stream, strict=False))
            elif action == "more":
                log.filter_more(0.0)
            else:
                matcher = parse_filter(QUERIES[value])
                log.set_filter(matcher, budget_s=0.0)
            so_far = rows(log)
            reference = [seq for seq in range(log.base, log.total) if accepts(log, matcher, seq)]
            assert so_far == reference[:len(so_far)]
        log.filter_more()
        assert not log.filter_pending
        assert rows(log) == [seq for seq in range(log.base, log.total) if accepts(log, matcher, seq)]


def accepts(log: EventLog, matcher: EventMatcher, seq: int) -> bool:
    """The reference: the filter's answer for `seq` as the log judges one arriving event (its scope, then
    `matcher.matches`), not the slices' fast paths (cached texts searched for the needle)."""
    return log._matches_seq(matcher, seq, log.get(seq), lambda: log.text(seq))
