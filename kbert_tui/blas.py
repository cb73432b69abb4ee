"""Put a fast BLAS under MLX on Linux CPUs.

MLX's Linux CPU wheel bundles a reference BLAS; a small BERT step runs ~10x faster when an OpenBLAS
is loaded into the global symbol scope *after* numpy and *before* `mlx.core` is imported, because
MLX's BLAS calls then bind to it. `ensure_fast_blas()` does that once and says what it found.

Where the library comes from (``KBERT_TUI_BLAS``):

- unset: on Linux x86_64 the OpenBLAS of the ``ngsolve-openblas`` wheel (a dependency there; its
  runtime kernel choice measured ~2x faster than Debian's 0.3.21), else a system OpenBLAS;
- ``pip``: only the wheel's library, never a system one (CI proves the pip-only path with it);
- ``system``: only a system OpenBLAS;
- ``off``: keep MLX's bundled reference BLAS;
- a path: load that library.

`verify_binding()` checks, once `mlx.core` is loaded, which library MLX's `cblas_sgemm` really
resolved to, so a future wheel layout that keeps calling the reference BLAS is said plainly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import importlib.metadata
import os
import platform
import shutil
import struct
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "BlasInfo",
    "INSTALL_HINT",
    "default_threads",
    "ensure_fast_blas",
    "set_threads",
    "verify_binding",
]

INSTALL_HINT = (
    "MLX is using its bundled reference BLAS, which is slow on CPU; for ~10x faster training "
    + ("reinstall kbert-tui with pip (it brings the ngsolve-openblas wheel) or "
       if platform.machine() == "x86_64" else "")
    + "install OpenBLAS: sudo apt-get install libopenblas0-pthread"
)
PIP_DISTRIBUTION = "ngsolve-openblas"
MLX_CPU_DISTRIBUTION = "mlx-cpu"

_SYSTEM_CANDIDATES = (
    "/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_OFF = ("off", "0", "no", "reference")
_PROBE_SYMBOL = "cblas_sgemm"  # the call behind every float32 matmul on MLX's CPU stream


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "openblas", "reference", "accelerate" or "platform"
    path: str | None
    hint: str | None  # what to do to get the fast path, when it is missing
    source: str | None = None  # "pip", "system" or "path" for an OpenBLAS we loaded
    version: str | None = None  # openblas_get_config(): version and build options
    kernel: str | None = None  # openblas_get_corename(): the CPU kernels chosen at run time
    threads: int | None = None  # OpenBLAS worker threads

    def as_dict(self) -> dict[str, str | int | None]:
        """The fields and `summary`, the one-line description (training.started carries it)."""
        return {**asdict(self), "summary": self.describe()}

    def describe(self) -> str:
        """One line for the headless header and the Training pane: which BLAS, from where, how many threads."""
        if self.name != "openblas":
            return self.name
        parts = [p for p in (self.source, self.kernel) if p]
        if self.threads:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        version = (self.version or "").split(" ")[:2]
        head = " ".join(version) if len(version) == 2 and version[0] == "OpenBLAS" else "openblas"
        return f"{head} ({', '.join(parts)})" if parts else head


_info: BlasInfo | None = None
_library: ctypes.CDLL | None = None
_bound: str | None = ""  # the library MLX's cblas_sgemm resolved to; "" until verify_binding() looked


def ensure_fast_blas() -> BlasInfo:
    """Load OpenBLAS globally before MLX, once per process; report which BLAS MLX will use."""
    global _info
    if _info is None:
        _info = _load()
    return _info


def default_threads() -> int:
    """Cores this process may use minus one for the monitor and the event loop (at least 1).

    Measured on 2 cores: 2 threads were ~20% faster on a quiet machine, but spinning OpenBLAS workers
    made a step 2.4x slower than 1 thread once anything else ran (the monitor does).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def set_threads(count: int) -> BlasInfo:
    """Use `count` OpenBLAS threads from now on (0: OPENBLAS_NUM_THREADS, else `default_threads()`)."""
    global _info
    info = ensure_fast_blas()
    if count <= 0:
        count = _positive_int(os.environ.get("OPENBLAS_NUM_THREADS")) or default_threads()
    if _library is None or count == info.threads:
        return info
    _library.openblas_set_num_threads(ctypes.c_int(count))
    _info = dataclasses.replace(info, threads=_threads_in_use())
    return _info


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text or "")
    except ValueError:
        return None
    return value if value > 0 else None


def verify_binding() -> BlasInfo:
    """After `mlx.core` is imported: the info, corrected if MLX still calls a reference BLAS.

    The first call runs one tiny matmul on the CPU so that MLX's lazily bound `cblas_sgemm` is
    resolved, then reads the address it resolved to and names the library that holds it.
    """
    global _bound
    info = ensure_fast_blas()
    if info.name != "openblas" or sys.platform != "linux":
        return info
    if _bound == "":
        _bound = _bound_library(_PROBE_SYMBOL)
    if _bound is None or "openblas" in Path(_bound).name:
        return info
    return dataclasses.replace(info, name="reference", path=_bound, hint=(
        f"OpenBLAS ({info.path}) is loaded but MLX still calls {Path(_bound).name} for {_PROBE_SYMBOL} "
        "(a wheel layout kbert-tui does not know), so training is slow; please report it, or try "
        "KBERT_TUI_BLAS=system after installing libopenblas0-pthread"))


# ---------------------------------------------------------------------- loading


def _load() -> BlasInfo:
    if sys.platform != "linux":
        return BlasInfo("accelerate" if sys.platform == "darwin" else "platform", None, None)
    setting = os.environ.get("KBERT_TUI_BLAS", "").strip()
    if setting.lower() in _OFF:
        return BlasInfo("reference", None, None)
    already = _loaded_openblas()
    if already:
        source = "pip" if "ngsolve_openblas" in already else "system" if already.startswith("/usr/") else "path"
        return _loaded(already, source, None)
    if "mlx.core" in sys.modules:
        # Too late to interpose: MLX has already bound its BLAS symbols.
        return BlasInfo("reference", None, "import kbert_tui.training before mlx.core to use OpenBLAS")
    import numpy  # noqa: F401  -- first: numpy's own OpenBLAS would otherwise bind its internal symbols to ours

    # OpenBLAS sizes its thread pool from this variable when it loads; child processes keep theirs.
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(default_threads()))
    try:
        return _load_openblas(setting)
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)


def _load_openblas(setting: str) -> BlasInfo:
    mode = setting.lower()
    if mode in ("", "pip"):
        info = _load_pip()
        if info is not None or mode == "pip":
            return info or BlasInfo("reference", None, f"KBERT_TUI_BLAS=pip but the {PIP_DISTRIBUTION} wheel's "
                                                       f"library could not be loaded: {_pip_problem}")
    paths = _system_candidates() if mode in ("", "system") else [setting]
    for path in paths:
        try:
            library = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return _loaded(path, "system" if mode in ("", "system") else "path", library)
    return BlasInfo("reference", None, INSTALL_HINT)


_pip_problem = ""


def _load_pip() -> BlasInfo | None:
    """The wheel's OpenBLAS, found through package metadata (importing its package prints errors)."""
    global _pip_problem
    library = _distribution_file(PIP_DISTRIBUTION, "libopenblas")
    gfortran = _distribution_file(MLX_CPU_DISTRIBUTION, "libgfortran")
    quadmath = _distribution_file(MLX_CPU_DISTRIBUTION, "libquadmath")
    if library is None:
        _pip_problem = f"{PIP_DISTRIBUTION} is not installed"
        return None
    if gfortran is None or quadmath is None:
        _pip_problem = f"{MLX_CPU_DISTRIBUTION} does not bundle libgfortran/libquadmath"
        return None
    # The wheel's library needs libgfortran.so.5 beside it ($ORIGIN rpath); mlx_cpu.libs has it under a
    # hashed name, so a private folder of two links stands in. Once loaded the folder is not needed.
    folder = Path(tempfile.mkdtemp(prefix="kbert-tui-blas-"))
    try:
        (folder / "libopenblas.so.0").symlink_to(library)
        (folder / "libgfortran.so.5").symlink_to(gfortran)
        ctypes.CDLL(str(quadmath))  # found by its hashed soname when libgfortran asks for it
        loaded = ctypes.CDLL(str(folder / "libopenblas.so.0"), mode=ctypes.RTLD_GLOBAL)
    except OSError as error:
        _pip_problem = str(error)
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _loaded(str(library), "pip", loaded)


def _distribution_file(distribution: str, stem: str) -> Path | None:
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.startswith(stem) and ".so" in file.name:
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    return None


def _loaded(path: str, source: str, library: ctypes.CDLL | None) -> BlasInfo:
    global _library
    try:
        _library = library or ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        _library.openblas_get_config.restype = _library.openblas_get_corename.restype = ctypes.c_char_p
        version, kernel = (_text(_library.openblas_get_config()), _text(_library.openblas_get_corename()))
    except (OSError, AttributeError):
        _library, version, kernel = None, None, None
    return BlasInfo("openblas", path, None, source, version, kernel, _threads_in_use())


def _text(value: bytes | None) -> str | None:
    return (value or b"").decode(errors="replace").strip() or None


def _threads_in_use() -> int | None:
    if _library is None:
        return None
    try:
        return int(_library.openblas_get_num_threads())
    except AttributeError:
        return None


def _system_candidates() -> list[str]:
    arch = platform.machine() or "x86_64"
    paths = [p.format(arch=arch) for p in _SYSTEM_CANDIDATES]
    found = ctypes.util.find_library("openblas")
    if found:
        paths.append(found)
    return [p for p in paths if "/" not in p or Path(p).exists()]


def _loaded_openblas() -> str | None:
    for _, _, path in _mappings():
        if "libopenblas" in path:
            return path
    return None


# ---------------------------------------------------------------------- which library MLX calls


def _mappings() -> list[tuple[int, int, str]]:
    """(start, end, path) of every file mapped into this process."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, fields[5]))
    return out


def _bound_library(symbol: str) -> str | None:
    """The file holding the function libmlx's `symbol` resolved to, or None when that can't be read."""
    maps = _mappings()
    mlx_paths = [p for _, _, p in maps if Path(p).name == "libmlx.so"]
    if not mlx_paths:
        return None
    libmlx = mlx_paths[0]
    slot = _relocation_offset(Path(libmlx), symbol)
    if slot is None:
        return libmlx  # MLX does not import the symbol: its BLAS is built in, not ours
    import mlx.core as mx

    with mx.stream(mx.cpu):  # lazy binding: the slot is filled at the first call
        mx.eval(mx.ones((4, 4)) @ mx.ones((4, 4)))
    base = min(start for start, _, p in maps if p == libmlx)
    target = ctypes.c_uint64.from_address(base + slot).value
    for start, end, path in _mappings():
        if start <= target < end:
            return None if path == libmlx else path  # still in libmlx: the PLT stub, not resolved yet
    return None


def _relocation_offset(path: Path, symbol: str) -> int | None:
    """Where (relative to the load base) the dynamic linker stores `symbol`'s address: its GOT slot."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None  # only 64-bit little-endian ELF is read here
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 4 or not entsize:  # SHT_RELA
            continue
        symtab = sections[link]
        strtab = sections[symtab[6]]
        for r in range(offset, offset + size, entsize):
            r_offset, r_info = struct.unpack_from("<QQ", data, r)
            st_name, = struct.unpack_from("<I", data, symtab[4] + (r_info >> 32) * symtab[9])
            name_at = strtab[4] + st_name
            if data[name_at:data.index(b"\0", name_at)].decode(errors="replace") == symbol:
                return r_offset
    return None
