"""A package of this repository as of an earlier git revision, imported under a private name.

Benchmarks use it to measure the code before a change beside the code now, in one process.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_package_at(rev: str, package: str) -> ModuleType:
    """`package` (a folder such as "kbert_tui/events") as of git `rev`, imported as a fresh private package.

    Its relative imports stay inside the old copy; absolute imports of the project reach today's code.
    """
    name = "_baseline_" + "".join(c if c.isalnum() else "_" for c in f"{package}_{rev}")
    if name in sys.modules:
        return sys.modules[name]
    root = Path(tempfile.mkdtemp(prefix="kbert-baseline-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, package], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    folder = root / package
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
