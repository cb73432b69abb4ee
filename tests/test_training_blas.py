"""OpenBLAS under MLX: loaded before mlx.core when it can be, a one-line install hint when it can't."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = (
    "import json, sys; from kbert_tui.training import BLAS; import mlx.core; "
    "print(json.dumps(BLAS.as_dict()))"
)
OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")


def probe(env_value: str | None, *, pre_import_mlx: bool = False) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k != "KBERT_TUI_BLAS"}
    if env_value is not None:
        env["KBERT_TUI_BLAS"] = env_value
    code = ("import mlx.core; " if pre_import_mlx else "") + PROBE
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not OPENBLAS.exists(), reason="Debian's libopenblas0-pthread is not installed")
def test_openblas_is_loaded_before_mlx():
    info = probe(None)
    assert info["name"] == "openblas" and "libopenblas" in info["path"] and info["hint"] is None


def test_missing_library_gives_an_install_hint():
    info = probe("/nonexistent/libopenblas.so.0")
    assert info["name"] == "reference"
    assert "apt-get install libopenblas0-pthread" in info["hint"]


def test_off_keeps_the_bundled_blas():
    assert probe("off") == {"name": "reference", "path": None, "hint": None}


@pytest.mark.skipif(not OPENBLAS.exists(), reason="Debian's libopenblas0-pthread is not installed")
def test_too_late_after_mlx_was_imported():
    info = probe(None, pre_import_mlx=True)
    assert info["name"] == "reference" and "before mlx.core" in info["hint"]
