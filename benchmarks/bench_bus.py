"""Side-by-side event-bus throughput: kbert_tui.events vs pyee, blinker and a plain loop.

    python benchmarks/bench_bus.py            # full run (~2 minutes on 2 cores)
    python benchmarks/bench_bus.py --quick    # smaller counts, for a smoke test

Every contender calls the same kind of handler (it counts events) with the same payload. Each row is the
median of several repeats; ratios compare medians measured in this one process.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blinker import Signal  # noqa: E402
from pyee import EventEmitter  # noqa: E402
from pyee.asyncio import AsyncIOEventEmitter  # noqa: E402

from kbert_tui.events import EventBus, EventQuery  # noqa: E402
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


# --------------------------------------------------------------------------------- contenders
async def ours(n: int, handlers: int, *, globs: int = 0, persist: Path | None = None, sync_handler: bool = False) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument("--query-events", type=int, default=None, help="events in the query log (default 1M)")
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    repeats = 3 if args.quick else 5
    query_n = args.query_events or (100_000 if args.quick else 1_000_000)
    tmp = Path(tempfile.mkdtemp(prefix="kbert-bench-"))
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {n:,} events per run, median of {repeats}\n")
    results: dict[str, float] = {}

    for handlers in (1, 10):
        print(f"emit -> {handlers} async handler(s)")
        results[f"ours_{handlers}"] = measure("kbert_tui EventBus.emit", lambda: ours(n, handlers), n, repeats)
        results[f"pyee_async_{handlers}"] = measure("pyee AsyncIOEventEmitter.emit", lambda: pyee_asyncio(n, handlers), n, repeats)
        results[f"pyee_sync_{handlers}"] = measure("pyee EventEmitter.emit (sync handlers)", lambda: pyee_sync(n, handlers), n, repeats)
        results[f"blinker_send_{handlers}"] = measure("blinker Signal.send (sync handlers)", lambda: blinker_send(n, handlers), n, repeats)
        results[f"blinker_async_{handlers}"] = measure("blinker Signal.send_async", lambda: blinker_send_async(n, handlers), n, repeats)
        results[f"plain_{handlers}"] = measure("plain loop awaiting the handlers (limit)", lambda: plain_loop(n, handlers), n, repeats)
        print()

    print("100 glob subscriptions, one matches")
    results["globs_0"] = measure("kbert_tui, 1 matching subscription only", lambda: ours(n, 1), n, repeats)
    results["globs_100"] = measure("kbert_tui, + 100 non-matching globs", lambda: ours(n, 1, globs=100), n, repeats)
    print()

    print("emit_sync from a worker thread -> 1 async handler on the loop")
    results["thread_ours"] = measure("kbert_tui EventBus.emit_sync", lambda: ours_thread(n), n, repeats)
    results["thread_cst"] = measure("loop.call_soon_threadsafe per event", lambda: call_soon_threadsafe_each(n), n, repeats)
    print()

    print("persistence (JSONL) -> 1 async handler")
    results["persist_off"] = measure("kbert_tui, persistence off", lambda: ours(n, 1), n, repeats)
    results["persist_on"] = measure("kbert_tui, persistence on", lambda: ours(n, 1, persist=tmp / f"p{time.time_ns()}.jsonl"), n, repeats)
    results["persist_naive"] = measure("json.dumps + write per event on the loop", lambda: naive_jsonl(n, tmp / "naive.jsonl"), n, repeats)
    print()

    print(f"query_events over a {query_n:,}-event log (name glob + data_contains)")
    log = tmp / "big" / "events.jsonl"
    started = time.perf_counter()
    write_big_log(log, query_n)
    print(f"  (wrote the log in {time.perf_counter() - started:.1f} s, "
          f"{sum(p.stat().st_size for p in log.parent.iterdir()) / 1e6:.0f} MB)")

    async def run_query() -> int:
        bus = EventBus(enable_persistence=True, persistence_path=log, max_file_size_mb=64)
        found = await bus.query_events(
            EventQuery().event_name_pattern("training.*").data_contains({"epoch": 5}))
        await bus.shutdown()
        return len(found)

    query_times, naive_times = [], []
    hits = 0
    for _ in range(3):
        started = time.perf_counter()
        hits = asyncio.run(run_query())
        query_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        naive_hits = naive_query(log)
        naive_times.append(time.perf_counter() - started)
        assert naive_hits == hits, (naive_hits, hits)
    results["query_s"] = statistics.median(query_times)
    results["naive_query_s"] = statistics.median(naive_times)
    print(f"  kbert_tui query_events: {results['query_s']:.2f} s ({hits:,} hits); "
          f"json.loads every line: {results['naive_query_s']:.2f} s (median of 3)\n")

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
        (f"query_events over {query_n:,} events (s)", r["query_s"], "≤ 3 s"),
    ]
    print("| measure | result | goal |")
    print("|---|---:|---|")
    for label, value, goal in rows:
        shown = f"{value:,.0f}" if value >= 1000 else (f"{value:.2f} s" if "(s)" in label else f"{value:.2f}×")
        print(f"| {label} | {shown} | {goal} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
