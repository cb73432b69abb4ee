"""The compare view's table at 80 and 120 columns: whole columns chosen by width, the rest a ← → away; only
config keys are differing keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from simulate import simulate_run

from kbert_tui.config import RunConfig
from kbert_tui.events._codec import encode_event
from kbert_tui.state.compare import (
    CONFIG_TABLES,
    compare_table,
    config_differences,
    label_runs,
    load_run,
)


def many_keys_runs(folder: Path, count: int = 3) -> list:
    """Runs with long folder names that differ in seven settings and in the config file they were read from."""
    records = []
    for i in range(count):
        run_dir = folder / f"disaster-finetune-{i}-20261205-003000-ab1{i}"
        run_dir.mkdir()
        lines = []
        for event in simulate_run(epochs=3, steps_per_epoch=20, run_id=f"run-{i}"):
            if event.name == "training.started":
                config = event.data["config"]
                config["source"] = f"/home/someone/experiments/configs/disaster-{i}.toml"
                config["training"].update(learning_rate=(i + 1) * 1e-4, warmup_ratio=0.05 * i)
                config.setdefault("model", {}).update(hidden_size=64 * (i + 1), dropout=0.1 * i)
                config.setdefault("data", {})["batch_size"] = 16 * (i + 1)
                config.setdefault("run", {})["seed"] = i
                config.setdefault("system", {})["sample_interval_s"] = 1.0 + i
            lines.append(encode_event(event))
        (run_dir / "events.jsonl").write_text("".join(lines))
        records.append(load_run(run_dir / "events.jsonl"))
    label_runs(records)
    return records


def test_only_config_keys_differ(tmp_path):
    records = many_keys_runs(tmp_path)
    differing = config_differences(records)
    assert "source" not in differing
    assert differing == ["data.batch_size", "model.dropout", "model.hidden_size", "run.seed",
                         "system.sample_interval_s", "training.learning_rate", "training.warmup_ratio"]
    assert "source" not in compare_table(records).data[0]["config"]


def test_the_config_tables_are_the_configs():
    assert set(CONFIG_TABLES) == {f.name for f in dataclasses.fields(RunConfig)} - {"source"}


def screen_lines(app) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


def header_row(app) -> list[str]:
    return next(line for line in screen_lines(app) if line.startswith(" run ")).split()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_table_shows_whole_columns_and_scrolls_to_the_rest(tmp_path, size):
    from kbert_tui.tui.compare import CompareApp

    records = many_keys_runs(tmp_path)
    app = CompareApp(records, follow=False)
    wide = size[0] >= 110
    expected = (["run"] + (["status"] if wide else []) + ["steps", "loss", "val_loss", "val_acc", "val_f1", "wall",
                "smp/s", "batch_size", "dropout", "hidden_size", "seed", "sample_interval_s", "learning_rate",
                "warmup_ratio"])
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        seen: list[str] = []
        for _ in range(len(expected)):
            headers = header_row(app)
            assert all(name in expected for name in headers), headers  # whole names: none cut to "stat…"
            assert headers[0] == "run"
            lines = screen_lines(app)
            assert all(len(line.rstrip()) <= size[0] for line in lines)
            seen += [h for h in headers if h not in seen]
            await pilot.press("right")
            await pilot.pause()
        assert seen == expected  # every column came into view, in order
        caption = next(line for line in screen_lines(app) if line.lstrip().startswith("columns "))
        assert "← " in caption and "more →" not in caption  # at the right end
        for _ in range(len(expected)):
            await pilot.press("left")
        await pilot.pause()
        assert header_row(app)[:3] == expected[:3]
        # the first screen shows the metrics next to the run: the columns that matter most come first
        assert "val_f1" in header_row(app)
