"""Shared test setup: pytest-textual-snapshot stores its SVGs under snapshots/ (not tests/__snapshots__/)."""

from __future__ import annotations

from pathlib import Path

import pytest_textual_snapshot

_SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"


class _SnapshotsDirExtension(pytest_textual_snapshot.SVGImageExtension):
    """The plugin's SVG extension, pointed at the repository's snapshots/ folder."""

    @classmethod
    def dirname(cls, *, test_location):  # type: ignore[no-untyped-def, override]
        return str(_SNAPSHOTS / test_location.basename)


# snap_compare looks the extension up in its module at call time, so replacing it here redirects it.
pytest_textual_snapshot.SVGImageExtension = _SnapshotsDirExtension  # type: ignore[misc]
