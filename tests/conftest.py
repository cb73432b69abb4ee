"""Shared test setup: pytest-textual-snapshot stores its SVGs under snapshots/ (not tests/__snapshots__/)."""

from __future__ import annotations

import os

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_textual_snapshot
from hypothesis import HealthCheck, settings

# Property tests run a fixed, derandomized profile in the suite (about a minute in all); for a longer
# hunt: HYPOTHESIS_PROFILE=long pytest tests -k props
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"


class _SnapshotsDirExtension(pytest_textual_snapshot.SVGImageExtension):
    """The plugin's SVG extension, pointed at the repository's snapshots/ folder."""

    @classmethod
    def dirname(cls, *, test_location):  # type: ignore[no-untyped-def, override]
        return str(_SNAPSHOTS / test_location.basename)


# snap_compare looks the extension up in its module at call time, so replacing it here redirects it.
pytest_textual_snapshot.SVGImageExtension = _SnapshotsDirExtension  # type: ignore[misc]


async def _settle(pilot: Any) -> None:
    """Let a MonitorApp's source start, then ingest everything it delivered and repaint."""
    app = pilot.app
    for _ in range(100):
        await pilot.pause(0.01)
        if app.inbox or app.ingested:
            break
    app.drain_all()
    await pilot.pause()


@pytest.fixture
def settle() -> Callable[[Any], Awaitable[None]]:
    """`await settle(pilot)`: the monitor has taken in its first events (tests of kbert_tui.tui)."""
    return _settle
