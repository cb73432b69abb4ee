"""A clean, non-editable `pip install` alone gives MLX a fast BLAS: the pip wheel's OpenBLAS, with every
system library ignored, makes a training step at least 5x faster than MLX's bundled reference BLAS."""

from __future__ import annotations

import importlib.util
import platform
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_blas.py"
NETWORK_TROUBLE = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                             r"resolution|Network is unreachable|ProxyError|ConnectTimeout|Read timed out")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="the pip-only OpenBLAS (ngsolve-openblas) is for Linux x86_64"),
]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_blas", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> str:
    home = tmp_path_factory.mktemp("fresh-venv")
    venv.create(home, with_pip=True)
    python = str(home / "bin" / "python")
    result = subprocess.run([python, "-m", "pip", "install", "--quiet", "--retries", "1", "--timeout", "20", str(ROOT)],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        if NETWORK_TROUBLE.search(result.stderr + result.stdout):
            pytest.skip("no package index reachable for a fresh install")
        pytest.fail(f"pip install {ROOT} failed:\n{result.stderr[-3000:]}")
    return python


def test_a_fresh_install_trains_on_the_pip_openblas_5x_faster(fresh_python):
    bench = _load_bench()
    # A model a little wider than the demo's so BLAS dominates the step and the ratio is steady under load.
    fast = bench.run_child(fresh_python, "pip", 1, repeats=3, hidden=192)
    slow = bench.run_child(fresh_python, "off", 1, repeats=3, hidden=192)
    venv_dir = str(Path(fresh_python).parents[1])
    assert fast["module"].startswith(venv_dir)  # the installed copy, not this checkout
    blas = fast["blas"]
    assert blas["name"] == "openblas" and blas["source"] == "pip" and blas["path"].startswith(venv_dir), blas
    assert blas["hint"] is None and slow["blas"]["name"] == "reference"
    assert fast["first_loss"] == pytest.approx(slow["first_loss"], rel=1e-4)  # the same numbers, only faster
    ratio = slow["median_ms"] / fast["median_ms"]
    print(f"\nstep: reference {slow['median_ms']:.0f} ms, {fast['describe']} {fast['median_ms']:.0f} ms: {ratio:.1f}x")
    assert ratio >= 5, f"pip OpenBLAS only {ratio:.1f}x faster than the reference BLAS"
