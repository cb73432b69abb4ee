"""Side-by-side event-bus throughput: kbert_tui.events vs pyee, blinker and a plain loop.

    python benchmarks/bench_bus.py                     # headline harness, then the developer rows
    python benchmarks/bench_bus.py --headline-only     # just the harness (before/after side by side)
    python benchmarks/bench_bus.py --query-only        # just query_events over 1M events (compact and spaced)
    python benchmarks/bench_bus.py --quick             # smaller counts, for a smoke test
    python benchmarks/bench_bus.py --baseline REV      # compare with kbert_tui/events as of git REV

The headline harness treats every contender alike: the same counting async handler, 50,000 events,
the emitter yields to the loop every 1,000 emits, median of 7 rounds, the clock running from the first
emit until the handler has seen the last event (and, for kbert_tui, `flush()` says it is on disk). The
"before" column is `kbert_tui.events` as of `--baseline` (loaded from git into a private package), run
in the same process, round for round beside the current code.

The developer rows below it emit everything before yielding; each is the median of several repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blinker import Signal  # noqa: E402
from pyee import EventEmitter  # noqa: E402
from pyee.asyncio import AsyncIOEventEmitter  # noqa: E402

from _baseline import load_package_at  # noqa: E402
from kbert_tui.events import EventBus  # noqa: E402
from kbert_tui.events.store import JsonlStore  # noqa: E402
from kbert_tui.events._event import Event  # noqa: E402

PAYLOAD = {"batch": 12, "loss": 0.4321, "metrics": {"learning_rate": 1e-4, "grad_norm": 1.5}}
NAME = "training.batch_completed"


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def sync(self, *args: object, **kwargs: object) -> None:
        self.n += 1

    async def async_(self, *args: object, **kwargs: object) -> None:
        self.n += 1


Runner = Callable[[int, int], Awaitable[None]]


# --------------------------------------------------------------------------------- headline harness
BASELINE_REV = "3df522e"  # kbert_tui/events as "Accepted means durable" left it (before issue 15)
H_EVENTS, H_YIELD_EVERY, H_ROUNDS = 50_000, 1_000, 7


def load_events_at(rev: str) -> ModuleType:
    """`kbert_tui/events` as of git `rev` (it imports nothing else of the project)."""
    return load_package_at(rev, "kbert_tui/events")


class _Clock:
    """Wall time, and the process's CPU time beside it: on a shared machine the CPU figure is the steadier."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


async def h_kbert(events: ModuleType, n: int, persist: Path | None = None) -> float:
    bus = events.EventBus(enable_persistence=persist is not None, persistence_path=persist)
    counter = Counter()
    await bus.subscribe(NAME, counter.async_)
    emit = bus.emit
    clock = _Clock()
    for i in range(1, n + 1):
        await emit(NAME, PAYLOAD)
        if not i % H_YIELD_EVERY:
            await asyncio.sleep(0)
    await bus.flush()
    elapsed = clock.stop()
    assert counter.n == n, counter.n
    await bus.shutdown()
    return elapsed


async def h_pyee(n: int) -> float:
    ee = AsyncIOEventEmitter()
    counter = Counter()
    ee.on(NAME, counter.async_)
    emit = ee.emit
    clock = _Clock()
    for i in range(1, n + 1):
        emit(NAME, PAYLOAD)
        if not i % H_YIELD_EVERY:
            await asyncio.sleep(0)
    while counter.n < n:
        await asyncio.sleep(0)
    return clock.stop()


async def h_blinker(n: int) -> float:
    sig = Signal()
    counter = Counter()
    sig.connect(counter.async_, weak=False)
    send = sig.send_async
    clock = _Clock()
    for i in range(1, n + 1):
        await send(NAME, data=PAYLOAD)
        if not i % H_YIELD_EVERY:
            await asyncio.sleep(0)
    elapsed = clock.stop()
    assert counter.n == n
    return elapsed


async def h_plain(n: int) -> float:
    counter = Counter()
    handler = counter.async_
    clock = _Clock()
    for i in range(1, n + 1):
        await handler(NAME, PAYLOAD)
        if not i % H_YIELD_EVERY:
            await asyncio.sleep(0)
    elapsed = clock.stop()
    assert counter.n == n
    return elapsed


async def h_threads(events: ModuleType, threads: int, per_thread: int, persist: Path) -> dict[str, float]:
    """8 threads flood emit_sync (the durability test's scenario): rate, the loop's worst stall, drops."""
    bus = events.EventBus(enable_persistence=True, persistence_path=persist)
    counter = Counter()
    await bus.subscribe("flood.*", counter.async_)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last - 0.005)
            last = now

    def produce(t: int) -> None:
        emit = bus.emit_sync
        for i in range(per_thread):
            emit("flood.tick", {"t": t, "i": i})

    beat = asyncio.create_task(heartbeat())
    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        await asyncio.sleep(0.01)
    await bus.flush()
    elapsed = time.perf_counter() - started
    stop.set()
    await beat
    metrics = bus.metrics()
    await bus.shutdown()
    total = threads * per_thread
    assert counter.n + metrics.dropped_events == total, (counter.n, metrics.dropped_events)
    return {"rate": total / elapsed, "max_stall_ms": max(gaps) * 1000, "drops": metrics.dropped_events,
            "persisted": metrics.persisted_events}


def headline(before: ModuleType, after: ModuleType, tmp: Path, n: int, rounds: int,
             thread_per: int, thread_rounds: int) -> dict[str, Any]:
    """Every contender once per round, interleaved, so a noisy neighbour hits them all alike."""
    contenders: dict[str, Callable[[], Awaitable[float]]] = {
        "after_off": lambda: h_kbert(after, n),
        "before_off": lambda: h_kbert(before, n),
        "after_on": lambda: h_kbert(after, n, tmp / f"h{time.time_ns()}.jsonl"),
        "before_on": lambda: h_kbert(before, n, tmp / f"h{time.time_ns()}.jsonl"),
        "pyee": lambda: h_pyee(n),
        "blinker": lambda: h_blinker(n),
        "plain": lambda: h_plain(n),
    }
    times: dict[str, list[float]] = {key: [] for key in contenders}
    cpu: dict[str, list[float]] = {key: [] for key in contenders}
    for _ in range(rounds):
        for key, make in contenders.items():
            gc.collect()
            wall, used = asyncio.run(make())
            times[key].append(wall)
            cpu[key].append(used)
    rate = {key: n / statistics.median(values) for key, values in times.items()}
    cpu_rate = {key: n / statistics.median(values) for key, values in cpu.items()}
    spread = {key: (max(v) - min(v)) / 2 / statistics.median(v) * 100 for key, v in times.items()}
    flood: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(thread_rounds):
        for key, module in (("after", after), ("before", before)):
            gc.collect()
            flood[key].append(asyncio.run(h_threads(module, 8, thread_per, tmp / f"t{time.time_ns()}.jsonl")))
    return {"rate": rate, "cpu_rate": cpu_rate, "spread": spread, "flood": flood}


def print_headline(result: dict[str, Any], n: int, rounds: int, thread_per: int, baseline: str) -> None:
    rate, spread, cpu_rate = result["rate"], result["spread"], result["cpu_rate"]
    print(f"headline harness: {n:,} events, 1 async counting handler, yield every {H_YIELD_EVERY:,} emits, "
          f"median of {rounds} (interleaved rounds)")
    for key, label in (("before_off", f"kbert_tui emit, before ({baseline})"), ("after_off", "kbert_tui emit, now"),
                       ("before_on", "kbert_tui emit + persistence, before"), ("after_on",
                                                                               "kbert_tui emit + persistence, now"),
                       ("pyee", "pyee AsyncIOEventEmitter.emit"), ("blinker", "blinker Signal.send_async"),
                       ("plain", "plain loop awaiting the handler")):
        print(f"  {label:<44} {rate[key]:>12,.0f} ev/s   (±{spread[key]:.0f}%)   "
              f"per CPU second: {cpu_rate[key]:>12,.0f}")
    print()
    print("| path | before | now | anchor | goal |")
    print("|---|---:|---:|---|---|")
    print(f"| `emit` → 1 async handler | {rate['before_off'] / 1e3:,.0f}k ev/s | {rate['after_off'] / 1e3:,.0f}k ev/s "
          f"| pyee `AsyncIOEventEmitter` {rate['pyee'] / 1e3:,.0f}k/s; blinker `send_async` "
          f"{rate['blinker'] / 1e3:,.0f}k/s; a plain loop awaiting the handler {rate['plain'] / 1e6:.2f}M/s "
          f"| ≥ 5× pyee and ahead of blinker |")
    print(f"| … vs pyee | {rate['before_off'] / rate['pyee']:.2f}× | {rate['after_off'] / rate['pyee']:.2f}× "
          f"| — | ≥ 5× |")
    print(f"| … vs blinker | {rate['before_off'] / rate['blinker']:.2f}× | {rate['after_off'] / rate['blinker']:.2f}× "
          f"| — | > 1× |")
    print(f"| persistence on vs off (time) | {rate['before_off'] / rate['before_on']:.2f}× "
          f"| {rate['after_off'] / rate['after_on']:.2f}× | — | ≤ 1.5× |")
    for key in ("before", "after"):
        runs = result["flood"][key]
        result[f"flood_{key}"] = {
            "rate": statistics.median(r["rate"] for r in runs),
            "max_stall_ms": max(r["max_stall_ms"] for r in runs),
            "drops": sum(r["drops"] for r in runs),
        }
    fb, fa = result["flood_before"], result["flood_after"]
    print(f"| 8 threads × {thread_per:,} `emit_sync`, persistence on | {fb['rate'] / 1e3:,.0f}k ev/s "
          f"| {fa['rate'] / 1e3:,.0f}k ev/s | — | — |")
    print(f"| … the loop's longest stall (heartbeat every 5 ms) | {fb['max_stall_ms']:.0f} ms "
          f"| {fa['max_stall_ms']:.0f} ms | — | ≤ 150 ms (durability test) |")
    print(f"| … events dropped for a subscriber that keeps up | {fb['drops']} | {fa['drops']} | — | 0 |")
    print()


# --------------------------------------------------------------------------------- contenders
async def ours(n: int, handlers: int, *, globs: int = 0, persist: Path | None = None,
               sync_handler: bool = False) -> None:
    bus = EventBus(enable_persistence=persist is not None, persistence_path=persist, buffer_size=10000)
    counters = [Counter() for _ in range(handlers)]
    for c in counters:
        await bus.subscribe("training.*", c.sync if sync_handler else c.async_)
    for i in range(globs):
        await bus.subscribe(f"other{i}.*", Counter().async_)
    emit = bus.emit
    for _ in range(n):
        await emit(NAME, PAYLOAD)
    await bus.flush()
    assert all(c.n == n for c in counters), [c.n for c in counters]
    await bus.shutdown()


async def pyee_asyncio(n: int, handlers: int) -> None:
    ee = AsyncIOEventEmitter()
    counters = [Counter() for _ in range(handlers)]
    for c in counters:
        ee.on(NAME, c.async_)
    for _ in range(n):
        ee.emit(NAME, PAYLOAD)
    while any(c.n < n for c in counters):
        await asyncio.sleep(0)


async def pyee_sync(n: int, handlers: int) -> None:
    ee = EventEmitter()
    counters = [Counter() for _ in range(handlers)]
    for c in counters:
        ee.on(NAME, c.sync)
    for _ in range(n):
        ee.emit(NAME, PAYLOAD)
    assert all(c.n == n for c in counters)


async def blinker_send(n: int, handlers: int) -> None:
    sig = Signal()
    counters = [Counter() for _ in range(handlers)]
    for c in counters:
        sig.connect(c.sync, weak=False)
    for _ in range(n):
        sig.send(NAME, data=PAYLOAD)
    assert all(c.n == n for c in counters)


async def blinker_send_async(n: int, handlers: int) -> None:
    sig = Signal()
    counters = [Counter() for _ in range(handlers)]
    for c in counters:
        sig.connect(c.async_, weak=False)
    for _ in range(n):
        await sig.send_async(NAME, data=PAYLOAD)
    assert all(c.n == n for c in counters)


async def plain_loop(n: int, handlers: int) -> None:
    counters = [Counter() for _ in range(handlers)]
    fns = [c.async_ for c in counters]
    for _ in range(n):
        for fn in fns:
            await fn(NAME, PAYLOAD)


# --------------------------------------------------------------------------------- thread emitters
async def ours_thread(n: int) -> None:
    bus = EventBus()
    counter = Counter()
    await bus.subscribe("training.*", counter.async_)
    worker = threading.Thread(target=lambda: [bus.emit_sync(NAME, PAYLOAD) for _ in range(n)])
    worker.start()
    while worker.is_alive():
        await asyncio.sleep(0.001)
    await bus.flush()
    assert counter.n == n
    await bus.shutdown()


async def call_soon_threadsafe_each(n: int) -> None:
    """The textbook way: one loop.call_soon_threadsafe per event."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    worker = threading.Thread(target=lambda: [loop.call_soon_threadsafe(counter.sync, PAYLOAD) for _ in range(n)])
    worker.start()
    while counter.n < n:
        await asyncio.sleep(0.001)
    worker.join()


# --------------------------------------------------------------------------------- persistence
async def naive_jsonl(n: int, path: Path) -> None:
    """Encode and write each event as it is emitted, on the loop (what a hand-rolled logger does)."""
    counter = Counter()
    with open(path, "a", encoding="utf-8") as fh:
        for _ in range(n):
            event = Event(NAME, PAYLOAD)
            fh.write(json.dumps({"id": event.id, "name": event.name, "timestamp": event.timestamp.isoformat(),
                                 "source": event.source, "correlation_id": None, "data": event.data,
                                 "metadata": {}}) + "\n")
            await counter.async_(event)


# --------------------------------------------------------------------------------- harness
def measure(label: str, make: Callable[[], Awaitable[None]], n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        asyncio.run(make())
        rates.append(n / (time.perf_counter() - started))
    rate = statistics.median(rates)
    spread = (max(rates) - min(rates)) / rate * 100 if rate else 0.0
    print(f"  {label:<44} {rate:>12,.0f} ev/s   (±{spread / 2:.0f}%, {repeats} runs)", flush=True)
    return rate


def write_big_log(path: Path, n: int) -> None:
    store = JsonlStore(path, max_file_size_mb=64)
    names = ["training.batch_completed", "system.cpu_usage", "system.memory_usage", "model.forward_pass"]
    for i in range(n):
        epoch = i * 10 // n + 1
        store.append(Event(names[i % 4], {"epoch": epoch, "batch": i, "loss": 1.0 / (i + 1)},
                           source="bench", correlation_id="run-1"))
        if i % 50_000 == 0:
            store.wait_written()
    store.close()


def write_spaced_copy(log: Path, target: Path) -> None:
    """The same events as `log`, each line rewritten by `json.dumps` with its default separators
    (`{"id": "…", "name": …`): how the seed's reference and most other tools write JSONL."""
    from kbert_tui.events.store import segment_paths

    target.parent.mkdir(parents=True, exist_ok=True)
    for file in segment_paths(log):
        with open(file, "rb") as source, open(target.parent / file.name, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(json.loads(line)) + "\n" for line in source)


def naive_query(path: Path) -> int:
    from kbert_tui.events.store import segment_paths

    hits = 0
    for file in segment_paths(path):
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                if rec["name"].startswith("training.") and rec["data"].get("epoch") == 5:
                    hits += 1
    return hits


QUERIES: dict[str, Callable[[Any], Any]] = {
    "glob": lambda events: events.EventQuery().event_name_pattern("training.*"),
    "all": lambda events: events.EventQuery(),
    "epoch5": lambda events: events.EventQuery().event_name_pattern("training.*").data_contains({"epoch": 5}),
}
SPACED_QUERIES = ("glob", "all")


class StallMeter:
    """`async with StallMeter() as m:` a 5 ms ticker on the loop meanwhile; `m.worst` is its longest lateness
    (seconds), counting 50 ms after the block too (the collector, freeing)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._running = True
        self._beat: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while self._running:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - 0.005)
            last = now

    async def __aenter__(self) -> StallMeter:
        self._beat = asyncio.create_task(self._tick())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.05)
        self._running = False
        assert self._beat is not None
        await self._beat


async def _query_with_ticker(events: ModuleType, log: Path, key: str) -> tuple[float, float, int, float]:
    """(seconds, CPU seconds, hits, the loop's longest stall): a 5 ms ticker runs on the loop meanwhile."""
    bus = events.EventBus(enable_persistence=True, persistence_path=log, max_file_size_mb=64)
    async with StallMeter() as meter:
        clock = _Clock()
        found = await bus.query_events(QUERIES[key](events))
        elapsed, used = clock.stop()
    await bus.shutdown()
    return elapsed, used, len(found), meter.worst


def query_headline(before: ModuleType, after: ModuleType, log: Path, spaced: Path,
                   rounds: int) -> dict[str, dict[str, float]]:
    """`query_events` over the log, before and after, interleaved, on our compact layout and on the same
    events written with spaces; the loop's longest stall meanwhile; `json.loads` of every line as the anchor."""
    cases = [(key, "compact", log) for key in QUERIES] + [(key, "spaced", spaced) for key in SPACED_QUERIES]
    times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    cpu: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    stalls: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    hits: dict[str, int] = {}
    naive: list[float] = []
    for _ in range(rounds):
        for key, layout, path in cases:
            case = key if layout == "compact" else f"{key}_spaced"
            for side, module in (("after", after), ("before", before)):
                gc.collect()
                elapsed, used, found, stall = asyncio.run(_query_with_ticker(module, path, key))
                times[side].setdefault(case, []).append(elapsed)
                cpu[side].setdefault(case, []).append(used)
                stalls[side][case] = max(stalls[side].get(case, 0.0), stall)
                # the bus's own events (a bus.loop_blocked of a stalled query) may join the log: "all" grows
                assert hits.setdefault(key, found) == found or key == "all", (key, layout, side, found, hits[key])
        gc.collect()
        started = time.perf_counter()
        naive_hits = naive_query(log)
        naive.append(time.perf_counter() - started)
        assert naive_hits == hits["epoch5"], (naive_hits, hits["epoch5"])
    out = {side: {key: statistics.median(v) for key, v in per.items()} for side, per in times.items()}
    b, a = out["before"], out["after"]
    cb, ca = ({key: statistics.median(v) for key, v in cpu[side].items()} for side in ("before", "after"))
    sb, sa = stalls["before"], stalls["after"]
    print(f"\nquery_events over the log (median of {rounds}; json.loads of every line + the check: "
          f"{statistics.median(naive):.2f} s; stall: the loop's longest, 5 ms ticker, worst of {rounds})")
    print("| path | before | now | CPU before | now | loop stall before | now | goal |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")

    def row(label: str, case: str, goal: str) -> None:
        print(f"| {label} | {b[case]:.2f} s | {a[case]:.2f} s | {cb[case]:.2f} s | {ca[case]:.2f} s "
              f"| {sb[case] * 1000:.0f} ms | {sa[case] * 1000:.0f} ms | {goal} |")

    row(f"`query_events` `training.*`, {hits['glob']:,} hits", "glob", "≤ 2 s, stall ≤ 50 ms")
    row(f"`query_events`, every event ({hits['all']:,})", "all", "≤ 3 s, stall ≤ 50 ms")
    row(f"`query_events` `training.*` + `data_contains(epoch=5)`, {hits['epoch5']:,} hits", "epoch5", "—")
    row(f"… spaced JSON (`json.dumps` defaults), `training.*`, {hits['glob']:,} hits", "glob_spaced",
        "≤ 2 s, stall ≤ 50 ms")
    row(f"… spaced JSON, every event ({hits['all']:,})", "all_spaced", "≤ 3 s, stall ≤ 50 ms")
    print()
    out["naive"] = {"s": statistics.median(naive)}
    out["stall_after"] = sa
    return out


def _search_as_before(path: Path, count: int, matcher: Any, capacity: int) -> tuple[Any, int, int]:
    """The monitor's `o` search as app.py ran it before search_older (one event at a time, collector on)."""
    from kbert_tui.events.store import read_events
    from kbert_tui.state import EventLog

    found = EventLog(capacity)
    matched = 0
    for index, event in enumerate(read_events(path)):
        if index >= count:
            break
        if matcher is None or matcher.matches_alone(event):
            found.append(event)
            matched += 1
    return found, matched, 0


def search_rows(log: Path, rounds: int) -> None:
    """The `o` search over the whole log in a worker thread, as the monitor runs it: time and the loop's
    longest stall meanwhile (5 ms ticker), before (one event at a time) and now (search_older)."""
    from kbert_tui.state import parse_filter
    from kbert_tui.state.log_index import search_older

    async def one(search: Callable[..., Any], text: str) -> tuple[float, float]:
        async with StallMeter() as meter:
            started = time.perf_counter()
            result = await asyncio.to_thread(search, log, 10**9, parse_filter(text), 100_000)
            elapsed = time.perf_counter() - started
        del result  # freed after the meter stops: its 100k events take a while to free, search or not
        return elapsed, meter.worst

    print(f"the monitor's `o` search over the same log in a worker thread (median of {rounds}; stall: worst)")
    print("| filter | before | now | loop stall before | now | goal |")
    print("|---|---:|---:|---:|---:|---|")
    for text in ("training.*", "batch 12345"):
        runs: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
        for _ in range(rounds):
            for side, search in (("now", search_older), ("before", _search_as_before)):
                gc.collect()
                runs[side].append(asyncio.run(one(search, text)))
                gc.unfreeze()
        t = {side: statistics.median(r[0] for r in v) for side, v in runs.items()}
        w = {side: max(r[1] for r in v) for side, v in runs.items()}
        print(f"| `{text}` | {t['before']:.2f} s | {t['now']:.2f} s | {w['before'] * 1000:.0f} ms "
              f"| {w['now'] * 1000:.0f} ms | stall ≤ 50 ms |")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument("--query-events", type=int, default=None, help="events in the query log (default 1M)")
    parser.add_argument("--baseline", default=BASELINE_REV,
                        help=f"git revision for the 'before' column ({BASELINE_REV})")
    parser.add_argument("--headline-only", action="store_true", help="only the headline harness")
    parser.add_argument("--query-only", action="store_true", help="only the query_events rows")
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    repeats = 3 if args.quick else 5
    query_n = args.query_events or (100_000 if args.quick else 1_000_000)
    tmp = Path(tempfile.mkdtemp(prefix="kbert-bench-"))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    import kbert_tui.events as current

    before = load_events_at(args.baseline)
    h_n, h_rounds = (10_000, 3) if args.quick else (H_EVENTS, H_ROUNDS)
    thread_per, thread_rounds = (10_000, 1) if args.quick else (50_000, 3)
    if not args.query_only:
        print_headline(headline(before, current, tmp, h_n, h_rounds, thread_per, thread_rounds),
                       h_n, h_rounds, thread_per, args.baseline)
    log = tmp / "big" / "events.jsonl"
    started = time.perf_counter()
    write_big_log(log, query_n)
    print(f"(wrote a {query_n:,}-event log in {time.perf_counter() - started:.1f} s, "
          f"{sum(p.stat().st_size for p in log.parent.iterdir()) / 1e6:.0f} MB)")
    spaced = tmp / "spaced" / "events.jsonl"
    started = time.perf_counter()
    write_spaced_copy(log, spaced)
    print(f"(rewrote it with json.dumps' default separators in {time.perf_counter() - started:.1f} s, "
          f"{sum(p.stat().st_size for p in spaced.parent.iterdir()) / 1e6:.0f} MB)")
    queries = query_headline(before, current, log, spaced, 3)
    search_rows(log, 3)
    if args.headline_only or args.query_only:
        return 0
    print(f"developer rows: {n:,} events per run, median of {repeats}\n")
    results: dict[str, float] = {}

    for handlers in (1, 10):
        print(f"emit -> {handlers} async handler(s)")
        for key, label, run in (("ours", "kbert_tui EventBus.emit", ours),
                                ("pyee_async", "pyee AsyncIOEventEmitter.emit", pyee_asyncio),
                                ("pyee_sync", "pyee EventEmitter.emit (sync handlers)", pyee_sync),
                                ("blinker_send", "blinker Signal.send (sync handlers)", blinker_send),
                                ("blinker_async", "blinker Signal.send_async", blinker_send_async),
                                ("plain", "plain loop awaiting the handlers (limit)", plain_loop)):
            results[f"{key}_{handlers}"] = measure(label, partial(run, n, handlers), n, repeats)
        print()

    print("100 glob subscriptions, one matches")
    results["globs_0"] = measure("kbert_tui, 1 matching subscription only", lambda: ours(n, 1), n, repeats)
    results["globs_100"] = measure("kbert_tui, + 100 non-matching globs", lambda: ours(n, 1, globs=100), n, repeats)
    print()

    print("emit_sync from a worker thread -> 1 async handler on the loop")
    results["thread_ours"] = measure("kbert_tui EventBus.emit_sync", lambda: ours_thread(n), n, repeats)
    results["thread_cst"] = measure("loop.call_soon_threadsafe per event",
                                    lambda: call_soon_threadsafe_each(n), n, repeats)
    print()

    print("persistence (JSONL) -> 1 async handler")
    results["persist_off"] = measure("kbert_tui, persistence off", lambda: ours(n, 1), n, repeats)
    results["persist_on"] = measure("kbert_tui, persistence on",
                                    lambda: ours(n, 1, persist=tmp / f"p{time.time_ns()}.jsonl"), n, repeats)
    results["persist_naive"] = measure("json.dumps + write per event on the loop",
                                       lambda: naive_jsonl(n, tmp / "naive.jsonl"), n, repeats)
    print()

    r = results
    rows = [
        ("emit → 1 async handler vs pyee AsyncIOEventEmitter", r["ours_1"] / r["pyee_async_1"], "≥ 5×"),
        ("emit → 1 async handler vs blinker send_async", r["ours_1"] / r["blinker_async_1"], "≥ 0.6×"),
        ("emit → 1 async handler vs plain loop (limit)", r["ours_1"] / r["plain_1"], "—"),
        ("emit → 10 async handlers vs pyee AsyncIOEventEmitter", r["ours_10"] / r["pyee_async_10"], "≥ 5×"),
        ("emit → 10 async handlers vs blinker send_async", r["ours_10"] / r["blinker_async_10"], "≥ 0.6×"),
        ("emit → 10 async handlers vs plain loop (limit)", r["ours_10"] / r["plain_10"], "—"),
        ("cost of 100 non-matching globs (time ratio)", r["globs_0"] / r["globs_100"], "≤ 1.3×"),
        ("emit_sync from a thread vs call_soon_threadsafe", r["thread_ours"] / r["thread_cst"], "—"),
        ("persistence on: events/s", r["persist_on"], "≥ 100,000"),
        ("cost of persistence (time ratio on/off)", r["persist_off"] / r["persist_on"], "≤ 2×"),
        ("persistence on vs json.dumps+write per event", r["persist_on"] / r["persist_naive"], "—"),
        (f"query_events over {query_n:,} events, training.* epoch=5 (s)", queries["after"]["epoch5"], "≤ 3 s"),
    ]
    print("| measure | result | goal |")
    print("|---|---:|---|")
    for label, value, goal in rows:
        shown = f"{value:,.0f}" if value >= 1000 else (f"{value:.2f} s" if "(s)" in label else f"{value:.2f}×")
        print(f"| {label} | {shown} | {goal} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
