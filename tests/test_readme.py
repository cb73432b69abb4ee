"""The README's examples work: the CSV config loads and trains, the plugin example runs."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from kbert_tui.config import load_config
from kbert_tui.plugins import PluginManager

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(language: str, marker: str) -> str:
    blocks = [b for b in re.findall(rf"```{language}\n(.*?)```", README, flags=re.S) if marker in b]
    assert len(blocks) == 1, f"one ```{language} block containing {marker!r} expected"
    return blocks[0]


def _titanic_rows(n: int, start: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(start, start + n):
        sex = "female" if i % 3 else "male"
        pclass = 1 + i % 3
        rows.append({"PassengerId": i, "Name": f"Passenger {i}", "Age": 20 + i % 40, "Sex": sex,
                     "Pclass": pclass, "Survived": int(sex == "female" and pclass < 3)})
    return rows


def _write(path: Path, rows: list[dict[str, Any]], drop: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [k for k in rows[0] if k != drop]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_the_csv_config_example_loads_and_trains(tmp_path):
    from kbert_tui.events.testing import RecordingBus
    from kbert_tui.training.trainer import Trainer

    config_path = tmp_path / "run.toml"
    text = _block("toml", 'name = "titanic"')
    # keep the README's keys; shrink the model and the run so the test takes a second
    config_path.write_text(text.replace("epochs = 5", "epochs = 1")
                           + "\n[model]\nhidden_size = 16\nnum_layers = 1\nnum_heads = 2\nintermediate_size = 32\n")
    _write(tmp_path / "data" / "train.csv", _titanic_rows(120, 1))
    _write(tmp_path / "data" / "test.csv", _titanic_rows(20, 500), drop="Survived")
    config = load_config(config_path)
    assert config.data.template.startswith("{Name} is {Age}")
    assert config.training.early_stopping.metric == "val_f1"

    bus = RecordingBus()
    Trainer(config, bus, run_id="titanic-test", output_dir=tmp_path / "out").run()
    bus.assert_emitted("training.completed", count=1)
    predictions = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "PassengerId,Survived" and len(predictions) == 21


async def test_the_plugin_example_runs(recording_bus):
    namespace: dict[str, Any] = {}
    exec(_block("python", "class LossSpikeAlarm"), namespace)
    manager = PluginManager(recording_bus, {"spikes": {"plugin": namespace["LossSpikeAlarm"], "factor": 2.0}})
    await manager.start()
    for step, loss in enumerate([1.0, 1.0, 1.0, 5.0, 1.0], 1):
        await recording_bus.emit("training.batch_completed", {"step": step, "loss": loss})
    await recording_bus.flush()
    (spike,) = recording_bus.assert_emitted("loss_spike.detected", count=1)
    assert spike.data["step"] == 4 and spike.source == "plugin:spikes"
    await manager.close()
    recording_bus.assert_emitted("plugin.deactivated", count=1, plugin_name="spikes")
