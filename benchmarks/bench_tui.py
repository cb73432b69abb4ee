"""Headless figures for the monitor: ingest at 10k events/s, filtering 100k events, a 1M-event replay.

    .venv/bin/python benchmarks/bench_tui.py                # all three
    .venv/bin/python benchmarks/bench_tui.py --only filter  # one of ingest | filter | replay
    .venv/bin/python benchmarks/bench_tui.py --replay-events 200000

The replay runs in a child process so its peak RSS is its own. The 1M-event file is generated once
(deterministic simulated run) and cached under $TMPDIR/kbert_tui_bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # simulate.py: a test helper, not shipped

from kbert_tui.events import Event, EventBus  # noqa: E402
from kbert_tui.events._codec import encode_event  # noqa: E402
from kbert_tui.state import EventLog, parse_filter  # noqa: E402
from simulate import simulate_run  # noqa: E402

SIZE = (120, 40)


def sim_events(count: int) -> list[Event]:
    """`count` events of a long simulated run (repeated runs if one isn't enough)."""
    out: list[Event] = []
    for n in itertools.count():
        for event in simulate_run(epochs=20, steps_per_epoch=5000, run_id=f"run-{n:04d}", system_every=4,
                                  model_every=10):
            out.append(event)
            if len(out) >= count:
                return out
    return out


# -- ingest ------------------------------------------------------------------------------------------

async def bench_ingest(rate: int, seconds: float) -> dict[str, float]:
    from kbert_tui.tui import MonitorApp, StaticSource

    events = sim_events(int(rate * seconds))
    app = MonitorApp(StaticSource([], label="bench"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        bus = EventBus()
        bus.subscribe_sync("*", app.inbox.append)
        await bus.flush()
        backlog: list[int] = []
        done = threading.Event()

        def produce() -> None:  # the worker thread: emit_sync at `rate` events/s, in 10 ms slices
            per_slice = max(1, rate // 100)
            start = time.perf_counter()
            for i in range(0, len(events), per_slice):
                for event in events[i:i + per_slice]:
                    bus.emit_sync(event.name, event.data, source=event.source, correlation_id=event.correlation_id)
                due = start + (i + per_slice) / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            done.set()

        key_latency: list[float] = []
        handled: list[float] = []
        toggle = app.monitor.action_toggle_follow  # f is the monitor screen's key

        def timed_toggle() -> None:  # records when the key's action actually runs
            handled.append(time.perf_counter())
            toggle()

        app.monitor.action_toggle_follow = timed_toggle  # type: ignore[method-assign]
        t0 = time.perf_counter()
        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        while not done.is_set():
            backlog.append(len(app.inbox))
            k0 = time.perf_counter()
            count = len(handled)
            app.simulate_key("f")  # a key during the flood: how long until its action runs
            while len(handled) == count and time.perf_counter() - k0 < 5:
                await asyncio.sleep(0.001)
            key_latency.append(handled[-1] - k0 if len(handled) > count else 5.0)
            await asyncio.sleep(0.2)
        produced_at = time.perf_counter()
        await bus.flush()
        while app.inbox or app.ingested < len(events):
            await asyncio.sleep(0.01)
            if time.perf_counter() - produced_at > 30:
                break
        caught_up = time.perf_counter() - produced_at
        elapsed = time.perf_counter() - t0
        await bus.shutdown()
    return {
        "events": len(events),
        "offered_rate": rate,
        "achieved_rate": round(app.ingested / elapsed),
        "ingested": app.ingested,
        "max_backlog": max(backlog or [0]),
        "median_backlog": int(statistics.median(backlog or [0])),
        "catch_up_after_end_s": round(caught_up, 3),
        "key_latency_median_ms": round(1000 * statistics.median(key_latency), 1) if key_latency else None,
        "key_latency_max_ms": round(1000 * max(key_latency), 1) if key_latency else None,
    }


# -- filter ------------------------------------------------------------------------------------------

QUERIES = [
    "training.*",
    "training.batch_completed loss<0.2",
    "metrics.grad_norm>1.2",
    "source:system !system.cpu_usage",
    "corr:run-0000 epoch=3",
    "nvidia",  # free text over name, source and data
    '"data loading"',
]


def bench_filter(count: int) -> dict[str, float]:
    log = EventLog(capacity=count)
    log.extend(sim_events(count))
    out: dict[str, float] = {"events": log.total}
    for query in QUERIES:
        t = time.perf_counter()
        log.set_filter(parse_filter(query))
        out[query] = round(time.perf_counter() - t, 4)
        out[query + " (rows)"] = len(log)
    t = time.perf_counter()
    log.set_filter(parse_filter('"data loading"'))  # free text again: the text cache is warm now
    out['"data loading" (warm)'] = round(time.perf_counter() - t, 4)
    return out


FILTER_BASELINE = "f19b4a0"  # kbert_tui/state before issue 15's free-text index


def bench_filter_before_after(count: int, rev: str, rounds: int = 5) -> dict[str, tuple[float, float]]:
    """A free-text re-filter over `count` events, cold (first free-text filter after loading) and warm,
    with kbert_tui/state as of `rev` beside today's: median of `rounds`, interleaved."""
    from _baseline import load_package_at

    before = load_package_at(rev, "kbert_tui/state")
    events = sim_events(count)
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for side, state in (("now", sys.modules["kbert_tui.state"]), ("before", before)):
            for query in ("nvidia", '"data loading"'):
                log = state.EventLog(capacity=count)
                log.extend(events)
                for temperature in ("cold", "warm"):
                    t = time.perf_counter()
                    log.set_filter(state.parse_filter(query))
                    times.setdefault(f"{side} {query} {temperature}", []).append(time.perf_counter() - t)
    out: dict[str, tuple[float, float]] = {}
    for key in times:
        if key.startswith("now "):
            rest = key[4:]
            out[rest] = (statistics.median(times[f"before {rest}"]), statistics.median(times[key]))
    return out


async def bench_filter_in_app(count: int) -> dict[str, float]:
    from kbert_tui.tui import MonitorApp, StaticSource

    app = MonitorApp(StaticSource(sim_events(count), label="bench"), capacity=count)
    out: dict[str, float] = {}
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            await pilot.pause(0.01)
            if app.inbox:
                break
        app.drain_all()
        await pilot.pause(0.2)
        for query in ("training.* loss<0.2", "nvidia"):
            t = time.perf_counter()
            app.apply_filter(query)
            applied = time.perf_counter() - t
            await pilot.pause()  # until the screen has the new rows
            out[f"app: {query}"] = round(time.perf_counter() - t, 4)
            out[f"app: {query} (apply only)"] = round(applied, 4)
    return out


# -- replay ------------------------------------------------------------------------------------------

def replay_file(count: int) -> Path:
    folder = Path(tempfile.gettempdir()) / "kbert_tui_bench"
    folder.mkdir(exist_ok=True)
    path = folder / f"events_{count}.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for event in itertools.islice(sim_events_iter(), count):
                fh.write(encode_event(event))
        tmp.rename(path)
        print(f"(wrote {count:,} events to {path} in {time.perf_counter() - t:.1f}s)", file=sys.stderr)
    return path


def sim_events_iter():
    for n in itertools.count():
        yield from simulate_run(epochs=20, steps_per_epoch=5000, run_id=f"run-{n:04d}")


async def replay_child(path: str, full: bool) -> dict[str, float]:
    from kbert_tui.tui import MonitorApp, ReplaySource

    t0 = time.perf_counter()
    app = MonitorApp(ReplaySource(path))
    first_screen = None
    async with app.run_test(size=SIZE) as pilot:
        while first_screen is None:
            await pilot.pause(0.005)
            if app.first_paint_at is not None:
                await pilot.pause()  # that frame reaches the screen
                first_screen = time.perf_counter() - t0
            if time.perf_counter() - t0 > 60:
                break
        shown_rows = app.query_one("LogView").row_count
        if full:
            while not (app.source.finished and not app.inbox):
                await asyncio.sleep(0.05)
            app.drain_all()
            await pilot.pause()
        total = time.perf_counter() - t0
        result = {
            "first_screen_s": round(first_screen or -1, 3),
            "rows_on_first_screen": shown_rows,
            "events_loaded": app.log_index.total,
            "in_memory": app.log_index.in_memory,
            "full_load_s": round(total, 2) if full else None,
            "final_status": app.state.training.status,
            "malformed": app.source.malformed,
        }
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def bench_replay(count: int) -> dict[str, float]:
    path = replay_file(count)
    proc = subprocess.run([sys.executable, __file__, "--child-replay", str(path)], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"replay child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["file_mb"] = round(path.stat().st_size / 1e6, 1)
    return result


# -- time to the end of the run, beside toolong, in a real terminal ------------------------------------

def _last_event(path: Path) -> tuple[str, str, int | None]:
    """The last line's id and HH:MM:SS.mmm time, and the last training step in the file's tail."""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - (1 << 20)))
        lines = fh.read().splitlines()[1:]
    last = json.loads(lines[-1])
    step = None
    for line in reversed(lines):
        record = json.loads(line)
        if record["name"] == "training.batch_completed":
            step = record["data"]["step"]
            break
    return last["id"], last["timestamp"][11:23], step


_sessions = itertools.count()


def _time_in_tmux(command: str, ready, width: int = 160, height: int = 48, limit: float = 60.0,
                  then: Callable[[str], object] | None = None) -> float | None:
    """Seconds from launching `command` in a fresh tmux window until `ready(screen_text)` holds;
    `then(session)` runs once it holds, before the session ends (to look at the program still running)."""
    name = f"kbench{os.getpid()}-{next(_sessions)}"
    t0 = time.perf_counter()
    started = subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
                              command], capture_output=True, text=True)
    if started.returncode:
        raise SystemExit(f"tmux could not start {command!r}: {started.stderr.strip()}")
    try:
        while time.perf_counter() - t0 < limit:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True,
                                    text=True).stdout
            if ready(screen):
                elapsed = time.perf_counter() - t0
                if then is not None:
                    then(name)
                return elapsed
            time.sleep(0.02)
        return None
    finally:
        launched = _pane_tree(name)
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        _reap(command, launched)


def _pane_tree(session: str) -> list[psutil.Process]:
    """The process tmux runs in `session`'s pane and its descendants (none once it is gone)."""
    shown = subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"], capture_output=True,
                           text=True).stdout.strip()
    try:
        root = psutil.Process(int(shown)) if shown.isdigit() else None
        return [root, *root.children(recursive=True)] if root is not None else []
    except psutil.NoSuchProcess:
        return []


lingered: Counter[str] = Counter()  # command -> processes it left running after its terminal closed


def _reap(command: str, processes: list[psutil.Process], grace: float = 6.0) -> None:
    """Kill what `command` left running `grace` seconds after its terminal closed (it would load the
    machine under the next measurement), and say so. 6 s: past kbert-tui's own 3 s exit guard after a
    hang-up, so a count here is a process that would have stayed."""
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    if alive:
        lingered[command] += len(alive)
        print(f"({len(alive)} process(es) of {command!r} still ran {grace:g} s after its terminal closed: killed)",
              file=sys.stderr, flush=True)


def bench_end_state(count: int, repeats: int, toolong: str | None) -> dict[str, object]:
    return end_state(replay_file(count), repeats, toolong)


def end_state(path: Path, repeats: int, toolong: str | None, *, limit: float = 60.0,
              pane_rss: bool = False, headless: bool = True) -> dict[str, object]:
    """Launch → the run's end on screen, for `kbert-tui replay` and for toolong on the same file, in
    turn, in the same tmux size. kbert-tui: the last event's time in the log and the last step in the
    Training pane; toolong: the last line's id (it shows raw lines). Both include process start.
    `pane_rss`: on the first launch of each, also the settled RSS of the program in the pane; `headless`:
    then the whole history loaded headless, its time and peak RSS (`_replay_rss`)."""
    event_id, stamp, step = _last_event(path)
    kbert = str(Path(sys.executable).with_name("kbert-tui"))
    keeper = f"kbench-keep{os.getpid()}"  # the tmux server exits with its last session: keep one
    subprocess.run(["tmux", "new-session", "-d", "-s", keeper, "sleep 3600"], check=True)
    try:
        return _end_state_runs(path, event_id, stamp, step, kbert, repeats, toolong, limit, pane_rss, headless)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", keeper], capture_output=True)


def _end_state_runs(path: Path, event_id: str, stamp: str, step: int | None, kbert: str, repeats: int,
                    toolong: str | None, limit: float, pane_rss: bool, headless: bool) -> dict[str, object]:
    ours: list[float] = []
    theirs: list[float] = []
    settled: dict[str, float | None] = {}

    def measure_rss(key: str) -> Callable[[str], object] | None:
        if not pane_rss or key in settled:
            return None
        return lambda session: settled.__setitem__(key, pane_rss_mb(session))

    for _ in range(repeats):
        got = _time_in_tmux(f"{kbert} replay {path}",
                            lambda screen: stamp in screen and (step is None or f"step {step}/" in screen),
                            limit=limit, then=measure_rss("kbert"))
        if got is not None:
            ours.append(got)
        if toolong:
            got = _time_in_tmux(f"{toolong} {path}", lambda screen: event_id in screen, limit=limit,
                                then=measure_rss("toolong"))
            if got is not None:
                theirs.append(got)
    rss = _replay_rss(path) if headless else {}
    return {"file_mb": round(path.stat().st_size / 1e6, 1), "kbert_s": ours, "toolong_s": theirs,
            "kbert_median_s": round(statistics.median(ours), 2) if ours else None,
            "toolong_median_s": round(statistics.median(theirs), 2) if theirs else None,
            "kbert_pane_rss_mb": settled.get("kbert"), "toolong_pane_rss_mb": settled.get("toolong"), **rss}


def pane_rss_mb(session: str, settle: float = 2.0, limit: float = 120.0) -> float | None:
    """The highest RSS (MB) of the process tree in tmux `session`'s pane, sampled every 0.1 s until it
    has not grown for `settle` seconds (a viewer still indexing the file keeps growing), at most `limit`."""
    peak = 0
    started = grew = time.perf_counter()
    while time.perf_counter() - grew < settle and time.perf_counter() - started < limit:
        tree = _pane_tree(session)
        try:
            total = sum(process.memory_info().rss for process in tree)
        except psutil.NoSuchProcess:
            break
        if not tree:
            break
        if total > peak:
            peak, grew = total, time.perf_counter()
        time.sleep(0.1)
    return round(peak / 2**20, 1) if peak else None


def _replay_rss(path: Path) -> dict[str, object]:
    """Headless: seconds until the end is shown and until the whole history is in, and peak RSS."""
    proc = subprocess.run([sys.executable, __file__, "--child-end-first", str(path)], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"end-first child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


async def end_first_child(path: str) -> dict[str, object]:
    from kbert_tui.tui import MonitorApp, ReplaySource

    t0 = time.perf_counter()
    app = MonitorApp(ReplaySource(path))
    async with app.run_test(size=(160, 48)) as pilot:
        end_at = None
        while True:
            await pilot.pause(0.01)
            if end_at is None and app.first_paint_at is not None:
                end_at = time.perf_counter() - t0
            if app.history_complete and app.source.finished and end_at is not None:
                break
            if time.perf_counter() - t0 > 600:
                break
        whole = time.perf_counter() - t0
    return {"headless_end_s": round(end_at or -1, 2), "headless_history_s": round(whole, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("ingest", "filter", "replay", "end"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--toolong", default=os.environ.get("TOOLONG", "tl"),
                        help="toolong's `tl` (it pins textual<0.59: install it in a venv of its own)")
    parser.add_argument("--child-end-first", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--filter-events", type=int, default=100_000)
    parser.add_argument("--replay-events", type=int, default=1_000_000)
    parser.add_argument("--child-replay", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_end_first:
        print(json.dumps(asyncio.run(end_first_child(args.child_end_first))))
        return
    if args.child_replay:
        print(json.dumps(asyncio.run(replay_child(args.child_replay, full=True))))
        return
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs")
    if args.only in (None, "ingest"):
        r = asyncio.run(bench_ingest(args.rate, args.seconds))
        print(f"ingest: offered {r['offered_rate']:,}/s for {args.seconds:g}s through an EventBus → "
              f"{r['achieved_rate']:,}/s ingested; backlog max {r['max_backlog']:,} median "
              f"{r['median_backlog']:,}; caught up {r['catch_up_after_end_s']}s after the last emit; key "
              f"latency median {r['key_latency_median_ms']} ms max {r['key_latency_max_ms']} ms")
    if args.only in (None, "filter"):
        r = bench_filter(args.filter_events)
        print(f"filter over {r.pop('events'):,} events (index only):")
        for key, value in r.items():
            if not key.endswith("(rows)"):
                rows = r.get(key + " (rows)")
                print(f"  {key:40s} {value * 1000:8.1f} ms" + (f"  {rows:,} rows" if rows is not None else ""))
        for key, value in asyncio.run(bench_filter_in_app(args.filter_events)).items():
            print(f"  {key:40s} {value * 1000:8.1f} ms" + ("" if "apply only" in key else "  (apply + repaint)"))
        print(f"free-text re-filter over {args.filter_events:,} events, before ({FILTER_BASELINE}) / now, median of 5:")
        for key, (was, now) in bench_filter_before_after(args.filter_events, FILTER_BASELINE).items():
            print(f"  {key:40s} {was * 1000:8.1f} ms -> {now * 1000:8.1f} ms")
    if args.only in (None, "end"):
        import shutil

        toolong = shutil.which(args.toolong)
        r = bench_end_state(args.replay_events, args.repeats, toolong)
        print(f"end of a {args.replay_events:,}-event run ({r['file_mb']} MB) on screen, tmux 160x48, from launch: "
              f"kbert-tui replay median {r['kbert_median_s']}s {r['kbert_s']}; toolong median "
              f"{r['toolong_median_s']}s {r['toolong_s']}" + ("" if toolong else " (toolong not found)"))
        print(f"  headless: end shown {r['headless_end_s']}s, whole history in {r['headless_history_s']}s, "
              f"peak RSS {r['peak_rss_mb']} MB")
    if args.only == "replay":
        r = bench_replay(args.replay_events)
        print(f"replay {args.replay_events:,} events ({r['file_mb']} MB): first screen {r['first_screen_s']}s "
              f"({r['rows_on_first_screen']:,} rows); all loaded in {r['full_load_s']}s, "
              f"{r['in_memory']:,} in memory, status {r['final_status']}; peak RSS {r['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
