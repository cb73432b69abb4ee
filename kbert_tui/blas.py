"""Put a fast BLAS under MLX on Linux CPUs.

MLX's Linux CPU wheel bundles a reference BLAS; a small BERT step runs ~10x faster when Debian's
OpenBLAS is loaded into the global symbol scope *before* `mlx.core` is imported, because MLX's
BLAS calls then bind to it. `ensure_fast_blas()` does that once and says what it found.
Set ``KBERT_TUI_BLAS=off`` to keep the bundled BLAS, or to a library path to load that one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["BlasInfo", "ensure_fast_blas", "INSTALL_HINT"]

INSTALL_HINT = (
    "MLX is using its bundled reference BLAS, which is slow on CPU; for ~10x faster training install "
    "OpenBLAS: sudo apt-get install libopenblas0-pthread"
)

_CANDIDATES = (
    "/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "openblas" or "reference"
    path: str | None
    hint: str | None  # what to do to get the fast path, when it is missing

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


_info: BlasInfo | None = None


def ensure_fast_blas() -> BlasInfo:
    """Load OpenBLAS globally before MLX, once per process; report which BLAS MLX will use."""
    global _info
    if _info is None:
        _info = _load()
    return _info


def _load() -> BlasInfo:
    if sys.platform != "linux":
        return BlasInfo("accelerate" if sys.platform == "darwin" else "platform", None, None)
    setting = os.environ.get("KBERT_TUI_BLAS", "").strip()
    if setting.lower() in ("off", "0", "no", "reference"):
        return BlasInfo("reference", None, None)
    already = _loaded_openblas()
    if already:
        return BlasInfo("openblas", already, None)
    if "mlx.core" in sys.modules:
        # Too late to interpose: MLX has already bound its BLAS symbols.
        return BlasInfo("reference", None, "import kbert_tui.training before mlx.core to use OpenBLAS")
    for path in _candidates(setting):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return BlasInfo("openblas", path, None)
    return BlasInfo("reference", None, INSTALL_HINT)


def _candidates(setting: str) -> list[str]:
    if setting:
        return [setting]
    arch = platform.machine() or "x86_64"
    paths = [p.format(arch=arch) for p in _CANDIDATES]
    found = ctypes.util.find_library("openblas")
    if found:
        paths.append(found)
    return [p for p in paths if "/" not in p or Path(p).exists()]


def _loaded_openblas() -> str | None:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        if "libopenblas" in line:
            return line.split()[-1]
    return None
