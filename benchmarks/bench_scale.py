"""How the monitor and the log scale: 100k, 1M and 10M events written by another tool, beside toolong.

    .venv/bin/python benchmarks/bench_scale.py --toolong V/bin/tl           # 100k, 1M and 10M
    .venv/bin/python benchmarks/bench_scale.py --sizes 100k 1M --repeats 3
    .venv/bin/python benchmarks/bench_scale.py --quick                       # smoke run: 20k events, once

Each log is written once into --dir and reused while complete: ten simulated runs a day apart (each its
own correlation id; mostly training.batch_completed and system samples, few milestones), every line by
`json.dumps` with its default separators (`{"id": "…", "name": …}`, not this project's compact layout),
and each run again in a folder of its own for `compare`. 10M events are ~3 GB. For each size, in turn:

- end on screen, first open: `kbert-tui replay LOG` once with no index beside the log (see below);
- index: the sidecar index built on first open (`kbert_tui.events.index.open_index`, on a fresh link to
  the log, so nothing is cached), MB/s of log; then opened again where it is cached;
- end on screen: `kbert-tui replay LOG` and toolong on the same file in tmux (160x48), launch → the last
  event on screen, median of --repeats, the index already beside the log (the step before left it there);
  RSS: ours headless once the whole history is in (peak), and each program's in its pane after its end
  was shown, sampled until it stops growing (in the JSON; the table shows toolong's);
- queries: `EventBus.query_events` by name (~1% of events), time range (1%), correlation id (one run of
  ten), step range (~1%, where EventQuery has one); the monitor's free-text `o` search in a worker thread;
  each with the loop's longest stall meanwhile (5 ms ticker); hit counts checked against the generator's;
- the monitor's `/` filter over every event of a replay, held as replay holds them: by name (~1%), and
  free text, the older events scanned in a worker thread (its stall too);
- compare: `kbert-tui compare --format json` over the ten runs (together the size's events), first with no
  index beside them, then with; and in-process the reading its interactive view does (every batch, curves).

Then the writer's persisted throughput now beside `kbert_tui.events` as of --writer-baseline (before the
index). Prints a markdown table, writes everything to --out (JSON). toolong pins textual<0.59: install it in
a venv of its own (`python -m venv V && V/bin/pip install toolong`) and pass `--toolong V/bin/tl`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # simulate.py: a test helper, not shipped

from bench_tui import end_state, lingered  # noqa: E402
from kbert_tui.events import EventBus, EventQuery  # noqa: E402
from kbert_tui.events import catalog as ev  # noqa: E402
from kbert_tui.state import parse_filter  # noqa: E402
from kbert_tui.state.compare import compare_table, label_runs, load_run  # noqa: E402
from kbert_tui.state.log_index import DEFAULT_CAPACITY, search_older  # noqa: E402
from simulate import simulate_run  # noqa: E402

GENERATOR = 1  # the files' layout: a log written by another version is written anew
RUNS = 10
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
RUN_MARK = "@@@@"  # the run's number, in its correlation id, run name and event ids
LR_MARK = 0.000123456789  # the config's learning rate, per run
EVENTS_PER_STEP = 2.07  # a batch; 4 system samples every 4 steps; data + forward + backward every 50
NAME_QUERY = ev.MODEL_FORWARD_PASS  # ~1% of the events
TEXT_QUERY = "nvidia"  # free text: one line a run ("NVML: no NVIDIA driver found")
WRITER_BASELINE = "12bab47"  # kbert_tui/events before issue 24's sidecar index


def parse_size(text: str) -> int:
    """`100k`, `1M`, `10M` or a plain count."""
    scale = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(text[-1:], 1)
    try:
        count = int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 100k, 1M or 10M)") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (at least one event)")
    return count


def size_label(count: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if count >= scale and count % scale == 0:
            return f"{count // scale}{unit}"
    return str(count)


# -- the logs ----------------------------------------------------------------------------------------

@dataclass
class RunTemplate:
    """One simulated run as `json.dumps` lines, with RUN_MARK, day 0 and LR_MARK where each run differs."""

    text: bytes
    names: np.ndarray  # each line's event name
    stamps: list[str]  # each line's timestamp (day 0)
    steps: np.ndarray  # each line's data.step, -1 where it has none
    total_steps: int

    @property
    def lines(self) -> int:
        return len(self.stamps)


def run_template(events: int) -> RunTemplate:
    """A run of at least about `events` events, all within day 0 (its time of day shortened to fit)."""
    steps = max(1, math.ceil(events * 1.01 / EVENTS_PER_STEP))
    epochs = min(10, steps)
    per_epoch = math.ceil(steps / epochs)
    step_seconds = min(0.25, 18 * 3600 / (epochs * per_epoch))
    lines: list[str] = []
    names: list[str] = []
    stamps: list[str] = []
    step_of: list[int] = []
    dumps = json.dumps
    for event in simulate_run(epochs=epochs, steps_per_epoch=per_epoch, run_id=f"run-{RUN_MARK}",
                              run_name=f"sim-{RUN_MARK}", start=DAY0, step_seconds=step_seconds,
                              system_every=4, model_every=50):
        if event.name == ev.TRAINING_STARTED:
            event.data["config"]["training"]["learning_rate"] = LR_MARK
        stamp = event.timestamp.isoformat()
        lines.append(dumps({"id": f"r{RUN_MARK}-{event.id.removeprefix('sim-')}", "name": event.name,
                            "timestamp": stamp, "source": event.source, "correlation_id": event.correlation_id,
                            "data": event.data, "metadata": event.metadata}))
        names.append(event.name)
        stamps.append(stamp)
        step = event.data.get("step")
        step_of.append(step if isinstance(step, int) else -1)
    day = DAY0.date().isoformat()
    assert stamps[-1].startswith(day), f"a run of {len(stamps):,} events runs past its day: {stamps[-1]}"
    lines.append("")
    return RunTemplate("\n".join(lines).encode(), np.array(names), stamps, np.array(step_of, dtype=np.int64),
                       epochs * per_epoch)


def _day(run: int) -> str:
    return (DAY0 + timedelta(days=run)).date().isoformat()


def run_text(template: RunTemplate, run: int) -> bytes:
    """Run number `run`'s lines: its number in ids and correlation id, its day, its learning rate."""
    text = template.text.replace(RUN_MARK.encode(), b"%04d" % run)
    text = text.replace(f'"timestamp": "{_day(0)}T'.encode(), f'"timestamp": "{_day(run)}T'.encode())
    return text.replace(json.dumps(LR_MARK).encode(), json.dumps(round(1e-4 * (run + 1), 6)).encode(), 1)


def _first_lines(text: bytes, count: int) -> bytes:
    ends = np.flatnonzero(np.frombuffer(text, np.uint8) == 10)
    return text[:int(ends[count - 1]) + 1]


def _stamp(template: RunTemplate, index: int) -> str:
    """The timestamp of line `index` of the whole log (runs of `template.lines` lines, a day apart)."""
    run, line = divmod(index, template.lines)
    return _day(run) + template.stamps[line][len(_day(0)):]


def _query_plan(template: RunTemplate, lengths: list[int], events: int) -> dict[str, dict[str, Any]]:
    """Each query's parameters and its hits, counted from the template (the log is its runs in turn)."""

    def hits(mask: np.ndarray) -> int:
        return int(sum(np.count_nonzero(mask[:length]) for length in lengths))

    first = events // 2
    last = min(events, first + max(1, events // 100)) - 1
    middle = len(lengths) // 2
    low = template.total_steps // 2
    high = low + max(1, round(events / 100 / len(lengths))) - 1
    return {
        "name": {"name": NAME_QUERY, "hits": hits(template.names == NAME_QUERY)},
        "time": {"start": _stamp(template, first), "end": _stamp(template, last), "hits": last - first + 1},
        "correlation": {"id": f"run-{middle:04d}", "hits": lengths[middle]},
        "step": {"low": low, "high": high, "hits": hits((template.steps >= low) & (template.steps <= high))},
        "text": {"text": TEXT_QUERY},
    }


def write_logs(folder: Path, events: int) -> dict[str, Any]:
    """`folder`/events.jsonl of `events` events (the last run cut short if need be), each run also as
    `folder`/runs/run-NNNN/events.jsonl, and `folder`/meta.json (written last: the files are complete)."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)
    shutil.rmtree(folder / "runs", ignore_errors=True)
    template = run_template(math.ceil(events / RUNS))
    lengths: list[int] = []
    partial = folder / "events.jsonl.partial"
    with open(partial, "wb") as out:
        for run in range(math.ceil(events / template.lines)):
            text = run_text(template, run)
            count = min(template.lines, events - run * template.lines)
            if count < template.lines:
                text = _first_lines(text, count)
            out.write(text)
            run_dir = folder / "runs" / f"run-{run:04d}"
            run_dir.mkdir(parents=True)
            (run_dir / "events.jsonl").write_bytes(text)
            lengths.append(count)
    log = folder / "events.jsonl"
    partial.replace(log)
    meta = {"generator": GENERATOR, "events": events, "bytes": log.stat().st_size, "runs": lengths,
            "queries": _query_plan(template, lengths, events), "written_s": round(time.perf_counter() - started, 1)}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _complete(folder: Path, events: int) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        runs = [folder / "runs" / f"run-{run:04d}" / "events.jsonl" for run in range(len(meta["runs"]))]
        if meta["generator"] == GENERATOR and meta["events"] == events \
                and (folder / "events.jsonl").stat().st_size == meta["bytes"] == sum(p.stat().st_size for p in runs):
            return dict(meta)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def ensure_logs(root: Path, events: int) -> tuple[Path, dict[str, Any]]:
    """The log of `events` events under `root` (written unless a complete one is there) and its meta."""
    folder = root / f"events_{size_label(events)}"
    meta = _complete(folder, events)
    if meta is None:
        print(f"(writing {events:,} events to {folder} ...)", file=sys.stderr, flush=True)
        meta = write_logs(folder, events)
        print(f"(wrote {meta['bytes'] / 1e6:,.0f} MB in {meta['written_s']} s)", file=sys.stderr, flush=True)
    return folder / "events.jsonl", meta


def run_dirs(log: Path) -> list[Path]:
    return sorted(p for p in (log.parent / "runs").iterdir() if p.is_dir())


# -- index -------------------------------------------------------------------------------------------

def _remove_index(log: Path) -> bool:
    """Take away the index beside `log`, if this tree keeps one (False: it doesn't)."""
    try:
        from kbert_tui.events.index import index_dir
    except ImportError:
        return False
    shutil.rmtree(index_dir(log), ignore_errors=True)
    return True


def measure_index(log: Path, events: int) -> dict[str, Any]:
    """The sidecar index: built cold on a fresh link to the log (nothing cached beside it), then opened
    where the log is (built there first if it wasn't yet: untimed), then opened again (cached)."""
    try:
        from kbert_tui.events.index import open_index
    except ImportError:
        return {"available": False}

    def opened(path: Path) -> tuple[float, int]:
        started = time.perf_counter()
        index = open_index(path)
        elapsed = time.perf_counter() - started
        return elapsed, len(index)

    with tempfile.TemporaryDirectory(dir=log.parent.parent) as tmp:
        fresh = Path(tmp) / log.name
        try:
            os.link(log, fresh)
        except OSError:
            shutil.copyfile(log, fresh)
        build, records = opened(fresh)
    opened(log)
    cached, _ = opened(log)
    size = log.stat().st_size
    return {"available": True, "build_s": round(build, 3), "build_mb_s": round(size / 1e6 / build, 1),
            "cached_open_s": round(cached, 4), "records": records, "records_ok": records == events}


# -- queries -----------------------------------------------------------------------------------------

def _queries(plan: dict[str, dict[str, Any]]) -> Iterator[tuple[str, EventQuery | None, int]]:
    """(label, query, expected hits); query None where EventQuery can't say it."""
    yield "name", EventQuery().event_name_pattern(plan["name"]["name"]), plan["name"]["hits"]
    window = plan["time"]
    yield "time", EventQuery().time_range(datetime.fromisoformat(window["start"]),
                                          datetime.fromisoformat(window["end"])), window["hits"]
    yield "correlation", EventQuery().correlation_id(plan["correlation"]["id"]), plan["correlation"]["hits"]
    steps = plan["step"]
    step_range = getattr(EventQuery(), "step_range", None)
    yield "step", step_range(steps["low"], steps["high"]) if step_range else None, steps["hits"]


async def _query_log(log: Path, query: EventQuery) -> tuple[float, int, float]:
    """(seconds, hits, the loop's longest stall) of `query_events` on a bus whose log is `log` (it emits
    nothing, so the log is left as it was)."""
    from bench_bus import StallMeter  # bench_bus needs pyee and blinker (the bench extra): not at import

    bus = EventBus(persistence_path=log, max_file_size_mb=2**20, loop_block_threshold_s=3600)
    try:
        async with StallMeter() as meter:
            started = time.perf_counter()
            found = await bus.query_events(query)
            elapsed = time.perf_counter() - started
        return elapsed, len(found), meter.worst
    finally:
        await bus.shutdown()


async def _search_text(log: Path, text: str) -> tuple[float, int, float]:
    """The monitor's `o` search over the whole log in a worker thread: (seconds, matches, longest stall)."""
    from bench_bus import StallMeter

    async with StallMeter() as meter:
        started = time.perf_counter()
        result = await asyncio.to_thread(search_older, log, 10**12, parse_filter(text), 100_000)
        elapsed = time.perf_counter() - started
    assert result is not None
    return elapsed, result[1], meter.worst


def measure_queries(log: Path, plan: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, query, expected in _queries(plan):
        if query is None:
            out[label] = {"available": False, "expected": expected}
            continue
        gc.collect()
        elapsed, hits, stall = asyncio.run(_query_log(log, query))
        out[label] = {"s": round(elapsed, 3), "hits": hits, "expected": expected, "stall_ms": round(stall * 1000, 1)}
    gc.collect()
    elapsed, hits, stall = asyncio.run(_search_text(log, plan["text"]["text"]))
    size = log.stat().st_size
    out["text"] = {"s": round(elapsed, 3), "hits": hits, "mb_s": round(size / 1e6 / elapsed, 1),
                   "stall_ms": round(stall * 1000, 1)}
    return out


# -- the monitor's filter over a replay ------------------------------------------------------------

def measure_filters(log: Path, plan: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The `/` filter of `kbert-tui replay` over every event, held as replay holds them (`indexed_log`: the
    newest DEFAULT_CAPACITY decoded, the older ones on disk behind the index): by name, and by free text
    (older events scanned in a worker thread, as the monitor does, the loop's stall meanwhile)."""
    try:
        from kbert_tui.events.index import open_index
        from kbert_tui.state.replay_load import indexed_log
    except ImportError:
        return {"available": False}
    held = indexed_log(open_index(log), DEFAULT_CAPACITY)
    assert held is not None
    gc.collect()
    started = time.perf_counter()
    held.set_filter(parse_filter(plan["name"]["name"]))
    by_name = {"s": round(time.perf_counter() - started, 3), "hits": len(held), "expected": plan["name"]["hits"]}
    gc.collect()
    elapsed, rows, stall = asyncio.run(_filter_text(held, plan["text"]["text"]))
    return {"available": True, "name": by_name,
            "text": {"s": round(elapsed, 3), "hits": rows, "mb_s": round(log.stat().st_size / 1e6 / elapsed, 1),
                     "stall_ms": round(stall * 1000, 1)}}


async def _filter_text(held: Any, text: str) -> tuple[float, int, float]:
    """(seconds, rows shown, the loop's longest stall) of a free-text `/` filter over `held`."""
    from bench_bus import StallMeter

    matcher = parse_filter(text)

    def scan() -> None:
        for found, done in held.scan_older(matcher):
            if done:
                held.add_older(matcher, found, done)

    async def window() -> None:  # as the monitor does: the window judged a slice at a time on the loop
        held.set_filter(matcher, budget_s=0.01)
        while held.filter_pending:
            await asyncio.sleep(0)
            held.filter_more(0.01)

    async with StallMeter() as meter:
        started = time.perf_counter()
        await asyncio.gather(window(), asyncio.to_thread(scan))
        elapsed = time.perf_counter() - started
    return elapsed, len(held), meter.worst


# -- compare -----------------------------------------------------------------------------------------

def measure_compare(log: Path, repeats: int) -> dict[str, Any]:
    """`kbert-tui compare --format json` over the log's runs, launch to exit: first with no index beside
    them (each built on the way), then `repeats` times with them; and in this process the reading the
    table does (`load_run(curves=False)`) beside the reading the interactive view does (every batch)."""
    logs = [run / "events.jsonl" for run in run_dirs(log)]
    command = [str(Path(sys.executable).with_name("kbert-tui")), "compare", *map(str, logs), "--format", "json"]

    def launch() -> float:
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise SystemExit(f"kbert-tui compare failed ({done.returncode}): {done.stderr[-2000:]}")
        return time.perf_counter() - started

    def read_all(curves: bool) -> float:
        gc.collect()
        started = time.perf_counter()
        records = [load_run(path, curves=curves) for path in logs]
        label_runs(records)
        compare_table(records)
        return time.perf_counter() - started

    first = round(launch(), 3) if all([_remove_index(path) for path in logs]) else None
    launched = [launch() for _ in range(repeats)]
    table_reads = [read_all(curves=False) for _ in range(repeats)]
    curve_reads = [read_all(curves=True) for _ in range(repeats)]
    return {"runs": len(logs), "cli_first_s": first, "cli_s": round(statistics.median(launched), 3),
            "cli_each_s": [round(t, 3) for t in launched], "table_read_s": round(statistics.median(table_reads), 3),
            "curves_read_s": round(statistics.median(curve_reads), 3)}


# -- the writer --------------------------------------------------------------------------------------

def measure_writer(events: int, rounds: int, baseline: str) -> dict[str, Any]:
    """Persisted throughput (bench_bus's headline harness, persistence on): now and as of `baseline`,
    interleaved round by round, medians."""
    from bench_bus import h_kbert, load_events_at

    import kbert_tui.events as now

    before = load_events_at(baseline)
    rates: dict[str, list[float]] = {"now": [], "before": []}
    with tempfile.TemporaryDirectory(prefix="kbert-scale-writer-") as tmp:
        for round_ in range(rounds):
            for key, module in (("now", now), ("before", before)):
                gc.collect()
                wall, _cpu = asyncio.run(h_kbert(module, events, Path(tmp) / f"{key}{round_}" / "events.jsonl"))
                rates[key].append(events / wall)
    median = {key: statistics.median(values) for key, values in rates.items()}
    try:
        import kbert_tui.events.index  # noqa: F401
        indexed = True
    except ImportError:
        indexed = False
    return {"events": events, "rounds": rounds, "baseline": baseline, "index_in_tree": indexed,
            "now_ev_s": round(median["now"]), "before_ev_s": round(median["before"]),
            "ratio": round(median["now"] / median["before"], 3)}


# -- one size, the table -----------------------------------------------------------------------------

def measure_size(root: Path, events: int, repeats: int, toolong: str | None,
                 step: Callable[[str], None]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    log, meta = ensure_logs(root, events)
    row: dict[str, Any] = {"events": events, "file_mb": round(meta["bytes"] / 1e6, 1), "runs": len(meta["runs"])}
    tmux = shutil.which("tmux") is not None
    limit = max(60.0, 30 * meta["bytes"] / 1e9)
    already = lingered.copy()
    row["first_open_s"] = None
    if tmux and _remove_index(log):
        step("end on screen, the log's first open (no index beside it)")
        row["first_open_s"] = end_state(log, 1, None, limit=limit, headless=False)["kbert_median_s"]
    step("index")
    row["index"] = measure_index(log, events)
    step("end on screen")
    if tmux:
        row["end"] = end_state(log, repeats, toolong, limit=limit, pane_rss=True)
        row["end"]["lingered"] = dict(lingered - already)  # processes that outlived their terminal: killed
    else:
        row["end"] = {"available": False}
    step("queries")
    row["queries"] = measure_queries(log, meta["queries"])
    step("the monitor's filter")
    row["filters"] = measure_filters(log, meta["queries"])
    step("compare")
    row["compare"] = measure_compare(log, repeats)
    row["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return row


def _s(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _query_cell(result: dict[str, Any]) -> str:
    if not result.get("available", True):
        return "not in the API"
    cell = f"{result['s']:.2f} s ({result['hits']:,})"
    return cell if result["hits"] == result["expected"] else cell + f" ≠ {result['expected']:,} expected"


def _compare_cell(compare: dict[str, Any]) -> str:
    first = "" if compare["cli_first_s"] is None else f", first {compare['cli_first_s']:.1f} s (indexing)"
    return f"{compare['cli_s']:.2f} s{first}; curves {compare['curves_read_s']:.1f} s"


def table(rows: list[dict[str, Any]], toolong: str | None) -> str:
    out = ["| events | log | end on screen: ours / toolong | RSS: ours, whole history / toolong | index build "
           "| by name | by time | by correlation id | by step | `/` name filter | `/` free text | `o` free text "
           "| loop stall | compare 10 runs | load |",
           "|---:|---:|---|---|---|---|---|---|---|---|---|---|---:|---|---|"]
    for row in rows:
        end, index, q, compare = row["end"], row["index"], row["queries"], row["compare"]
        if end.get("available", True):
            theirs = _s(end["toolong_median_s"]) if toolong else "not found"
            on_screen = f"{_s(end['kbert_median_s'])} / {theirs} s"
            if row["first_open_s"] is not None:
                on_screen += f" (first open {row['first_open_s']:.2f} s)"
            their_rss = f"{end['toolong_pane_rss_mb']:,.0f}" if end.get("toolong_pane_rss_mb") else "—"
            rss = f"{end['peak_rss_mb']:,.0f} / {their_rss} MB"
        else:
            on_screen = rss = "no tmux"
        built = f"{index['build_s']:.2f} s ({index['build_mb_s']:,.0f} MB/s)" if index["available"] \
            else "index: not available"
        if index.get("records_ok") is False:
            built += f" ≠ {index['records']:,} records"
        filters = row["filters"]
        stall = max(r.get("stall_ms", 0.0) for r in [*q.values(), *filters.values()] if isinstance(r, dict))
        text = q["text"]
        if filters["available"]:
            by_name, scan = filters["name"], filters["text"]
            name_filter = f"{by_name['s']:.2f} s ({by_name['hits']:,})"
            if by_name["hits"] != by_name["expected"]:
                name_filter += f" ≠ {by_name['expected']:,} expected"
            text_filter = f"{scan['s']:.2f} s ({scan['mb_s']:,.0f} MB/s)"
        else:
            name_filter = text_filter = "no index"
        out.append(f"| {row['events']:,} | {row['file_mb']:,.0f} MB | {on_screen} | {rss} | {built} "
                   f"| {_query_cell(q['name'])} | {_query_cell(q['time'])} | {_query_cell(q['correlation'])} "
                   f"| {_query_cell(q['step'])} | {name_filter} | {text_filter} "
                   f"| {text['s']:.2f} s ({text['mb_s']:,.0f} MB/s) | {stall:.0f} ms "
                   f"| {_compare_cell(compare)} "
                   f"| {row['load'][0]:.1f}→{row['load'][1]:.1f} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="SIZE",
                        help="events per log: 100k 1M 10M (the default)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "kbert_tui_scale",
                        help="where the logs are written once and reused (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="launches per program, compare runs (median)")
    parser.add_argument("--toolong", default=os.environ.get("TOOLONG", "tl"),
                        help="toolong's `tl` (default: %(default)s)")
    parser.add_argument("--writer-events", type=int, default=50_000)
    parser.add_argument("--writer-rounds", type=int, default=5, help="0: leave the writer out")
    parser.add_argument("--writer-baseline", default=WRITER_BASELINE,
                        help="git revision of kbert_tui/events without the index (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: DIR/bench_scale.json)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20k events, one launch, a small writer run")
    args = parser.parse_args()
    sizes = args.sizes or ([20_000] if args.quick else [100_000, 1_000_000, 10_000_000])
    repeats = 1 if args.quick else max(1, args.repeats)
    writer_events, writer_rounds = (5_000, min(1, args.writer_rounds)) if args.quick \
        else (args.writer_events, args.writer_rounds)
    out = args.out or args.dir / "bench_scale.json"
    toolong = shutil.which(args.toolong)
    if toolong is None:
        print(f"toolong: {args.toolong!r} not found "
              "(python -m venv V && V/bin/pip install toolong; --toolong V/bin/tl)")
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "toolong": toolong,
                               "started": datetime.now(UTC).isoformat(timespec="seconds"), "sizes": []}
    for events in sizes:
        def step(what: str, events: int = events) -> None:
            print(f"[{size_label(events)}] {what} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)

        results["sizes"].append(measure_size(args.dir, events, repeats, toolong, step))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    if writer_rounds > 0:
        print(f"(writer: {writer_events:,} events × {writer_rounds} rounds, now and as of {args.writer_baseline})",
              file=sys.stderr, flush=True)
        results["writer"] = measure_writer(writer_events, writer_rounds, args.writer_baseline)
        out.write_text(json.dumps(results, indent=1))
    print(f"python {results['python']} on {results['cpus']} CPUs; repeats {repeats}; tmux 160x48; toolong "
          f"{toolong or 'not found'}; load = 1-minute load average before→after each size\n")
    print(table(results["sizes"], toolong))
    for row in results["sizes"]:
        for command, count in row["end"].get("lingered", {}).items():
            print(f"\n{size_label(row['events'])}: {count} of the launches of `{command}` still ran 6 s after "
                  f"tmux closed their terminal (killed)")
    if "writer" in results:
        writer = results["writer"]
        print(f"\nwriter, persistence on ({writer['events']:,} events, median of {writer['rounds']}): now "
              f"{writer['now_ev_s']:,} ev/s, before the index ({writer['baseline']}) {writer['before_ev_s']:,} ev/s: "
              f"{writer['ratio']:.2f}×" + ("" if writer["index_in_tree"] else " (no index in this tree yet)"))
    print(f"\n(JSON: {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
