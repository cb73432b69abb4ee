"""What publishing a run's events to Redis Streams costs, and how it recovers from an outage.

    python benchmarks/bench_broker.py            # ~1 minute on 2 cores; needs redis-server
    python benchmarks/bench_broker.py --quick

A private redis-server (127.0.0.1, no persistence) is started and stopped here. Each figure is the
median of --repeats, the two sides of a comparison measured alternately in this one process:

- overhead: N events emitted as fast as possible into an EventBus with its JSONL log, with and without
  a BrokerPublisher; CPU seconds of this process per event until the log (and the stream) hold them all.
  The difference is what publishing adds per event (redis-server's own CPU is not counted).
- latency: events emitted at a steady rate; from `emit` to a viewer (BrokerRun, another thread)
  having read it from the stream, p50 / p95.
- outage: events emitted at a steady rate; redis-server is killed, restarted empty after D seconds;
  how long until the stream holds the whole log again, and that the viewer ends with exactly the
  log's events (no gap, no duplicate).
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbert_tui.events import EventBus  # noqa: E402
from kbert_tui.events.store import read_events  # noqa: E402
from kbert_tui.remote.broker import BrokerPublisher, BrokerRun  # noqa: E402
from kbert_tui.remote.testing import RedisServer, redis_server_binary  # noqa: E402

PAYLOAD = {"epoch": 1, "step": 0, "loss": 0.4321, "learning_rate": 1e-4, "samples_per_sec": 312.5}


async def _no_relay(event, *, via):  # control requests are not part of these measurements
    return False


def _publisher(bus: EventBus, path: Path, url: str, run_id: str) -> BrokerPublisher:
    return BrokerPublisher(bus, run_id, path, url, maxlen=1_000_000, token=None, relay=_no_relay,
                           info={"name": "bench", "host": "bench", "pid": os.getpid(), "events": str(path)})


async def _emit_at(bus: EventBus, rate: int, count: int, sent: dict[int, float] | None = None) -> None:
    """Emit `count` events from a thread at `rate` per second (like a training worker)."""

    def run() -> None:
        next_at = time.perf_counter()
        for i in range(count):
            if sent is not None:
                sent[i] = time.perf_counter()
            bus.emit_sync("training.batch_completed", dict(PAYLOAD, step=i), source="trainer", correlation_id="bench")
            next_at += 1.0 / rate
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

    await asyncio.get_running_loop().run_in_executor(None, run)


async def overhead(folder: Path, url: str, count: int, broker: bool, tag: str) -> float:
    """CPU µs per event: emit `count` events, flush the log (and publish them all)."""
    path = folder / f"overhead-{tag}.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    publisher = _publisher(bus, path, url, f"overhead-{tag}") if broker else None
    if publisher is not None:
        await publisher.start()
    cpu = time.process_time()
    for i in range(count):
        await bus.emit("training.batch_completed", dict(PAYLOAD, step=i), source="trainer")
    await bus.shutdown()
    if publisher is not None:
        await publisher.close("completed", timeout=120)
        assert publisher.published_all and publisher.published >= count, publisher.published
    used = time.process_time() - cpu
    return used / count * 1e6


async def latency(folder: Path, url: str, rate: int, seconds: float, tag: str) -> tuple[float, float]:
    path = folder / f"latency-{tag}.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    publisher = _publisher(bus, path, url, f"latency-{tag}")
    await publisher.start()
    while not publisher.connected:
        await asyncio.sleep(0.01)
    viewer = BrokerRun(url, f"latency-{tag}", block_ms=100)
    got: dict[int, float] = {}
    stop = threading.Event()

    def view() -> None:
        while not stop.is_set():
            for event in viewer.read(1000):
                got[event.data["step"]] = time.perf_counter()

    reader = threading.Thread(target=view, daemon=True)
    reader.start()
    sent: dict[int, float] = {}
    count = int(rate * seconds)
    await _emit_at(bus, rate, count, sent)
    while len(got) < count:
        await asyncio.sleep(0.01)
    stop.set()
    reader.join()
    viewer.close()
    await bus.shutdown()
    await publisher.close("completed")
    delays = [got[i] - sent[i] for i in sent if i in got]
    return statistics.median(delays) * 1000, statistics.quantiles(delays, n=20)[18] * 1000


async def outage(folder: Path, server: RedisServer, rate: int, before_s: float, down_s: float, tag: str) -> dict:
    path = folder / f"outage-{tag}.jsonl"
    bus = EventBus(enable_persistence=True, persistence_path=path)
    publisher = _publisher(bus, path, server.url, f"outage-{tag}")
    await publisher.start()
    while not publisher.connected:
        await asyncio.sleep(0.01)
    viewer = BrokerRun(server.url, f"outage-{tag}", block_ms=100)
    seen: list[str] = []
    stop = threading.Event()

    def view() -> None:
        while not stop.is_set():
            seen.extend(e.id for e in viewer.read(1000))

    reader = threading.Thread(target=view, daemon=True)
    reader.start()
    total = int(rate * (before_s + down_s + 1.0))
    emitting = asyncio.ensure_future(_emit_at(bus, rate, total))
    await asyncio.sleep(before_s)
    server.kill()
    await asyncio.sleep(down_s)
    server.start()
    restarted = time.perf_counter()
    while not publisher.connected:
        await asyncio.sleep(0.005)
    reconnected = time.perf_counter()
    await emitting
    await bus.flush()
    logged = sum(1 for _ in read_events(path))
    while publisher.published < logged:
        await asyncio.sleep(0.005)
    caught_up = time.perf_counter() - restarted
    while len(seen) < logged:
        await asyncio.sleep(0.01)
    stop.set()
    reader.join()
    viewer.close()
    await bus.shutdown()
    await publisher.close("completed")
    ids = [e.id for e in read_events(path)]
    return {"caught_up_s": caught_up, "reconnect_s": reconnected - restarted, "republished": publisher.republished,
            "exact": seen == ids[: len(seen)]
            and len(seen) >= logged, "logged": logged}


async def main_async(args: argparse.Namespace) -> None:
    binary = redis_server_binary()
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = RedisServer(folder / "redis", binary).start()
        try:
            print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs; median of {args.repeats}")
            off, on = [], []
            for r in range(args.repeats):
                off.append(await overhead(folder, server.url, args.events, False, f"off{r}"))
                on.append(await overhead(folder, server.url, args.events, True, f"on{r}"))
            m_off, m_on = statistics.median(off), statistics.median(on)
            print(f"overhead, {args.events:,} events as fast as possible: log only {m_off:.1f} µs CPU/event, "
                  f"log + broker {m_on:.1f} µs CPU/event: +{m_on - m_off:.1f} µs per event ({m_on / m_off:.2f}×)")
            lat = [await latency(folder, server.url, args.rate, args.seconds, f"{r}") for r in range(args.repeats)]
            print(f"latency at {args.rate:,} events/s: "
                  f"emit → viewer p50 {statistics.median(p for p, _ in lat):.1f} ms, "
                  f"p95 {statistics.median(p for _, p in lat):.1f} ms")
            runs = [await outage(folder, server, args.rate, 1.0, args.down, f"{r}") for r in range(args.repeats)]
            print(f"outage: {args.down:g} s down at {args.rate:,} events/s, restarted empty: reconnected "
                  f"{statistics.median(o['reconnect_s'] for o in runs) * 1000:.0f} ms after the restart "
                  f"(retry backoff), "
                  f"stream whole again after {statistics.median(o['caught_up_s'] for o in runs) * 1000:.0f} ms "
                  f"(republished {statistics.median(o['republished'] for o in runs):,.0f} of "
                  f"{statistics.median(o['logged'] for o in runs):,.0f} events); viewer saw exactly the log: "
                  f"{all(o['exact'] for o in runs)}")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--down", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.events, args.seconds, args.down, args.repeats = 5000, 1.0, 1.0, 1
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
