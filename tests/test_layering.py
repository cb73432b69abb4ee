"""The package's layering, checked on the source: arrows point one way.

events imports nothing of the project; only tui imports textual; nothing imports tui but the CLI (lazily);
state is plain Python; training, system and plugins talk to each other only through events.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kbert_tui"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at_top_level) for every import in `path`, relative imports resolved."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, id(node) in top_level))
    return found


def _modules(subpackage: str) -> list[Path]:
    root = PACKAGE / subpackage
    return sorted(root.rglob("*.py")) if root.is_dir() else [PACKAGE / f"{subpackage}.py"]


def _violations(subpackage: str, allowed: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _modules(subpackage):
        for module, _ in _imports(path):
            if module.startswith("kbert_tui") and not module.startswith(allowed):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    return bad


def test_events_imports_nothing_of_the_project():
    assert _violations("events", ("kbert_tui.events",)) == []


@pytest.mark.parametrize("subpackage", ["state"])
def test_state_depends_on_events_only(subpackage):
    assert _violations(subpackage, ("kbert_tui.events", f"kbert_tui.{subpackage}")) == []


@pytest.mark.parametrize("subpackage", ["training", "system", "plugins"])
def test_producers_talk_through_events(subpackage):
    allowed = ("kbert_tui.events", "kbert_tui.config", "kbert_tui.errors", "kbert_tui.blas", "kbert_tui.policy",
               "kbert_tui.control", f"kbert_tui.{subpackage}")
    assert _violations(subpackage, allowed) == []


def test_remote_depends_on_events_and_config_only():
    assert _violations("remote", ("kbert_tui.events", "kbert_tui.config", "kbert_tui.remote")) == []


def test_only_tui_imports_textual():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        if "tui" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for module, _ in _imports(path):
            if module == "textual" or module.startswith("textual."):
                bad.append(str(path.relative_to(PACKAGE.parent)))
    assert bad == []


COMMANDS = ("cli.py", "watch.py")  # the command line and `kbert-tui watch`, which opens the monitor on a child


def test_nothing_imports_tui_except_the_cli_lazily():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "tui":
            continue
        for module, top_level in _imports(path):
            if module.startswith("kbert_tui.tui") and (str(rel) not in COMMANDS or top_level):
                bad.append(f"{rel} imports {module}" + (" at import time" if top_level else ""))
    assert bad == []
