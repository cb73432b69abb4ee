"""A third-party plugin distribution (tests/plugin_dist) installed with pip, found by entry point."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kbert_tui.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, PluginManager, resolve_plugin

DIST = Path(__file__).parent / "plugin_dist"
DIST_NAME = "kbert-tui-hello-plugin"


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def hello_installed(tmp_path_factory):
    """Install the distribution into this interpreter's environment; uninstall afterwards.

    Where the environment refuses (an externally managed Python), install it into a folder put on
    sys.path instead: entry points are found the same way.
    """
    done = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(DIST))
    target = None
    if done.returncode != 0:
        assert "externally-managed" in done.stderr, done.stderr
        target = tmp_path_factory.mktemp("site")
        done = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(DIST))
        assert done.returncode == 0, done.stderr
        sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield
    if target is None:
        _pip("uninstall", "-y", DIST_NAME)
    else:
        sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("kbert_hello_plugin")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_the_entry_point_is_registered(hello_installed):
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "hello"]
    assert [ep.value for ep in found] == ["kbert_hello_plugin:HelloPlugin"]
    assert resolve_plugin("hello").__module__ == "kbert_hello_plugin"
    assert str(DIST) not in str(sys.modules["kbert_hello_plugin"].__file__)  # the installed copy


async def test_installed_plugin_loads_runs_and_cleans_up(hello_installed, recording_bus):
    manager = PluginManager(recording_bus, {"greeter": {"plugin": "hello", "greeting": "moin"}}, run_id="r1")
    await manager.start()
    for epoch in (1, 2):
        await recording_bus.emit("training.epoch_completed", {"epoch": epoch, "metrics": {}}, correlation_id="r1")
    await recording_bus.flush()
    await manager.close()
    await recording_bus.flush()

    recording_bus.assert_emitted("plugin.loaded", count=1, plugin_name="greeter", version="0.1.0", spec="hello")
    greetings = recording_bus.assert_emitted("hello.epoch", count=2, greeting="moin")
    assert [e.data["epoch"] for e in greetings] == [1, 2]
    assert greetings[0].source == "plugin:greeter"
    recording_bus.assert_emitted("hello.goodbye", count=1, epochs_seen=2)
    recording_bus.assert_order("plugin.activated", "hello.epoch", "hello.goodbye", "plugin.deactivated")
    recording_bus.assert_not_emitted("plugin.error")


def test_builtins_are_registered_as_entry_points_in_pyproject():
    import tomllib

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    registered = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    assert registered == BUILTIN_PLUGINS, (
        f'pyproject.toml [project.entry-points."{ENTRY_POINT_GROUP}"] should list the built-ins: {BUILTIN_PLUGINS}'
    )
    installed = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)
                 if ep.dist is not None and ep.dist.name == "kbert-tui"}
    if installed:  # an install older than the pyproject lines has none; `pip install -e .` refreshes them
        assert installed == BUILTIN_PLUGINS
