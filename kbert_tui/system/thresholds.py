"""Threshold crossings with hysteresis: one warning per crossing, one recovery when it clears."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Transition = Literal["warning", "recovered"]


@dataclass(slots=True)
class _Track:
    above: bool = False
    run: int = 0  # consecutive samples on the far side of the current state's boundary


@dataclass(slots=True)
class ThresholdMonitor:
    """Watches named metrics against limits.

    A metric enters the warning state after `sustain` consecutive samples at or above its limit,
    and leaves it only once a sample falls below `limit * (1 - hysteresis)`: a value hovering
    around the limit gives one warning, not one per sample.
    """

    limits: dict[tuple[str, str], float]
    hysteresis: float = 0.05
    sustain: int = 1
    _tracks: dict[tuple[str, str, Any], _Track] = field(default_factory=dict)

    def observe(
        self, component: str, metric: str, value: float, *, device: Any = None
    ) -> tuple[Transition, dict[str, Any]] | None:
        """Feed one sample; returns ("warning"|"recovered", payload) when the state changes."""
        limit = self.limits.get((component, metric))
        if limit is None or value is None:
            return None
        track = self._tracks.setdefault((component, metric, device), _Track())
        if not track.above:
            track.run = track.run + 1 if value >= limit else 0
            if track.run < max(1, self.sustain):
                return None
            track.above, track.run = True, 0
            kind: Transition = "warning"
        else:
            if value >= limit * (1.0 - self.hysteresis):
                return None
            track.above = False
            kind = "recovered"
        payload: dict[str, Any] = {
            "component": component,
            "metric": metric,
            "value": round(float(value), 3),
            "threshold": limit,
        }
        if device is not None:
            payload["device"] = device
        return kind, payload
