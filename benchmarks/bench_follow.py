"""Following a growing events.jsonl: a reader thread (LogFollower) vs an asyncio task reading with aiofiles.

    python benchmarks/bench_follow.py            # ~1 minute on 2 cores
    python benchmarks/bench_follow.py --quick

Both contenders deliver decoded events into a deque, as `kbert-tui attach` does for the monitor, and
both poll the file every POLL_S when it has nothing new. Three figures, each the median of --repeats:

- history: read and decode an existing log of N events (events/s), and how late an asyncio ticker
  (every 5 ms) running beside it woke (p99 and worst): the monitor's loop must stay responsive;
- live: a writer thread appends through JsonlStore at a steady rate; latency from `append` to the
  event being in the deque (p50 / p95 ms);
- idle: CPU seconds per wall second spent polling a file that does not grow.

The aiofiles contender reads the active file only (no rotation handling): it is the cheapest form an
aiofiles follower could take, so a loss here is a loss for any aiofiles follower.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiofiles

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbert_tui.events import Event  # noqa: E402
from kbert_tui.events._codec import MalformedLine, decode_event  # noqa: E402
from kbert_tui.events.follow import LogFollower  # noqa: E402
from kbert_tui.events.store import JsonlStore  # noqa: E402
from kbert_tui.remote import AttachedRun, resolve_run  # noqa: E402

POLL_S = 0.02
BATCH = 2000
CHUNK = 1 << 20
PAYLOAD = {"epoch": 1, "step": 0, "loss": 0.4321, "learning_rate": 1e-4, "samples_per_sec": 312.5}

Follow = Callable[[Path, deque, asyncio.Event], Awaitable[None]]


# ------------------------------------------------------------------------------ the two followers
async def follow_thread(path: Path, inbox: deque, stop: asyncio.Event) -> None:
    """What AttachSource does: a daemon thread polls LogFollower and extends the deque."""
    halt = threading.Event()

    def run() -> None:
        with LogFollower(path) as follower:
            while not halt.is_set():
                batch = follower.read_events(BATCH)
                if batch:
                    inbox.extend(batch)
                elif follower.caught_up:
                    halt.wait(POLL_S)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    await stop.wait()
    halt.set()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)


async def follow_aiofiles(path: Path, inbox: deque, stop: asyncio.Event) -> None:
    """The asyncio alternative: aiofiles reads (each one a hop to the executor), decoding on the loop."""
    partial = b""
    async with aiofiles.open(path, "rb") as fh:
        while not stop.is_set():
            chunk = await fh.read(CHUNK)
            if not chunk:
                try:
                    await asyncio.wait_for(stop.wait(), POLL_S)
                except TimeoutError:
                    pass
                continue
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            batch = []
            for index, line in enumerate(lines):
                line = line.strip()
                if line:
                    try:
                        batch.append(decode_event(line))
                    except MalformedLine:
                        pass
                if index % BATCH == BATCH - 1:
                    inbox.extend(batch)
                    batch = []
                    await asyncio.sleep(0)  # let the loop breathe between batches
            inbox.extend(batch)


CONTENDERS: dict[str, Follow] = {"thread + LogFollower": follow_thread, "asyncio + aiofiles": follow_aiofiles}


# ------------------------------------------------------------------------------ measurements
async def _ticker(stop: asyncio.Event, stalls: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        stalls.append(time.perf_counter() - t - 0.005)


async def history(follow: Follow, path: Path, count: int) -> tuple[float, float, float]:
    """(events/s, p99 and worst ticker stall in ms) reading a finished log of `count` events."""
    inbox: deque = deque()
    stop = asyncio.Event()
    stalls: list[float] = []
    ticker = asyncio.create_task(_ticker(stop, stalls))
    started = time.perf_counter()
    task = asyncio.create_task(follow(path, inbox, stop))
    while len(inbox) < count:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    await ticker
    return count / elapsed, statistics.quantiles(stalls, n=100, method="inclusive")[98] * 1000, max(stalls) * 1000


async def live(follow: Follow, folder: Path, rate: int, seconds: float) -> tuple[float, float]:
    """(p50, p95) ms from JsonlStore.append to the event being in the deque, at `rate` events/s."""
    path = folder / f"live-{time.monotonic_ns()}.jsonl"
    store = JsonlStore(path)
    store.append(Event("run.started", {}))  # the file exists before the follower opens it
    store.wait_written()
    inbox: deque = deque()
    stop = asyncio.Event()
    task = asyncio.create_task(follow(path, inbox, stop))
    await asyncio.sleep(0.1)
    sent: dict[str, float] = {}
    total = int(rate * seconds)

    def write() -> None:
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for i in range(total):
            event = Event("training.batch_completed", dict(PAYLOAD, step=i))
            sent[event.id] = time.perf_counter()
            store.append(event)
            next_at += interval
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

    writer = threading.Thread(target=write)
    writer.start()
    latencies: list[float] = []
    seen = 0
    while seen < total + 1:
        while inbox:
            event = inbox.popleft()
            seen += 1
            if event.id in sent:
                latencies.append(time.perf_counter() - sent[event.id])
        await asyncio.sleep(0.001)
    writer.join()
    stop.set()
    await task
    store.close()
    path.unlink()
    q = statistics.quantiles(latencies, n=20)
    return statistics.median(latencies) * 1000, q[18] * 1000


async def idle(follow: Follow, path: Path, count: int, seconds: float) -> float:
    """CPU seconds per wall second while following a file (of `count` events) that does not change."""
    inbox: deque = deque()
    stop = asyncio.Event()
    task = asyncio.create_task(follow(path, inbox, stop))
    while len(inbox) < count:  # past the history
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    used = (time.process_time() - cpu) / (time.perf_counter() - wall)
    stop.set()
    await task
    return used


def attach_time_to_live(path: Path) -> float:
    """Seconds until `kbert-tui attach`'s reader (AttachedRun) has read a finished log's history."""
    run = AttachedRun(resolve_run(path))
    while not run.live:
        run.read(BATCH)
    run.close()
    assert run.time_to_live is not None
    return run.time_to_live


def write_log(path: Path, count: int) -> None:
    store = JsonlStore(path)
    for i in range(count):
        store.append(Event("training.batch_completed", dict(PAYLOAD, step=i)))
    store.close()


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big = folder / "history.jsonl"
        write_log(big, args.events)
        print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs; history {args.events:,} events "
              f"({big.stat().st_size / 1e6:.1f} MB); live {args.rate:,}/s for {args.seconds:g}s; "
              f"poll {POLL_S * 1000:g} ms; "
              f"median of {args.repeats}")
        rows: dict[str, dict[str, list[float]]] = {name: {} for name in CONTENDERS}
        for _ in range(args.repeats):
            for name, follow in CONTENDERS.items():  # interleaved, so machine load hits both alike
                r = rows[name]
                rate, p99, worst = await history(follow, big, args.events)
                r.setdefault("history events/s", []).append(rate)
                r.setdefault("history loop stall p99 ms", []).append(p99)
                r.setdefault("history loop stall max ms", []).append(worst)
                p50, p95 = await live(follow, folder, args.rate, args.seconds)
                r.setdefault("live latency p50 ms", []).append(p50)
                r.setdefault("live latency p95 ms", []).append(p95)
                r.setdefault("idle CPU %", []).append(100 * await idle(follow, big, args.events, args.idle_seconds))
        ttl = statistics.median(attach_time_to_live(big) for _ in range(args.repeats))
        print(f"attach: history of {args.events:,} events read and decoded, live after {ttl * 1000:.0f} ms "
              f"({args.events / ttl:,.0f} events/s)")
        keys = list(next(iter(rows.values())))
        print(f"{'':22s}" + "".join(f"{k:>27s}" for k in keys))
        medians = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in rows.items()}
        for name, m in medians.items():
            print(f"{name:22s}" + "".join(f"{m[k]:>27,.1f}" for k in keys))
        thread, aio = medians["thread + LogFollower"], medians["asyncio + aiofiles"]
        print(f"history throughput aiofiles/thread: {aio['history events/s'] / thread['history events/s']:.2f}×; "
              f"live p50 aiofiles/thread: {aio['live latency p50 ms'] / thread['live latency p50 ms']:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, one repeat")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--idle-seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.events, args.seconds, args.idle_seconds, args.repeats = 20_000, 1.0, 0.5, 1
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
