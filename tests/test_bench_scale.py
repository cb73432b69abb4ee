"""benchmarks/bench_scale.py's log generator: the layout other tools write, readable, and the hits it promises."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

from kbert_tui.events.store import read_events

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = module
    spec.loader.exec_module(module)
    return module


def test_lines_are_json_dumps_default_layout_and_read_back(bench, tmp_path):
    log, meta = bench.ensure_logs(tmp_path, 3000)
    lines = log.read_text().splitlines()
    assert len(lines) == 3000 == meta["events"]
    assert all(line == json.dumps(json.loads(line)) for line in lines)  # ", " and ": ", keys in the seed's order
    assert lines[0].startswith('{"id": "r0000-')
    reader = read_events(log)
    events = list(reader)
    assert reader.malformed == 0 and len(events) == 3000
    assert len({e.id for e in events}) == 3000
    assert all(a.timestamp < b.timestamp for a, b in zip(events, events[1:], strict=False))
    runs = bench.run_dirs(log)
    assert len(runs) == len(meta["runs"]) > 1
    assert b"".join((run / "events.jsonl").read_bytes() for run in runs) == log.read_bytes()
    assert {e.correlation_id for e in events} == {f"run-{n:04d}" for n in range(len(runs))}


def test_query_plan_counts_what_a_plain_scan_finds(bench, tmp_path):
    log, meta = bench.ensure_logs(tmp_path, 3000)
    plan = meta["queries"]
    events = list(read_events(log))
    start, end = (datetime.fromisoformat(plan["time"][key]) for key in ("start", "end"))
    low, high = plan["step"]["low"], plan["step"]["high"]
    assert plan["name"]["hits"] == sum(e.name == plan["name"]["name"] for e in events) > 0
    assert plan["time"]["hits"] == sum(start <= e.timestamp <= end for e in events) == 30
    assert plan["correlation"]["hits"] == sum(e.correlation_id == plan["correlation"]["id"] for e in events) > 0
    assert plan["step"]["hits"] == sum(isinstance(e.data.get("step"), int) and low <= e.data["step"] <= high
                                       for e in events) > 0


def test_a_complete_log_is_reused_and_a_damaged_one_written_again(bench, tmp_path):
    log, _ = bench.ensure_logs(tmp_path, 500)
    written = log.stat().st_mtime_ns
    assert bench.ensure_logs(tmp_path, 500)[0].stat().st_mtime_ns == written
    with open(log, "r+b") as fh:
        fh.truncate(log.stat().st_size - 10)  # an interrupted copy
    log, meta = bench.ensure_logs(tmp_path, 500)
    assert log.stat().st_size == meta["bytes"] and len(log.read_bytes().splitlines()) == 500


@pytest.mark.parametrize(("text", "count"), [("100k", 100_000), ("1M", 1_000_000), ("10M", 10_000_000),
                                             ("2500", 2500), ("1.5k", 1500)])
def test_sizes(bench, text, count):
    assert bench.parse_size(text) == count
    assert bench.parse_size(bench.size_label(count)) == count
