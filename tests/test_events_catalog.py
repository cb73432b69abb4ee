"""The event contract: every event a real run writes is declared and carries its declared payload."""

from __future__ import annotations

import asyncio
import json
import tokenize
from pathlib import Path

import pytest

from kbert_tui.config import parse_config
from kbert_tui.events import catalog
from kbert_tui.events.catalog import SPECS, check_payload, payload_table
from kbert_tui.session import RunSession
from kbert_tui.training.testing import tiny_document

DOCS = Path(__file__).resolve().parents[1] / "docs" / "events.md"
PROJECT = Path(__file__).resolve().parents[1] / "kbert_tui"


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory) -> list[dict]:
    """A short real run with the sampler, every built-in plugin and early stopping on."""
    folder = tmp_path_factory.mktemp("catalog")
    document = tiny_document(folder, training={"epochs": 3, "early_stopping": {"enabled": True, "patience": 1}},
                             system={"enabled": True, "interval_s": 0.05})  # cpu_usage needs 2 samples
    document["plugins"] = {name: {"plugin": name} for name in
                           ("early_stopping", "best_model", "error_threshold", "metrics_aggregator", "metrics_csv")}
    config = parse_config(document, origin=str(folder / "run.toml"), base_dir=folder)

    async def run() -> Path:
        session = RunSession(config, output_dir=folder / "out")
        await session.start()
        await session.wait()
        await session.close()
        return session.events_path

    path = asyncio.run(run())
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_event_of_a_real_run_conforms_to_its_declaration(demo_log):
    problems = sorted({p for row in demo_log for p in check_payload(row["name"], row["data"])})
    assert problems == []
    undeclared = sorted({row["name"] for row in demo_log} - set(SPECS))
    assert undeclared == []
    seen = {row["name"] for row in demo_log}
    assert {"training.started", "training.batch_completed", "training.completed",
            "plugin.activated", "model.checkpoint_saved", "data.validation_completed"} <= seen
    assert any(name.startswith("system.") for name in seen)  # which readings land in a short run varies


def test_the_checker_catches_missing_undeclared_and_mistyped_keys():
    assert check_payload("training.epoch_started", {"epoch": 1, "total_epochs": 2}) == [
        "training.epoch_started: missing 'steps'"]
    assert check_payload("training.epoch_started", {"epoch": 1, "total_epochs": 2, "steps": 3, "x": 1}) == [
        "training.epoch_started: undeclared key 'x'"]
    [problem] = check_payload("training.epoch_started", {"epoch": "1", "total_epochs": 2, "steps": 3})
    assert "'epoch' is str" in problem and "declared int" in problem
    assert check_payload("model.checkpoint_saved", {"path": "p", "epoch": 1, "step": 2, "metrics": {},
                                                    "kind": "weekly", "size_mb": 1.0})
    assert check_payload("my_plugin.anything", {"free": "form"}) == []  # plugins name their own events


def test_every_declared_name_is_a_module_constant():
    constants = {v for k, v in vars(catalog).items() if k.isupper() and isinstance(v, str)}
    assert set(SPECS) <= constants


def test_producers_and_consumers_spell_no_declared_name_as_a_bare_string():
    """A name is written once, in the catalog; code elsewhere uses the constant (docstrings may quote it)."""
    names = set(SPECS)
    offenders = []
    for path in PROJECT.rglob("*.py"):
        if path.name == "catalog.py" or "__pycache__" in path.parts:
            continue
        with tokenize.open(path) as source:
            for token in tokenize.generate_tokens(source.readline):
                if token.type == tokenize.STRING and token.string[1:-1] in names and token.string[0] in "\"'":
                    offenders.append(f"{path.relative_to(PROJECT.parent)}:{token.start[0]}: {token.string}")
    assert offenders == []


def test_the_docs_tables_are_the_catalogs():
    text = DOCS.read_text()
    for category in sorted({s.category for s in SPECS.values()}):
        assert payload_table(category) in text, f"docs/events.md: the {category}.* table is stale"
