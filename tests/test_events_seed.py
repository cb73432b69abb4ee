"""Every code example of the event-system guide runs against kbert_tui.events.

`docs/event-system-guide.md` is the guide with only its import path changed
(`bert_playground.core.events` → `kbert_tui.events`, `bert_playground.core.ports` → `kbert_tui.plugins`).
Each ```python block is executed as written, statement by statement, inside a coroutine so top-level
`await` works. Where a fragment leans on names it never defines (a `logger`, a `config`, the guide's own
imaginary `AsyncTrainer` base class), the test supplies them first, and then checks what the bus did.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
import sys
import textwrap
import types
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kbert_tui.events import Event, EventBus
from kbert_tui.events.testing import RecordingBus

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "event-system-guide.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


BLOCKS = _blocks()


def _block(marker: str) -> str:
    matches = [b for b in BLOCKS if marker in b]
    assert len(matches) == 1, f"expected one block containing {marker!r}"
    return matches[0]


async def run_block(source: str, namespace: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute `source` statement by statement with top-level await; `before` maps a statement prefix
    to a callable run (with the namespace) just before that statement."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for stmt in tree.body:
        text = "\n".join(lines[stmt.lineno - 1: stmt.end_lineno])
        for prefix, hook in (before or {}).items():
            if text.lstrip().startswith(prefix):
                hook(namespace)
        wrapped = "async def __stmt__():\n" + textwrap.indent(text, "    ") + "\n    return locals()\n"
        code = compile(wrapped, "<guide>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        exec(code, namespace)
        namespace.update(await namespace["__stmt__"]())
    return namespace


def test_the_guide_has_all_its_examples():
    assert len(BLOCKS) == 21
    assert "bert_playground.core" not in GUIDE.read_text()


def test_import_block():
    namespace: dict[str, Any] = {}
    exec(BLOCKS[0], namespace)
    assert namespace["EventBus"] is EventBus and namespace["Event"] is Event


def test_event_bus_interface_block():
    """The guide's interface listing (signatures only): our EventBus has each method, same kind."""
    listing = _block("class EventBus:")
    for is_async, name, params in re.findall(r"(async )?def (\w+)\(self, ([^)]*)\)", listing):
        method = getattr(EventBus, name)
        assert inspect.iscoroutinefunction(method) == bool(is_async), name
        ours = inspect.signature(method).parameters
        for param in params.split(","):
            assert param.split(":")[0].strip() in ours or name in {"emit", "emit_sync"}, (name, param)


def test_event_structure_block():
    namespace: dict[str, Any] = {"__name__": __name__}
    exec("from dataclasses import dataclass, field\nfrom datetime import datetime\n"
         "from typing import Any, Dict, Optional\n" + _block("class Event:"), namespace)
    guide_fields = {f.name: f for f in namespace["Event"].__dataclass_fields__.values()}
    ours = Event.__dataclass_fields__
    for name in guide_fields:
        assert name in ours
    event = Event("x", {}, datetime.now().astimezone(), "src")  # positional order as in the guide
    assert event.correlation_id is None and event.metadata == {}


async def test_setting_up_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = await run_block(_block("# Create event bus"), {})
    bus = ns["event_bus"]
    assert isinstance(bus, EventBus) and bus.persistence_path == Path("events.log")
    await bus.emit("x", {})
    await bus.shutdown()
    assert (tmp_path / "events.log").read_text().count("\n") == 1


async def test_emitting_block():
    bus = RecordingBus()
    await run_block(_block("# Async emission (recommended)"), {"event_bus": bus})
    assert bus.names == ["training.epoch_completed", "model.checkpoint_saved"]
    assert bus.events[1].data["size_mb"] == 150.2


async def test_subscription_block():
    bus = RecordingBus()
    checkpoints: list[str] = []

    def fill_in_what_the_fragment_assumes(ns: dict[str, Any]) -> None:
        cls = ns["TrainingMonitor"]
        cls.best_loss = float("inf")
        cls.on_training_event = lambda self, event: None
        cls.on_checkpoint_event = lambda self, event: checkpoints.append(event.name)

    ns = await run_block(_block("class TrainingMonitor"), {"event_bus": bus, "EventBus": EventBus, "Event": Event},
                         before={"monitor = TrainingMonitor": fill_in_what_the_fragment_assumes})
    await bus.emit("training.epoch_completed", {"epoch": 1, "val_loss": 0.5})
    await bus.emit("model.checkpoint_saved", {"path": "p"})
    await bus.flush()
    assert ns["monitor"].metrics[0]["epoch"] == 1
    bus.assert_emitted("training.new_best_model", count=1, epoch=1, loss=0.5)
    assert checkpoints == ["model.checkpoint_saved"]


async def test_sync_handler_block(caplog):
    bus = EventBus()
    logger = logging.getLogger("guide")
    with caplog.at_level(logging.INFO, logger="guide"):
        await run_block(_block("def log_training_events"), {"event_bus": bus, "logger": logger, "Event": Event})
        await bus.emit("training.started", {"run_id": "r"})
        await bus.flush()
    assert "Training event: training.started - {'run_id': 'r'}" in caplog.text


async def test_filtering_block():
    bus = EventBus()
    got: list[str] = []
    await bus.subscribe("*", lambda e: got.append(e.name))
    await run_block(_block("class ImportantEventsFilter"), {"event_bus": bus, "Event": Event})
    for name in ("training.batch_completed", "training.completed", "system.performance_warning"):
        await bus.emit(name, {})
    await bus.flush()
    assert got == ["training.completed", "system.performance_warning"]


async def test_correlation_block():
    bus = RecordingBus()
    ns = await run_block(_block("import uuid"), {"event_bus": bus, "config": {"lr": 1e-3}})
    related = ns["related_events"]
    assert [e.name for e in related] == ["training.started", "training.epoch_started"]
    assert {e.correlation_id for e in related} == {ns["correlation_id"]}


async def test_persistence_and_query_block(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = _block("# Enable event logging")
    # first run the setup lines, emit some history, then the query part of the fragment
    setup, query_part = source.split("# Query historical events")
    ns = await run_block(setup, {"EventBus": EventBus})
    bus: EventBus = ns["event_bus"]
    for epoch in range(1, 8):
        await bus.emit("training.epoch_completed", {"epoch": epoch})
        await bus.emit("system.memory_usage", {"epoch": epoch})
    ns = await run_block(query_part, {**ns, "datetime": datetime, "timedelta": timedelta})
    assert [(e.name, e.data) for e in ns["events"]] == [("training.epoch_completed", {"epoch": 5})]
    await bus.shutdown()
    assert (tmp_path / "training_events.jsonl").exists()


async def test_metrics_and_pattern_monitor_block(capsys):
    bus = RecordingBus()

    def the_monitor_it_subscribes(ns: dict[str, Any]) -> None:
        ns.setdefault("monitor", ns["EventPatternMonitor"](ns["event_bus"]))

    await bus.emit("warmup", {})
    ns = await run_block(_block("class EventPatternMonitor"), {"event_bus": bus, "Event": Event},
                         before={'await event_bus.subscribe("*.error"': the_monitor_it_subscribes})
    assert "Total events: 1" in capsys.readouterr().out
    for _ in range(6):
        await bus.emit("plugin.error", {"component": "loader"})
        await bus.emit("training.failed", {"component": "trainer"})
    await bus.flush()
    exceeded = bus.assert_emitted("system.error_threshold_exceeded")
    assert exceeded[0].data == {"error_count": 10, "threshold": 10, "component": "trainer"}
    assert ns["monitor"].error_count == 12


class _GuideTrainerBase:
    """What the guide's imaginary `bert_playground.training.core.AsyncTrainer` provides."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.run_id = "run-1"
        self.model = types.SimpleNamespace()
        self.current_epoch = 0

    async def train_epoch(self, epoch: int) -> dict[str, float]:
        self.current_epoch = epoch + 1
        if epoch == self.config.fail_at:
            raise RuntimeError("loss is NaN")
        return {"loss": 1.0 / (epoch + 1), "epoch_time": 0.01}

    async def should_stop_early(self) -> bool:
        return self.current_epoch >= self.config.stop_after

    def get_final_metrics(self) -> dict[str, float]:
        return {"loss": 0.5}

    def get_training_duration(self) -> float:
        return 0.02


class _GuideLoaderBase:
    """What the guide's imaginary `bert_playground.data.core.AsyncDataLoader` provides."""

    def __init__(self, config: Any) -> None:
        self.config = config

    async def load_batch(self) -> dict[str, Any]:
        import mlx.core as mx

        await asyncio.sleep(self.config.delay)
        return {"input_ids": mx.zeros((4, 16), dtype=mx.int32)}

    def get_memory_usage(self) -> float:
        return 1.0


@pytest.fixture
def guide_bases(monkeypatch):
    training = types.ModuleType("bert_playground.training.core")
    training.AsyncTrainer = _GuideTrainerBase  # type: ignore[attr-defined]
    data = types.ModuleType("bert_playground.data.core")
    data.AsyncDataLoader = _GuideLoaderBase  # type: ignore[attr-defined]
    for name, module in {"bert_playground": types.ModuleType("bert_playground"),
                         "bert_playground.training": types.ModuleType("bert_playground.training"),
                         "bert_playground.training.core": training,
                         "bert_playground.data": types.ModuleType("bert_playground.data"),
                         "bert_playground.data.core": data}.items():
        monkeypatch.setitem(sys.modules, name, module)


def _config(**values: Any) -> Any:
    return types.SimpleNamespace(dict=lambda: dict(values), **values)


async def test_training_integration_block(guide_bases):
    bus = RecordingBus()
    ns = await run_block(_block("class EventDrivenTrainer"), {"EventBus": EventBus, "TrainingConfig": Any,
                                                             "traceback": __import__("traceback")})
    trainer = ns["EventDrivenTrainer"](_config(num_epochs=5, fail_at=-1, stop_after=3), bus)
    await trainer.train_async()
    bus.assert_order("training.started", "training.epoch_started", "training.epoch_completed",
                     "training.early_stopped", "training.completed")
    bus.assert_emitted("training.epoch_completed", count=3)

    failing = ns["EventDrivenTrainer"](_config(num_epochs=5, fail_at=1, stop_after=9), bus)
    with pytest.raises(RuntimeError, match="NaN"):
        await failing.train_async()
    (failed,) = bus.assert_emitted("training.failed", count=1)
    assert failed.data["epoch"] == 2 and "RuntimeError" in failed.data["traceback"]


async def test_data_pipeline_block(guide_bases):
    bus = RecordingBus()
    ns = await run_block(_block("class EventDrivenDataLoader"), {"EventBus": EventBus, "DataConfig": Any,
                                                                "time": __import__("time"), "Dict": dict,
                                                                "mx": __import__("mlx.core").core})
    loader = ns["EventDrivenDataLoader"](_config(delay=0.02, load_time_threshold=0.01), bus)
    batch = await loader.load_batch()
    assert batch["input_ids"].shape == (4, 16)
    (loaded,) = bus.assert_emitted("data.batch_loaded", count=1, batch_size=4, sequence_length=16)
    assert loaded.data["load_time"] >= 0.02
    bus.assert_emitted("data.performance_warning", count=1, component="data_loader", metric="load_time")


async def test_real_time_monitor_block(monkeypatch):
    bus = RecordingBus()
    real_sleep = asyncio.sleep

    async def quick_sleep(delay: float, result: Any = None) -> Any:
        return await real_sleep(delay / 100, result)

    monkeypatch.setattr(asyncio, "sleep", quick_sleep)  # the guide aggregates every 5 s
    before = asyncio.all_tasks()
    ns = await run_block(_block("class RealTimeMonitor"), {"event_bus": bus, "EventBus": EventBus,
                                                          "Event": Event, "datetime": datetime})
    for i in range(3):
        await bus.emit("training.batch_completed", {"batch": i})
    await bus.emit("system.cpu_usage", {"percent": 5.0})
    await real_sleep(0.2)
    aggregated = bus.assert_emitted("metrics.aggregated")
    assert aggregated[0].data["training_events_count"] == 3
    assert aggregated[0].data["system_events_count"] == 1
    assert len(ns["monitor"].active_subscriptions) == 2
    for task in asyncio.all_tasks() - before - {asyncio.current_task()}:
        task.cancel()


async def test_testing_blocks_run_as_tests():
    ns: dict[str, Any] = {"asyncio": asyncio}
    exec(_block("async def test_event_emission_and_subscription"), ns)
    for name in ("test_event_emission_and_subscription", "test_event_filtering"):
        bus = EventBus()
        await ns[name](bus)
        await bus.shutdown()


async def test_mock_event_bus_block():
    class MyEventDrivenComponent:
        def __init__(self, bus: EventBus) -> None:
            self.bus = bus

        async def do_something(self) -> None:
            await self.bus.emit("component.started", {})
            await self.bus.emit("component.completed", {"ok": True})

    ns: dict[str, Any] = {"pytest": pytest, "MyEventDrivenComponent": MyEventDrivenComponent}
    exec(_block("class MockEventBus"), ns)
    await ns["test_component_with_events"]()


async def test_plugin_integration_block():
    bus = RecordingBus()
    ns = await run_block(_block("class EventAwarePlugin"), {"PluginConfig": dict, "Event": Event})
    acted: list[dict[str, Any]] = []

    class ThresholdPlugin(ns["EventAwarePlugin"]):  # the fragment leaves the action to subclasses
        version = "1.2.0"
        capabilities = ("alerts",)

        def should_trigger_action(self, metrics: dict[str, Any]) -> bool:
            return metrics.get("val_loss", 1.0) < 0.5

        async def perform_action(self, metrics: dict[str, Any]) -> None:
            acted.append(metrics)

    plugin = ThresholdPlugin({"threshold": 0.5}, bus)
    await plugin.initialize()
    (activated,) = bus.assert_emitted("plugin.activated", count=1, plugin_name="ThresholdPlugin")
    assert activated.data["version"] == "1.2.0"
    await bus.emit("training.epoch_completed", {"metrics": {"val_loss": 0.7}})
    await bus.emit("training.epoch_completed", {"metrics": {"val_loss": 0.3}})
    await bus.flush()
    assert acted == [{"val_loss": 0.3}]
    await plugin.cleanup()
    bus.assert_emitted("plugin.deactivated", count=1, plugin_name="ThresholdPlugin")
    await bus.emit("training.epoch_completed", {"metrics": {"val_loss": 0.1}})
    await bus.flush()
    assert len(acted) == 1  # unsubscribed


CATALOGUE_BLOCKS = ("# Training lifecycle", "# Data loading", "# Plugin lifecycle", "# Resource monitoring")


@pytest.mark.parametrize("marker", CATALOGUE_BLOCKS)
def test_every_catalogued_event_is_emitted_by_the_project(marker):
    """The guide's event catalogue: each name is emitted somewhere in kbert_tui (not just in tests)."""
    names = re.findall(r'^"([a-z_.]+)" ->', _block(marker), flags=re.M)
    assert names
    source = "\n".join(p.read_text() for p in (GUIDE.parents[1] / "kbert_tui").rglob("*.py"))
    missing = [n for n in names if f'"{n}"' not in source]
    assert not missing, f"catalogued events never emitted: {missing}"
