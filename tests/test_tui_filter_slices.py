"""Pilot: `/` over a big window is judged a slice per tick, not in one call on the loop: the rows found so
far show with 'searching…' in the status line, then every match, the cursor's event kept under it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from simulate import simulate_run
from textual.widgets import Static

from kbert_tui.state import EventLog, log_index, parse_filter
from kbert_tui.tui import MonitorApp, ReplaySource


async def test_a_filter_over_a_big_window_is_judged_tick_by_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    events = list(simulate_run(epochs=3, steps_per_epoch=60, system_every=2))
    path = tmp_path / "events.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                                 "source": event.source, "correlation_id": event.correlation_id,
                                 "data": event.data}) + "\n")
    monkeypatch.setattr(log_index, "_FILTER_CHUNK", 16)  # a slice judges 16 events between looks at the clock
    app = MonitorApp(ReplaySource(path))
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(500):
            await pilot.pause(0.02)
            if app.source.finished and app.history_complete:
                break
        log = app.log_index
        assert log.total == len(events) and not log.base  # the whole log in the window
        view = app.log_view
        view.follow = False
        view.go_to_seq(len(events) // 2)
        keep = view.selected_seq()
        monkeypatch.setattr(log_index.time, "perf_counter", iter(range(10**9)).__next__)  # each slice one chunk
        assert app.apply_filter("system.*")
        assert log.filter_pending and len(log) <= 16  # the call judged one chunk
        assert "searching…" in str(app.query_one("#statusbar", Static).render())
        monkeypatch.undo()
        for _ in range(200):
            await pilot.pause(0.02)
            if not log.filter_pending:
                break
        await pilot.pause(0.05)
        reference = EventLog(log.capacity)
        reference.extend(log.get(seq) for seq in range(log.total))
        reference.set_filter(parse_filter("system.*"))
        assert [log.seq_at(r) for r in range(len(log))] == [reference.seq_at(r) for r in range(len(reference))]
        assert view.selected_seq() == reference.seq_at(reference.nearest_row(keep))  # kept under the cursor
        assert "searching" not in str(app.query_one("#statusbar", Static).render())
