"""PluginManager and PluginPort: lifecycle events, loading, messages and every way a plugin can fail."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from kbert_tui.config import option
from kbert_tui.plugins import (
    BUILTIN_PLUGINS,
    PluginLoadError,
    PluginManager,
    PluginPort,
    PluginState,
    resolve_plugin,
)
from kbert_tui.plugins.builtin import BestModelPlugin


class Echo(PluginPort):
    """Counts `demo.ping` events and answers each with `demo.pong`."""

    name = "echo"
    version = "2.1.0"
    capabilities = ("demo",)

    async def initialize(self) -> None:
        self.pings = 0
        self.messages: list[tuple[str, dict]] = []
        await self.subscribe("demo.ping", self.on_ping)

    async def on_ping(self, event) -> None:
        self.pings += 1
        await self.emit("demo.pong", {"n": self.pings}, correlation_id=event.correlation_id)

    async def on_message(self, sender, message) -> None:
        self.messages.append((sender, message))
        if message.get("reply"):
            await self.send_message(sender, {"got": message})


class Raising(PluginPort):
    name = "raising"

    async def initialize(self) -> None:
        self.calls = 0
        await self.subscribe("demo.ping", self.on_ping)

    def on_ping(self, event) -> None:
        self.calls += 1
        raise ValueError(f"bad ping {self.calls}")


class Hanging(PluginPort):
    name = "hanging"

    async def initialize(self) -> None:
        self.started = 0
        self.cancelled = 0
        await self.subscribe("demo.ping", self.on_ping)

    async def on_ping(self, event) -> None:
        self.started += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FailingInit(PluginPort):
    name = "failing_init"

    async def initialize(self) -> None:
        await self.subscribe("demo.ping", self.on_ping)  # made before the failure: must be undone
        raise RuntimeError("cannot reach the dashboard")

    def on_ping(self, event) -> None:
        raise AssertionError("a plugin whose initialize failed must get no events")


class SlowInit(PluginPort):
    async def initialize(self) -> None:
        await asyncio.sleep(3600)


class NotAPlugin:
    pass


def _data(bus, pattern, **kw):
    return [e.data for e in bus.emitted(pattern, **kw)]


async def _ping(bus, n=1):
    for _ in range(n):
        await bus.emit("demo.ping", {}, source="test", correlation_id="run-1")
    await bus.flush()


async def test_lifecycle_events_in_order_with_payloads(recording_bus, tmp_path):
    manager = PluginManager(recording_bus, {"mine": {"plugin": Echo, "greeting": "hi"}},
                            output_dir=tmp_path, run_id="run-1")
    await manager.start()
    await _ping(recording_bus, 2)
    echo = manager.plugins["mine"]
    assert echo.instance_name == "mine" and echo.config == {"greeting": "hi"}
    assert echo.context.output_dir == tmp_path and echo.context.run_id == "run-1"
    await manager.close()
    await recording_bus.flush()

    recording_bus.assert_order("plugin.loaded", "plugin.initialized", "plugin.activated", "demo.pong",
                               "plugin.deactivated")
    loaded = recording_bus.assert_emitted("plugin.loaded", count=1)[0]
    assert loaded.source == "plugin:mine" and loaded.correlation_id == "run-1"
    assert loaded.data["plugin_name"] == "mine" and loaded.data["version"] == "2.1.0"
    assert _data(recording_bus, "plugin.initialized") == [{"plugin_name": "mine", "config": {"greeting": "hi"}}]
    assert _data(recording_bus, "plugin.activated")[0]["capabilities"] == ["demo"]
    assert _data(recording_bus, "plugin.deactivated") == [{"plugin_name": "mine", "reason": "shutdown",
                                                           "events_handled": 2}]
    states = [(d["old_state"], d["new_state"]) for d in _data(recording_bus, "plugin.state_changed")]
    assert states == [("unloaded", "loaded"), ("loaded", "initialized"), ("initialized", "active"),
                      ("active", "deactivated")]
    pongs = recording_bus.emitted("demo.pong")
    assert [p.data["n"] for p in pongs] == [1, 2]
    assert pongs[0].source == "plugin:mine" and pongs[0].correlation_id == "run-1"
    # cleanup undid the subscription: pings after close reach nobody
    assert echo.subscription_ids == []
    await _ping(recording_bus)
    assert len(recording_bus.emitted("demo.pong")) == 2


async def test_import_error_is_reported_and_the_others_still_run(recording_bus):
    manager = PluginManager(recording_bus, {
        "broken": {"plugin": "no_such_package.module:Plugin"},
        "echo": {"plugin": Echo},
    })
    await manager.start()
    await _ping(recording_bus)
    await manager.close()
    err = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="broken")[0].data
    assert err["stage"] == "load" and err["fatal"] is True
    assert "no_such_package" in err["error"]
    assert manager.state("broken") is PluginState.FAILED
    recording_bus.assert_emitted("demo.pong", count=1)


@pytest.mark.parametrize("spec, expected", [
    ("kbert_tui.plugins.builtin.best_model:NoSuchClass", "has no 'NoSuchClass'"),
    ("no_plugin_by_this_name", "no plugin named 'no_plugin_by_this_name'"),
    (NotAPlugin, "not a PluginPort subclass"),
])
def test_resolve_explains_what_is_wrong(spec, expected):
    with pytest.raises(PluginLoadError, match=expected):
        resolve_plugin(spec)


def test_resolve_by_dotted_path_and_by_builtin_name():
    assert resolve_plugin("kbert_tui.plugins.builtin.best_model:BestModelPlugin") is BestModelPlugin
    assert resolve_plugin("best_model") is BestModelPlugin
    for name in BUILTIN_PLUGINS:
        assert resolve_plugin(name).name == name


async def test_failing_initialize_sets_the_plugin_aside(recording_bus):
    manager = PluginManager(recording_bus, {"bad": {"plugin": FailingInit}, "echo": {"plugin": Echo}})
    await manager.start()
    await _ping(recording_bus)  # FailingInit's handler would raise AssertionError if it ran
    await manager.close()
    err = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="bad")[0].data
    assert err["stage"] == "initialize" and "cannot reach the dashboard" in err["error"]
    recording_bus.assert_not_emitted("plugin.activated", plugin_name="bad")
    recording_bus.assert_emitted("plugin.deactivated", count=1, plugin_name="bad")
    recording_bus.assert_not_emitted("bus.handler_error")
    assert manager.state("bad") is PluginState.FAILED and manager.state("echo") is PluginState.DEACTIVATED
    recording_bus.assert_emitted("demo.pong", count=1)


async def test_initialize_that_hangs_times_out(recording_bus):
    manager = PluginManager(recording_bus, {"slow": {"plugin": SlowInit}}, init_timeout_s=0.05)
    await manager.start()
    await manager.close()
    err = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="slow")[0].data
    assert err["stage"] == "initialize" and "longer than 0.05 s" in err["error"]


async def test_handler_that_keeps_raising_is_set_aside_after_max_errors(recording_bus):
    manager = PluginManager(recording_bus, {"r": {"plugin": Raising, "max_errors": 3}, "echo": {"plugin": Echo}})
    await manager.start()
    raising = manager.plugins["r"]
    await _ping(recording_bus, 6)
    errors = recording_bus.assert_emitted("plugin.error", count=3, plugin_name="r")
    assert [e.data["fatal"] for e in errors] == [False, False, True]
    assert errors[0].data["error"] == "ValueError: bad ping 1" and errors[0].data["event_name"] == "demo.ping"
    assert errors[0].data["error_count"] == 1 and errors[0].data["max_errors"] == 3
    assert raising.calls == 3  # set aside: pings 4-6 never reach it
    assert manager.state("r") is PluginState.FAILED and "r" not in manager.plugins
    recording_bus.assert_emitted("plugin.state_changed", count=1, plugin_name="r", new_state="failed")
    recording_bus.assert_emitted("demo.pong", count=6)  # the other plugin saw every ping
    recording_bus.assert_not_emitted("bus.handler_error")  # nothing escaped to the bus
    await manager.close()
    # a set-aside plugin is not deactivated twice
    recording_bus.assert_emitted("plugin.deactivated", count=1, plugin_name="r")


async def test_handler_that_hangs_is_cut_off_by_the_timeout(recording_bus):
    before = set(asyncio.all_tasks())
    manager = PluginManager(recording_bus, {"h": {"plugin": Hanging, "timeout_s": 0.05, "max_errors": 2},
                                            "echo": {"plugin": Echo}})
    await manager.start()
    hanging = manager.plugins["h"]
    await _ping(recording_bus, 3)
    errors = recording_bus.assert_emitted("plugin.error", count=2, plugin_name="h")
    assert "took longer than 0.05 s on demo.ping" in errors[0].data["error"]
    assert errors[-1].data["fatal"] is True
    assert hanging.started == 2 and hanging.cancelled == 2
    recording_bus.assert_emitted("demo.pong", count=3)
    await manager.close()
    await recording_bus.flush()
    left = [t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task() and not t.done()]
    assert left == []


async def test_messages_between_plugins_by_name(recording_bus):
    manager = PluginManager(recording_bus, {"a": {"plugin": Echo}, "b": {"plugin": Echo}})
    await manager.start()
    a, b = manager.plugins["a"], manager.plugins["b"]
    await a.send_message("b", {"reply": True, "text": "hello"})
    await recording_bus.flush()
    assert b.messages == [("a", {"reply": True, "text": "hello"})]
    assert a.messages == [("b", {"got": {"reply": True, "text": "hello"}})]
    msg = recording_bus.emitted("plugin.message")[0]
    assert msg.data == {"from": "a", "to": "b", "message": {"reply": True, "text": "hello"}}
    assert msg.source == "plugin:a"

    await b.send_message("*", {"text": "all"})
    await a.send_message("nobody", {"text": "lost"})
    await recording_bus.flush()
    assert a.messages[-1] == ("b", {"text": "all"}) and len(b.messages) == 1  # not to itself
    err = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="a")[0].data
    assert err["stage"] == "message" and err["fatal"] is False
    await manager.close()


async def test_disabled_plugins_are_skipped_and_config_records_load(recording_bus):
    from kbert_tui.config import PluginSpec

    specs = (PluginSpec("on", "best_model", True, {"metric": "val_f1"}),
             PluginSpec("off", "no_such_plugin", False, {}))
    manager = PluginManager(recording_bus, specs)
    await manager.start()
    assert manager.states == {"on": "active"}
    assert manager.plugins["on"].tracker.mode == "max"  # inferred from the metric name
    await manager.close()
    recording_bus.assert_not_emitted("plugin.error")


async def test_cleanup_that_raises_is_reported_and_shutdown_goes_on(recording_bus):
    class BadCleanup(Echo):
        async def cleanup(self) -> None:
            raise OSError("disk full")

    manager = PluginManager(recording_bus, {"x": {"plugin": BadCleanup}, "y": {"plugin": Echo}})
    await manager.start()
    x = manager.plugins["x"]
    await manager.close()
    err = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="x")[0].data
    assert err["stage"] == "cleanup" and err["error"] == "OSError: disk full" and err["fatal"] is False
    assert manager.states == {"x": "deactivated", "y": "deactivated"}
    assert x.subscription_ids == []


async def test_background_tasks_are_cancelled_on_cleanup(recording_bus):
    class Ticker(PluginPort):
        async def initialize(self) -> None:
            self.ticks = 0
            self.task = self.start_task(self._tick())

        async def _tick(self) -> None:
            while True:
                self.ticks += 1
                await asyncio.sleep(0.001)

    manager = PluginManager(recording_bus, {"t": {"plugin": Ticker}})
    await manager.start()
    ticker = manager.plugins["t"]
    await asyncio.sleep(0.02)
    await manager.close()
    assert ticker.ticks > 1 and ticker.task.cancelled()


async def test_plugin_used_without_a_manager(recording_bus):
    plugin = Echo()
    plugin.attach(recording_bus)
    await plugin.initialize()
    await _ping(recording_bus)
    await plugin.cleanup()
    await plugin.release()
    assert plugin.pings == 1 and plugin.subscription_ids == []
    assert recording_bus.assert_emitted("demo.pong")[0].source == "plugin:echo"


def test_plugin_tables_from_toml(tmp_path):
    from kbert_tui.config import ConfigError, load_config

    path = tmp_path / "run.toml"
    path.write_text('[plugins.stop]\nplugin = "early_stopping"\npatience = 2\ntimeout_s = 1.5\n'
                    '[plugins.csv]\nplugin = "metrics_csv"\nenabled = false\n')
    specs = load_config(path).plugins
    assert [(s.instance_name, s.plugin, s.enabled, dict(s.options)) for s in specs] == [
        ("stop", "early_stopping", True, {"patience": 2, "timeout_s": 1.5}),
        ("csv", "metrics_csv", False, {}),
    ]
    manager = PluginManager(None, specs)
    slot = manager._slots["stop"]
    assert slot.timeout_s == 1.5 and slot.config == {"patience": 2} and "csv" not in manager._slots

    for bad, message in (('timeout_s = 0', r"plugins\.x\.timeout_s: expected a number > 0"),
                         ('max_errors = "3"', r"plugins\.x\.max_errors: expected an integer >= 1"),
                         ('enabled = true', r"plugins\.x\.plugin")):
        plugin_line = '' if "enabled" in bad else 'plugin = "best_model"\n'
        path.write_text(f"[plugins.x]\n{plugin_line}{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_a_plugin_that_cannot_be_found_is_a_config_error_naming_the_nearest_name(tmp_path):
    from kbert_tui.config import ConfigError, load_config

    path = tmp_path / "run.toml"
    path.write_text('[plugins.csv]\nplugin = "metrics_cvs"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(
        f"{path}: plugins.csv.plugin: no plugin named 'metrics_cvs' (did you mean 'metrics_csv'?); known: ")
    assert "\n" not in str(info.value)
    for spec, message in (("kbert_tui.plugins.builtin.best_model:BestModelPlugn",
                           r"has no 'BestModelPlugn' \(did you mean 'BestModelPlugin'\?\)"),
                          ("no_such_package.module:Plugin", r"cannot import 'no_such_package\.module'"),
                          ("kbert_tui.config:ConfigError", r"not a PluginPort subclass")):
        path.write_text(f'[plugins.x]\nplugin = "{spec}"\n')
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: plugins\.x\.plugin: .*{message}"):
            load_config(path)
    path.write_text('[plugins.x]\nplugin = "metrics_cvs"\nenabled = false\n')  # switched off: not looked for
    assert [s.plugin for s in load_config(path).plugins] == ["metrics_cvs", "metrics_csv"]


def test_a_plugins_own_keys_are_checked_when_the_config_loads(tmp_path):
    """Every loader of a config (the CLI, the client's settings file) gets the plugins' Options checked."""
    from kbert_tui.config import ConfigError, load_config

    path = tmp_path / "run.toml"
    path.write_text('[plugins.stop]\nplugin = "early_stopping"\npatiense = 2\n')
    with pytest.raises(ConfigError, match=r"plugins\.stop\.patiense: unknown key"):
        load_config(path)


def test_a_module_that_raises_on_import_is_a_load_error_not_a_traceback(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('half-written plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match="cannot import 'broken_plugin_mod'.*RuntimeError: half-written"):
        resolve_plugin("broken_plugin_mod:Plugin")


def test_run_with_a_misspelt_plugin_exits_2_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "run.toml"
    path.write_text(f'[run]\noutput_dir = "{out}"\n[plugins.csv]\nplugin = "metrics_cvs"\n')
    proc = subprocess.run([sys.executable, "-m", "kbert_tui", "run", str(path), "--headless"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kbert-tui: error: {path}: plugins.csv.plugin: no plugin named 'metrics_cvs' (did you mean "
        "'metrics_csv'?); known: best_model, early_stopping, error_threshold, metrics_aggregator, metrics_csv; "
        "or give \"package.module:Class\""]
    assert not out.exists() and not (tmp_path / "runs").exists()


class LossSpikeAlarm(PluginPort):
    """The example of docs/plugins.md, kept here so the documented code is known to work."""

    name = "loss_spike"
    version = "1.0.0"
    capabilities = ("monitoring",)
    emits = ("loss_spike.detected",)

    @dataclass(frozen=True)
    class Options:
        factor: float = option(3.0, "a loss this many times the running mean is a spike", minimum=1.0)

    async def initialize(self) -> None:
        self.factor = self.options.factor
        self.mean = None
        await self.subscribe("training.batch_completed", self.on_batch)

    async def on_batch(self, event) -> None:
        loss = event.data["loss"]
        if self.mean is not None and loss > self.factor * self.mean:
            await self.emit("loss_spike.detected", {"step": event.data["step"], "loss": loss,
                                                    "mean": self.mean},
                            correlation_id=event.correlation_id)
        self.mean = loss if self.mean is None else 0.98 * self.mean + 0.02 * loss


async def test_the_documented_example(recording_bus):
    manager = PluginManager(recording_bus, {"alarm": {"plugin": LossSpikeAlarm, "factor": 2.0}}, run_id="run-1")
    await manager.start()
    for step, loss in enumerate([1.0, 1.0, 5.0], start=1):
        await recording_bus.emit("training.batch_completed", {"step": step, "loss": loss}, correlation_id="run-1")
    await recording_bus.flush()
    await manager.close()
    recording_bus.assert_emitted("loss_spike.detected", count=1, step=3)
    recording_bus.assert_emitted("plugin.activated", count=1, plugin_name="alarm")
    recording_bus.assert_not_emitted("plugin.error")


async def test_a_blocking_sync_handler_counts_as_an_error(recording_bus):
    import time

    class Blocking(PluginPort):
        async def initialize(self) -> None:
            await self.subscribe("demo.ping", self.on_ping)

        def on_ping(self, event) -> None:
            time.sleep(0.03)  # blocks the loop: cannot be interrupted, only reported

    manager = PluginManager(recording_bus, {"b": {"plugin": Blocking, "timeout_s": 0.01, "max_errors": 1}})
    await manager.start()
    await _ping(recording_bus, 2)
    await manager.close()
    err = recording_bus.assert_emitted("plugin.error", count=1, plugin_name="b")[0].data
    assert "blocked the loop" in err["error"] and err["fatal"] is True


async def test_handled_counts_are_reported_while_running_and_at_shutdown(recording_bus):
    manager = PluginManager(recording_bus, {"echo": {"plugin": Echo}}, stats_interval_s=0.05)
    await manager.start()
    for _ in range(3):
        await recording_bus.emit("demo.ping", {})
    await recording_bus.flush()
    await asyncio.sleep(0.15)
    stats = recording_bus.assert_emitted("plugin.stats", plugin_name="echo")
    assert stats[-1].data == {"plugin_name": "echo", "events_handled": 3, "errors": 0, "state": "active"}
    assert len(stats) == 1  # quiet while nothing changes
    await manager.close()
    (bye,) = recording_bus.assert_emitted("plugin.deactivated", count=1, plugin_name="echo")
    assert bye.data["events_handled"] == 3
    assert not [t for t in asyncio.all_tasks() if "report_stats" in repr(t.get_coro())]
