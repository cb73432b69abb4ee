"""OpenBLAS under MLX: the pip wheel's (or a system one) loaded after numpy and before mlx.core, the
library MLX really calls checked afterwards, the thread count chosen, a one-line hint when it's slow."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = (
    "import json, sys; from kbert_tui import blas; info = blas.ensure_fast_blas(); import mlx.core; "
    "checked = blas.verify_binding(); "
    "print(json.dumps({**checked.as_dict(), 'loaded': info.name, 'bound': blas._bound_library('cblas_sgemm'), "
    "'env_threads': __import__('os').environ.get('OPENBLAS_NUM_THREADS')}))"
)
DEBIAN = Path(f"/usr/lib/{platform.machine()}-linux-gnu/openblas-pthread/libopenblas.so.0")


def _has_pip_openblas() -> bool:
    try:
        importlib.metadata.distribution("ngsolve-openblas")
    except importlib.metadata.PackageNotFoundError:
        return False
    return sys.platform == "linux" and platform.machine() == "x86_64"


needs_pip_openblas = pytest.mark.skipif(not _has_pip_openblas(),
                                        reason="the ngsolve-openblas wheel is Linux x86_64 only")
needs_debian = pytest.mark.skipif(not DEBIAN.exists(), reason="Debian's libopenblas0-pthread is not installed")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="BLAS interposition is for MLX's Linux CPU wheel")


def probe(env_value: str | None, *, before: str = "", env: dict[str, str] | None = None) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ("KBERT_TUI_BLAS", "OPENBLAS_NUM_THREADS")}
    if env_value is not None:
        environment["KBERT_TUI_BLAS"] = env_value
    environment.update(env or {})
    out = subprocess.run([sys.executable, "-c", before + PROBE], env=environment, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_pip_openblas
def test_the_pip_wheels_openblas_is_used_by_default():
    info = probe(None)
    assert info["name"] == "openblas" and info["source"] == "pip" and info["hint"] is None
    assert "ngsolve_openblas" in info["path"] and info["version"].startswith("OpenBLAS ")
    assert Path(info["bound"]).resolve() == Path(info["path"]).resolve()  # MLX's sgemm calls land in it
    assert info["summary"].startswith("OpenBLAS 0.3.") and "pip" in info["summary"]


@needs_pip_openblas
def test_pip_mode_ignores_system_libraries():
    info = probe("pip", env={"LD_LIBRARY_PATH": str(DEBIAN.parent)})
    assert info["source"] == "pip" and "ngsolve_openblas" in info["path"]


def test_pip_mode_without_the_wheel_says_why():
    info = probe("pip", before="import importlib.metadata as m; m.distribution = "
                               "lambda name: (_ for _ in ()).throw(m.PackageNotFoundError(name)); ")
    assert info["name"] == "reference" and "ngsolve-openblas is not installed" in info["hint"]


def test_missing_library_gives_an_install_hint():
    info = probe("/nonexistent/libopenblas.so.0")
    assert info["name"] == "reference"
    assert "apt-get install libopenblas0-pthread" in info["hint"]


def test_off_keeps_the_bundled_blas_and_the_check_sees_it():
    info = probe("off")
    assert (info["name"], info["path"], info["hint"], info["summary"]) == ("reference", None, None, "reference")
    assert "mlx_cpu.libs/libblas" in info["bound"]  # what the binding check reads when nothing is interposed


@needs_pip_openblas
def test_a_loaded_openblas_that_mlx_does_not_call_is_said_plainly():
    # Loaded without RTLD_GLOBAL, OpenBLAS is in the process but MLX keeps its own BLAS (as a new wheel layout might).
    info = probe(None, before="import ctypes; ctypes.RTLD_GLOBAL = ctypes.RTLD_LOCAL; ")
    assert info["loaded"] == "openblas" and info["name"] == "reference"
    assert "libblas" in info["path"] and "still calls" in info["hint"]


@needs_pip_openblas
def test_too_late_after_mlx_was_imported():
    info = probe(None, before="import mlx.core; ")
    assert info["name"] == "reference" and "before mlx.core" in info["hint"]


@needs_pip_openblas
def test_threads_default_to_the_cores_less_one_and_the_setting_does_not_leak():
    from kbert_tui.blas import default_threads

    info = probe(None)
    assert info["threads"] == default_threads() == max(1, len(os.sched_getaffinity(0)) - 1)
    assert info["env_threads"] is None  # read by OpenBLAS at load, not handed on to child processes
    assert probe(None, env={"OPENBLAS_NUM_THREADS": "2"})["threads"] == 2


@needs_pip_openblas
def test_set_threads_changes_the_pool_after_loading():
    code = ("from kbert_tui import blas; blas.ensure_fast_blas(); import mlx.core; "
            "print(blas.set_threads(3).threads, blas.verify_binding().describe())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "KBERT_TUI_BLAS": ""})
    threads, summary = out.stdout.strip().split(" ", 1)
    assert threads == "3" and summary.endswith("3 threads)")


def test_summary_names_version_source_kernel_and_threads():
    from kbert_tui.blas import BlasInfo

    info = BlasInfo("openblas", "/x/libopenblas.so.0", None, "pip",
                    "OpenBLAS 0.3.33 DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=128", "Cooperlake", 1)
    assert info.describe() == "OpenBLAS 0.3.33 (pip, Cooperlake, 1 thread)"
    assert BlasInfo("reference", None, None).describe() == "reference"


@needs_debian
def test_system_mode_loads_debians_openblas():
    info = probe("system")
    assert info["name"] == "openblas" and info["source"] == "system" and "openblas-pthread" in info["path"]
