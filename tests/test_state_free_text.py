"""Free-text search over the event log: the bulk haystacks and the needle-only scan agree with the matcher."""

from __future__ import annotations

import json

from kbert_tui.events import Event
from kbert_tui.state import EventLog, parse_filter
from kbert_tui.state.filter import event_text, event_texts


class Thing:
    def __repr__(self) -> str:
        return "<Thing NVIDIA-ish>"


EVENTS = [
    Event("system.gpu_unavailable", {"reason": "NVML: NVIDIA driver not loaded"}, source="system"),
    Event("training.batch_completed", {"loss": 0.25, "metrics": {"grad_norm": 1.5}}, correlation_id="Run-7"),
    Event("data.loading", {"note": "Data Loading slow", 3: "int key", "thing": Thing()}, source="loader"),
    Event("x.deep", json.loads('{"a":' * 300 + "{}" + "}" * 300)),  # past orjson's depth: one at a time
    Event("x.plain", {}),
]


def test_bulk_haystacks_equal_one_at_a_time_and_hold_name_source_corr_and_data():
    assert event_texts(EVENTS) == [event_text(e) for e in EVENTS]
    assert event_texts(EVENTS[:3]) == [event_text(e) for e in EVENTS[:3]]  # orjson takes them all at once
    text = event_text(EVENTS[1])
    assert text.startswith("training.batch_completed unknown run-7 ") and '"grad_norm":1.5' in text
    assert "<thing nvidia-ish>" in event_text(EVENTS[2]) and '"3":"int key"' in event_text(EVENTS[2])


def test_a_free_text_only_filter_finds_what_the_matcher_finds_cold_and_warm():
    log = EventLog(capacity=4)  # the ring wraps: warm-up runs over two slices
    log.extend(EVENTS * 3)
    for query in ("nvidia", '"data loading"', "run-7 loss", "absent", "nvidia !system.*"):
        matcher = parse_filter(query)
        expected = [seq for seq in range(log.base, log.total) if matcher.matches(log.get(seq))]
        for _ in ("cold", "warm"):
            log.set_filter(parse_filter(query))
            assert [log.seq_at(row) for row in range(len(log))] == expected, query
    assert parse_filter("nvidia loss").text_needles == ("nvidia", "loss")
    assert parse_filter("nvidia !system.*").text_needles is None
    assert parse_filter("nvidia OR loss").text_needles is None
