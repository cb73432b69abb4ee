"""A headless run through RunSession: the events file holds system.* and plugin.* beside training.*."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from collections import Counter

from kbert_tui.config import ModelSection, PluginSpec, SystemSection, default_config
from kbert_tui.session import RunSession


async def test_headless_run_logs_system_and_plugin_events_and_leaves_no_task(tmp_path):
    base = default_config()
    config = base.replace(
        training=dataclasses.replace(base.training, epochs=1, eval_every=0),
        model=ModelSection(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=500),
        system=SystemSection(interval_s=0.1),
        plugins=(
            PluginSpec("csv", "metrics_csv"),
            PluginSpec("errors", "error_threshold", True, {"threshold": 100}),
            PluginSpec("broken", "no_such_module:Plugin"),  # reported and set aside; the run goes on
        ),
    )
    before = set(asyncio.all_tasks())
    session = RunSession(config, output_dir=tmp_path)
    await session.start()
    assert session.sampler is not None and session.sampler.running
    outcome = await session.wait()
    await session.close()
    assert outcome == "completed"
    assert not session.sampler.running
    assert session.plugins.states == {"csv": "deactivated", "errors": "deactivated", "broken": "failed"}
    left = [t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task() and not t.done()]
    assert left == []

    events = [json.loads(line) for line in session.events_path.read_text().splitlines()]
    names = Counter(e["name"] for e in events)
    for name in ("system.memory_usage", "system.cpu_usage", "system.disk_usage", "system.mlx_memory",
                 "system.gpu_unavailable", "plugin.loaded", "plugin.activated", "plugin.deactivated",
                 "plugin.error", "training.started", "training.completed"):
        assert names[name] >= 1, name
    assert names["system.gpu_unavailable"] <= 1
    system = [e for e in events if e["name"].startswith(("system.", "plugin."))]
    assert {e["correlation_id"] for e in system} == {session.run_id}
    # the sampler starts before the worker and stops after it
    order = [e["name"] for e in events]
    assert order.index("plugin.activated") < order.index("training.started")
    assert order.index("training.completed") < order.index("plugin.deactivated")

    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["kind"] for r in rows} == {"batch", "epoch"}
    assert rows[-1]["kind"] == "epoch" and rows[-1]["val_loss"]
