"""A minimal PEP 517 build backend: packs the [project] table and one package into a wheel.

Enough for `pip install` of this test distribution without network or setuptools/wheel.
"""

from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _project() -> dict:
    return tomllib.loads((_ROOT / "pyproject.toml").read_text())["project"]


def _names(project: dict) -> tuple[str, str, str]:
    dist = project["name"].replace("-", "_")
    return dist, project["version"], f"{dist}-{project['version']}.dist-info"


def _metadata(project: dict) -> dict[str, str]:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}",
             f"Summary: {project.get('description', '')}"]
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {req}" for req in project.get("dependencies", [])]
    entry_points = []
    for group, items in project.get("entry-points", {}).items():
        entry_points.append(f"[{group}]")
        entry_points += [f"{name} = {target}" for name, target in items.items()]
    return {
        "METADATA": "\n".join(lines) + "\n",
        "WHEEL": "Wheel-Version: 1.0\nGenerator: plain_wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "entry_points.txt": "\n".join(entry_points) + "\n",
    }


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    project = _project()
    _, _, info = _names(project)
    target = Path(metadata_directory) / info
    target.mkdir(parents=True, exist_ok=True)
    for name, text in _metadata(project).items():
        (target / name).write_text(text)
    return info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = _project()
    dist, version, info = _names(project)
    files = {p.relative_to(_ROOT).as_posix(): p.read_bytes()
             for p in sorted((_ROOT / "kbert_hello_plugin").rglob("*.py"))}
    files.update({f"{info}/{name}": text.encode() for name, text in _metadata(project).items()})
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel_name = f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel_name, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel_name
