"""Reads the event stream and names what slows a run down, with advice a user can act on."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, Protocol
from kbert_tui.events import catalog as ev

_RUN_ENDS = frozenset({ev.TRAINING_COMPLETED, ev.TRAINING_FAILED, ev.TRAINING_STOPPED})


class _EventLike(Protocol):
    name: str
    data: dict[str, Any]
    timestamp: datetime
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Knobs of the detector; the defaults suit a 1 s sampling interval."""

    data_load_share: float = 0.5  # data loading's share of step time that counts as a bottleneck
    window: int = 20  # batches averaged for the share and the throughput
    min_batches: int = 5  # batches needed before the share is judged
    warmup_batches: int = 3  # first batches of a run ignored for throughput (graph compilation)
    throughput_drop: float = 0.3  # fall from the best window mean that counts
    memory_window: int = 60  # memory samples judged together
    memory_min_rise_mb: float = 256.0  # rise over the window that counts
    memory_monotonic: float = 0.8  # share of non-flat changes that must be rises
    straggler_ratio: float = 1.5  # a rank whose median step time is this many times the others'…
    straggler_min_lag_ms: float = 5.0  # …and at least this much slower is a straggler


def _is_reference_blas(blas: Any) -> bool:
    if isinstance(blas, dict):
        if "reference" in blas:
            return bool(blas["reference"])
        blas = blas.get("name") or blas.get("kind") or blas.get("library") or ""
    text = str(blas or "").lower()
    return any(word in text for word in ("reference", "bundled", "builtin", "built-in", "fallback"))


class BottleneckDetector:
    """Turns training and system events into `system.bottleneck_detected` findings.

    `observe` is pure (events in, finding payloads out) so crafted streams test it directly;
    `attach` subscribes it to a bus and emits what it finds.
    """

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self._bus: Any = None
        self._sub_ids: list[str] = []
        self._reset_run()

    def _reset_run(self) -> None:
        s = self.settings
        self._running = False
        self._batches = 0
        self._shares: deque[float] = deque(maxlen=s.window)
        self._share_flagged = False
        self._throughput: list[float] = []
        self._best_throughput = 0.0
        self._slow_windows = 0
        self._throughput_flagged = False
        self._memory: dict[str, deque[tuple[float, float]]] = {}
        self._memory_flagged: set[str] = set()
        self._rank_steps: list[deque[float]] = []
        self._stragglers: set[int] = set()

    # -- pure part -------------------------------------------------------------------------

    def observe(self, event: _EventLike) -> list[dict[str, Any]]:
        """Feed one event; returns the payloads of any new findings."""
        name, data = event.name, event.data or {}
        if name == ev.TRAINING_STARTED:
            self._reset_run()
            self._running = True
            return self._check_blas(data)
        if name in _RUN_ENDS:
            self._running = False
            return []
        if name == ev.TRAINING_BATCH_COMPLETED:
            self._running = True
            self._batches += 1
            metrics = data.get("metrics") or {}
            return (self._check_data_share(metrics) + self._check_throughput(metrics)
                    + self._check_stragglers(metrics.get("rank_step_ms")))
        if name == ev.SYSTEM_MEMORY_USAGE and self._running and self._batches:
            return self._check_memory("process", data.get("process_rss_mb"), event.timestamp)
        if name == ev.SYSTEM_MLX_MEMORY and self._running and self._batches:
            return self._check_memory("mlx", data.get("active_mb"), event.timestamp)
        return []

    def _check_stragglers(self, rank_ms: Any) -> list[dict[str, Any]]:
        """With several ranks (`metrics.rank_step_ms`): one rank's steps staying well slower than the others'."""
        if not isinstance(rank_ms, list) or len(rank_ms) < 2:
            return []
        s = self.settings
        if len(self._rank_steps) != len(rank_ms):
            self._rank_steps = [deque(maxlen=s.window) for _ in rank_ms]
        for lane, ms in zip(self._rank_steps, rank_ms, strict=True):
            if isinstance(ms, int | float) and ms > 0:
                lane.append(float(ms))
        if any(len(lane) < s.window for lane in self._rank_steps):
            return []
        medians = [sorted(lane)[len(lane) // 2] for lane in self._rank_steps]
        findings = []
        for rank, slow in enumerate(medians):
            others = sorted(m for r, m in enumerate(medians) if r != rank)[(len(medians) - 1) // 2]
            lag = slow - others
            if rank in self._stragglers or slow < s.straggler_ratio * others or lag < s.straggler_min_lag_ms:
                continue
            self._stragglers.add(rank)
            findings.append({
                "component": "straggler",
                "description": (f"Rank {rank} is {lag:.0f} ms per step behind the others ({slow:.0f} vs "
                                f"{others:.0f} ms, median of the last {s.window} steps); every step waits for it."),
                "suggestions": [
                    f"Look at rank {rank}'s machine: another process taking its CPU or GPU, a slower device, "
                    "or swapping (its system.* events are in its log).",
                    "On one machine, give each rank its own cores: ranks sharing cores slow each other down.",
                ],
                "rank": rank, "lag_ms": round(lag, 3), "step_time_ms": round(slow, 3),
            })
        return findings

    def _check_blas(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        device = str(data.get("device") or "cpu").lower()
        blas = data.get("blas")
        if "cpu" not in device or not _is_reference_blas(blas):
            return []
        hint = blas.get("hint") if isinstance(blas, dict) else None
        return [
            {
                "component": "blas",
                "description": (
                    "Training runs on the CPU with MLX's bundled reference BLAS; "
                    "matrix multiplies run about 10x slower than with OpenBLAS."
                ),
                "suggestions": ([hint] if hint else []) + [
                    "Reinstall kbert-tui with pip on Linux x86_64 (it brings the ngsolve-openblas wheel) and "
                    "check KBERT_TUI_BLAS is not 'off'; kbert-tui loads OpenBLAS before MLX by itself.",
                    "Elsewhere: install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread) or set "
                    "KBERT_TUI_BLAS to the path of a libopenblas.so.0, then start the run again.",
                    "Until then keep [model] small (hidden_size, num_layers) so steps stay short.",
                ],
                "blas": data.get("blas"),
            }
        ]

    def _check_data_share(self, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        s = self.settings
        data_ms, step_ms = metrics.get("data_time_ms"), metrics.get("step_time_ms")
        if data_ms is None or step_ms is None or data_ms + step_ms <= 0:
            return []
        # The worker times the two apart: step_time_ms is compute only, data_time_ms the batch's preparation.
        self._shares.append(max(0.0, float(data_ms)) / (float(data_ms) + float(step_ms)))
        if len(self._shares) < s.min_batches:
            return []
        share = sum(self._shares) / len(self._shares)
        if self._share_flagged:
            if share < s.data_load_share * 0.8:
                self._share_flagged = False
            return []
        if share < s.data_load_share:
            return []
        self._share_flagged = True
        return [
            {
                "component": "data_loader",
                "description": (
                    f"Data loading takes {share:.0%} of each training step over the last "
                    f"{len(self._shares)} batches (limit {s.data_load_share:.0%}): the model waits for input."
                ),
                "suggestions": [
                    "Raise [data] batch_size so each load feeds more compute.",
                    "Lower [data] max_length if most texts are shorter: less tokenizing and padding per batch.",
                    "Put the data files on a local disk, and use fewer or shorter text_columns / a shorter template.",
                    "Close other programs competing for the CPU (see the CPU pane).",
                ],
                "share": round(share, 3),
                "threshold": s.data_load_share,
            }
        ]

    def _check_throughput(self, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        s = self.settings
        value = metrics.get("samples_per_sec")
        if value is None or self._batches <= s.warmup_batches:
            return []
        self._throughput.append(float(value))
        if len(self._throughput) < s.window:
            return []
        # Whole windows, each summed up by its median: one slow step (a GC pause, an evaluation) is not a trend.
        window, self._throughput = sorted(self._throughput), []
        median = window[len(window) // 2]
        self._best_throughput = max(self._best_throughput, median)
        best = self._best_throughput
        slow = best > 0 and median < best * (1.0 - s.throughput_drop)
        self._slow_windows = self._slow_windows + 1 if slow else 0
        if self._throughput_flagged:
            if median >= best * (1.0 - s.throughput_drop / 2):
                self._throughput_flagged = False
            return []
        if self._slow_windows < 2:  # two windows in a row
            return []
        self._throughput_flagged = True
        drop = 1.0 - median / best
        return [
            {
                "component": "throughput",
                "description": (
                    f"Throughput fell {drop:.0%}: a median of {median:.1f} samples/s over the last "
                    f"{2 * len(window)} batches against a best of {best:.1f}."
                ),
                "suggestions": [
                    "Look for another process taking CPU or GPU time (CPU and GPU panes).",
                    "Check memory: swapping slows every step; lower [data] batch_size if memory is near full.",
                    "On a laptop or a hot GPU, check for thermal throttling (GPU temperature).",
                    "If batches get longer over time, cap [data] max_length.",
                ],
                "samples_per_sec": round(median, 2),
                "best_samples_per_sec": round(best, 2),
            }
        ]

    def _check_memory(self, kind: str, value: Any, when: datetime) -> list[dict[str, Any]]:
        s = self.settings
        if value is None:
            return []
        series = self._memory.setdefault(kind, deque(maxlen=s.memory_window))
        series.append((when.timestamp(), float(value)))
        if len(series) < s.memory_window:
            return []
        values = [v for _, v in series]
        rise = values[-1] - values[0]
        if kind in self._memory_flagged:
            if rise < s.memory_min_rise_mb / 4:  # leveled off: judge afresh
                self._memory_flagged.discard(kind)
            return []
        steps = [b - a for a, b in pairwise(values) if b != a]
        rising = sum(1 for d in steps if d > 0) / len(steps) if steps else 0.0
        late_rise = values[-1] - values[len(values) // 2]  # a jump that then leveled off is no leak
        if (rise < s.memory_min_rise_mb or rising < s.memory_monotonic or late_rise < rise / 4
                or len(steps) < len(values) // 4):  # a few jumps are allocations, not a trend
            return []
        self._memory_flagged.add(kind)
        seconds = max(series[-1][0] - series[0][0], 1e-9)
        what = "The training process's memory (RSS)" if kind == "process" else "MLX's active memory"
        return [
            {
                "component": "memory",
                "description": (
                    f"{what} keeps rising: +{rise:.0f} MB over the last {len(values)} samples "
                    f"({seconds:.0f} s, {rise / seconds * 60:.0f} MB/min) without leveling off."
                ),
                "suggestions": [
                    "Something keeps a reference per step: convert logged values with float()/.item() "
                    "instead of keeping mx.array objects in lists.",
                    "Lower [data] batch_size or [data] max_length to give the run more headroom.",
                    "Cap MLX's buffer cache (mx.set_cache_limit) if the cache, not active memory, grows.",
                ],
                "memory_kind": kind,
                "rise_mb": round(rise, 1),
                "mb_per_min": round(rise / seconds * 60, 1),
            }
        ]

    # -- bus part ------------------------------------------------------------------------

    async def attach(self, bus: Any) -> None:
        """Subscribe to the training and system events it reads."""
        self._bus = bus
        for pattern in ("training.*", ev.SYSTEM_MEMORY_USAGE, ev.SYSTEM_MLX_MEMORY):
            self._sub_ids.append(await bus.subscribe(pattern, self._on_event))

    async def detach(self) -> None:
        bus, self._bus = self._bus, None
        for sub_id in self._sub_ids:
            await bus.unsubscribe(sub_id)
        self._sub_ids.clear()

    async def _on_event(self, event: Any) -> None:
        bus = self._bus
        for payload in self.observe(event):
            if bus is not None:
                await bus.emit(
                    ev.SYSTEM_BOTTLENECK_DETECTED, payload, source="system", correlation_id=event.correlation_id
                )
