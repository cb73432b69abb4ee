"""The bottleneck detector on crafted event streams, and through a bus."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC

from kbert_tui.events import Event
from kbert_tui.system import BottleneckDetector, DetectorSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(name: str, data: dict, seconds: float = 0.0) -> Event:
    return Event(name, data, T0 + timedelta(seconds=seconds), "trainer", "run-1")


def batch(step: int, *, data_ms: float = 5.0, step_ms: float = 50.0, sps: float = 320.0) -> Event:
    return ev("training.batch_completed", {
        "batch": step, "step": step, "epoch": 1, "loss": 0.5,
        "metrics": {"samples_per_sec": sps, "step_time_ms": step_ms, "data_time_ms": data_ms},
    }, seconds=step * 0.1)


def feed(detector: BottleneckDetector, events) -> list[dict]:
    found = []
    for event in events:
        found += detector.observe(event)
    return found


def started(blas, device="cpu") -> Event:
    return ev("training.started", {"run_id": "run-1", "device": device, "blas": blas})


def test_data_loading_share_above_the_limit_is_found_once_and_rearms():
    detector = BottleneckDetector(DetectorSettings(data_load_share=0.5, window=5, min_batches=5))
    healthy = feed(detector, [started("openblas")] + [batch(i, data_ms=10) for i in range(1, 11)])
    assert healthy == []
    slow = feed(detector, [batch(i, data_ms=70) for i in range(11, 31)])
    assert len(slow) == 1
    finding = slow[0]
    assert finding["component"] == "data_loader"
    assert finding["share"] >= 0.5 and finding["threshold"] == 0.5
    assert f"{finding['share']:.0%}" in finding["description"]
    assert any("batch_size" in s for s in finding["suggestions"])
    # back to healthy, then slow again: a second, separate finding
    assert feed(detector, [batch(i, data_ms=10) for i in range(31, 41)]) == []
    assert len(feed(detector, [batch(i, data_ms=80) for i in range(41, 51)])) == 1


def test_data_share_needs_enough_batches_and_both_timings():
    detector = BottleneckDetector(DetectorSettings(window=10, min_batches=5))
    assert feed(detector, [batch(i, data_ms=90) for i in range(1, 5)]) == []  # 4 < min_batches
    no_timing = ev("training.batch_completed", {"step": 9, "metrics": {"samples_per_sec": 320.0}})
    assert feed(detector, [no_timing] * 10) == []


def test_falling_throughput_against_the_best_window():
    detector = BottleneckDetector(DetectorSettings(window=5, warmup_batches=3, throughput_drop=0.3))
    warmup = [batch(i, sps=10.0) for i in range(1, 4)]  # compile steps: ignored
    steady = [batch(i, sps=300.0) for i in range(4, 20)]
    assert feed(detector, [started("openblas")] + warmup + steady) == []
    dip = feed(detector, [batch(i, sps=240.0) for i in range(20, 30)])  # -20%: not enough
    assert dip == []
    slump = feed(detector, [batch(i, sps=150.0) for i in range(30, 45)])
    assert [f["component"] for f in slump] == ["throughput"]
    assert slump[0]["best_samples_per_sec"] == 300.0 and slump[0]["samples_per_sec"] == 150.0
    assert "against a best of 300.0" in slump[0]["description"]
    assert feed(detector, [batch(i, sps=150.0) for i in range(45, 60)]) == []  # still low: no repeat


def test_noisy_throughput_with_slow_outliers_is_not_a_slump():
    detector = BottleneckDetector(DetectorSettings(window=10, warmup_batches=0))
    # tiny steps: every third one is a 4x slower outlier (GC, an evaluation, the OS)
    noisy = [batch(i, sps=4000.0 if i % 3 else 1000.0) for i in range(1, 200)]
    assert feed(detector, [started("openblas")] + noisy) == []


def test_a_new_run_resets_the_baseline():
    detector = BottleneckDetector(DetectorSettings(window=5, warmup_batches=0))
    feed(detector, [started("openblas")] + [batch(i, sps=300.0) for i in range(1, 10)])
    # a second, slower run (another config) is not a slump of the first
    assert feed(detector, [started("openblas")] + [batch(i, sps=100.0) for i in range(1, 20)]) == []


def _memory(i: int, rss: float) -> Event:
    return ev("system.memory_usage", {"used_mb": 1, "available_mb": 1, "percentage": 1, "process_rss_mb": rss},
              seconds=float(i))


def test_memory_that_keeps_rising_is_found():
    detector = BottleneckDetector(DetectorSettings(memory_window=30, memory_min_rise_mb=100))
    feed(detector, [started("openblas"), batch(1)])
    # +5 MB a second with a little noise: rising, not leveling off
    stream = [_memory(i, 1000 + 5 * i + (3 if i % 7 == 0 else 0)) for i in range(40)]
    found = feed(detector, stream)
    assert [f["component"] for f in found] == ["memory"]
    assert found[0]["memory_kind"] == "process"
    assert found[0]["mb_per_min"] > 250
    assert "keeps rising" in found[0]["description"]


def test_memory_that_grows_then_plateaus_or_saws_is_not_a_leak():
    detector = BottleneckDetector(DetectorSettings(memory_window=30, memory_min_rise_mb=100))
    feed(detector, [started("openblas"), batch(1)])
    plateau = [_memory(i, 1000 + min(i, 10) * 30) for i in range(60)]  # +300 MB at start, then flat
    saw = [_memory(60 + i, 1300 + (200 if i % 2 else 0)) for i in range(60)]  # allocator churn
    assert feed(detector, plateau + saw) == []


def test_memory_before_training_starts_is_ignored():
    detector = BottleneckDetector(DetectorSettings(memory_window=10, memory_min_rise_mb=10))
    assert feed(detector, [_memory(i, 100 + 50 * i) for i in range(30)]) == []  # dataset loading


def test_mlx_active_memory_rising_is_found_too():
    detector = BottleneckDetector(DetectorSettings(memory_window=10, memory_min_rise_mb=50))
    feed(detector, [started("openblas"), batch(1)])
    found = feed(detector, [ev("system.mlx_memory", {"active_mb": 10.0 * i, "peak_mb": 10.0 * i, "cache_mb": 0},
                               seconds=i) for i in range(12)])
    assert [f["memory_kind"] for f in found] == ["mlx"]


def test_reference_blas_on_cpu_is_found_with_the_install_hint():
    detector = BottleneckDetector()
    blas = {"name": "reference", "path": None, "hint": "install OpenBLAS"}
    found = detector.observe(started(blas))
    assert [f["component"] for f in found] == ["blas"]
    assert found[0]["suggestions"][0] == "install OpenBLAS"  # the worker's own hint comes first
    assert any("libopenblas0-pthread" in s for s in found[0]["suggestions"])
    assert detector.observe(started({"name": "openblas", "path": "/usr/lib/libopenblas.so.0"})) == []
    assert detector.observe(started("reference", device="gpu")) == []  # BLAS does not matter on a GPU
    assert detector.observe(started("accelerate")) == []


async def test_detector_on_the_bus_emits_bottleneck_events(recording_bus):
    detector = BottleneckDetector(DetectorSettings(window=5, min_batches=5))
    await detector.attach(recording_bus)
    await recording_bus.emit("training.started", {"device": "cpu", "blas": {"name": "reference"}},
                             source="trainer", correlation_id="run-9")
    for i in range(1, 8):
        await recording_bus.emit("training.batch_completed", batch(i, data_ms=60).data,
                                 source="trainer", correlation_id="run-9")
    await recording_bus.flush()
    await detector.detach()
    found = recording_bus.assert_emitted("system.bottleneck_detected", count=2)
    assert {e.data["component"] for e in found} == {"blas", "data_loader"}
    for event in found:
        assert event.source == "system" and event.correlation_id == "run-9"
        assert set(event.data) >= {"component", "description", "suggestions"}
        assert event.data["suggestions"] and all(isinstance(s, str) for s in event.data["suggestions"])
    await recording_bus.emit("training.started", {"device": "cpu", "blas": "reference"})
    await recording_bus.flush()
    assert len(recording_bus.emitted("system.bottleneck_detected")) == 2  # detached: quiet


def test_a_rank_whose_steps_stay_slower_is_flagged_once_as_a_straggler():
    from datetime import datetime

    from kbert_tui.events import Event
    from kbert_tui.system import BottleneckDetector

    detector = BottleneckDetector()
    start = datetime(2026, 11, 29, tzinfo=UTC)
    detector.observe(Event("training.started", {"device": "cpu", "blas": {"name": "openblas"}}, start))
    findings = []
    for step in range(1, 41):
        slow = 120.0 if step > 5 else 50.0  # rank 1 falls behind after a few steps
        metrics = {"step_time_ms": 50.0, "rank_step_ms": [50.0 + step % 3, slow, 49.0]}
        findings += detector.observe(Event("training.batch_completed", {"step": step, "metrics": metrics}, start))
    stragglers = [f for f in findings if f["component"] == "straggler"]
    assert len(stragglers) == 1
    assert stragglers[0]["rank"] == 1 and 65 <= stragglers[0]["lag_ms"] <= 75


def test_even_ranks_are_no_stragglers():
    from datetime import datetime

    from kbert_tui.events import Event
    from kbert_tui.system import BottleneckDetector

    detector = BottleneckDetector()
    start = datetime(2026, 11, 29, tzinfo=UTC)
    findings = []
    for step in range(1, 41):
        metrics = {"rank_step_ms": [50.0 + step % 7, 52.0 - step % 5]}
        findings += detector.observe(Event("training.batch_completed", {"step": step, "metrics": metrics}, start))
    assert [f for f in findings if f["component"] == "straggler"] == []
