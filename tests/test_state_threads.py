"""Causation under the run id, from a real demo run's log: each event's causes, consequences, step and epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbert_tui.events.store import read_events
from kbert_tui.session import RunSession
from kbert_tui.state import EventLog, parse_filter
from kbert_tui.training.testing import tiny_config
from datetime import UTC


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory) -> EventLog:
    folder = tmp_path_factory.mktemp("threads")
    config = tiny_config(folder, training={"epochs": 2}, system={"enabled": True, "interval_s": 0.2})

    async def run() -> Path:
        session = RunSession(config, output_dir=folder / "out")
        await session.start()
        await session.wait()
        await session.close()
        return Path(session.events_path)

    import asyncio

    path = asyncio.run(run())
    log = EventLog(100_000)
    log.extend(read_events(path))
    return log


def names(log: EventLog, seqs) -> list[str]:
    return [log.get(s).name for s in seqs]


def first(log: EventLog, name: str) -> int:
    return next(s for s in range(log.total) if log.get(s).name == name)


def test_new_best_model_comes_from_its_epoch_and_leads_to_the_checkpoint(demo_log: EventLog):
    log, threads = demo_log, demo_log.threads
    best = first(log, "training.new_best_model")
    assert log.get(best).metadata.get("caused_by")  # the trainer says so in metadata, not only by rule
    cause = threads.parent(best, log.base)
    assert cause is not None and log.get(cause).name == "training.epoch_completed"
    assert log.get(cause).data["epoch"] == log.get(best).data["epoch"]
    assert "model.checkpoint_saved" in names(log, threads.children(best))
    thread = names(log, log.scope(best, "thread"))
    assert {"training.epoch_started", "training.epoch_completed", "training.new_best_model",
            "model.checkpoint_saved"} <= set(thread)
    assert "training.batch_completed" not in thread  # a thread, not the whole run


def test_every_event_knows_its_step_and_epoch_and_the_scopes_widen(demo_log: EventLog):
    log, threads = demo_log, demo_log.threads
    batch = [s for s in range(log.total) if log.get(s).name == "training.batch_completed"][3]
    step, epoch = threads.step(batch), threads.epoch(batch)
    assert (step, epoch) == (log.get(batch).data["step"], log.get(batch).data["epoch"])
    sampled = [s for s in range(batch, log.total) if log.get(s).name.startswith("system.")
               and threads.step(s) == step]
    in_step = log.scope(batch, "step")
    assert set(sampled) <= set(in_step)  # readings taken during the step belong to it
    sizes = [len(log.scope(batch, level)) for level in ("thread", "step", "epoch", "run")]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[1]


def test_filter_selects_an_epoch_a_step_and_what_an_event_caused(demo_log: EventLog):
    log = demo_log
    log.set_filter(parse_filter("epoch:2 training.batch_completed"))
    rows = [log.event_at(r) for r in range(len(log))]
    assert rows and all(e.data["epoch"] == 2 for e in rows)
    completed = first(log, "training.epoch_completed")
    log.set_filter(parse_filter(f"caused-by:{log.get(completed).id}"))
    caused = {log.event_at(r).name for r in range(len(log))}
    assert {"training.epoch_completed", "training.new_best_model", "model.checkpoint_saved"} <= caused
    log.set_filter(None)


def test_recovery_follows_its_warning_and_a_handler_error_its_event():
    from kbert_tui.events import Event

    events = [
        Event(name="system.performance_warning", data={"component": "cpu", "metric": "cpu_percent"}, id="w1"),
        Event(name="system.performance_warning", data={"component": "memory", "metric": "memory_percent"},
              id="w2"),
        Event(name="training.batch_completed", data={"step": 7, "epoch": 1, "loss": 0.3}, id="b7"),
        Event(name="system.performance_recovered", data={"component": "cpu", "metric": "cpu_percent"}, id="r1"),
        Event(name="bus.handler_error", data={"event_id": "b7", "error": "boom"}, id="h1"),
        Event(name="control.pause_requested", data={"requested_by": "tui"}, id="c1"),
        Event(name="training.paused", data={"step": 7, "epoch": 1}, id="p1"),
    ]
    log = EventLog(16)
    log.extend(events)
    parent = {log.get(s).id: log.threads.parent(s, 0) for s in range(log.total)}
    assert log.get(parent["r1"]).id == "w1"  # the same component and metric, not the newest warning
    assert log.get(parent["h1"]).id == "b7"
    assert log.get(parent["p1"]).id == "c1"
    assert log.threads.step(3) == 7  # the recovery came during step 7


def test_a_bad_scope_term_names_its_problem():
    from kbert_tui.state import FilterSyntaxError

    with pytest.raises(FilterSyntaxError, match="not a whole number"):
        parse_filter("epoch:three")
    with pytest.raises(FilterSyntaxError, match="needs a value"):
        parse_filter("caused-by:")


@pytest.mark.parametrize("end", ["training.completed", "training.stopped", "training.failed"])
def test_the_step_and_epoch_windows_end_with_the_run(end):
    from datetime import datetime, timedelta

    from kbert_tui.events import Event

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [Event(name="training.epoch_started", data={"epoch": 1}, id="e1", timestamp=t0),
              Event(name="training.batch_completed", data={"step": 4, "epoch": 1, "loss": 0.3}, id="b4",
                    timestamp=t0 + timedelta(seconds=1)),
              Event(name="system.cpu_usage", data={"percent": 50.0}, id="during", timestamp=t0 + timedelta(seconds=2)),
              Event(name=end, data={"step": 4}, id="end", timestamp=t0 + timedelta(seconds=3))]
    # the sampler goes on while the process closes: up to 80 s of readings were listed as step 4's
    events += [Event(name="system.cpu_usage", data={"percent": 5.0}, id=f"after-{i}",
                     timestamp=t0 + timedelta(seconds=10 * (i + 1))) for i in range(8)]
    log = EventLog(32)
    log.extend(events)
    for level in ("step", "epoch"):
        ids = {log.get(s).id for s in log.scope(1, level)}
        assert {"b4", "during"} <= ids and not any(i.startswith("after-") for i in ids), level
    after = 5
    assert log.threads.step(after) is None and log.threads.epoch(after) is None
    assert log.scope(after, "step") == [after]


@pytest.mark.parametrize("value", [2**63, 2**70, -(2**63) - 1, -5])
def test_a_step_or_epoch_no_window_can_hold_belongs_to_none(value):
    # a log written by anyone may say step 2**70; the thread index keeps int64 and must not raise
    from kbert_tui.events import Event

    log = EventLog(16)
    log.extend([Event(name="training.batch_completed", data={"step": value, "epoch": value, "loss": 0.1}, id="b"),
                Event(name="training.batch_completed", data={"step": 3, "epoch": 1, "loss": 0.1}, id="c")])
    assert log.threads.step(0) is None and log.threads.epoch(0) is None
    assert log.threads.step(1) == 3 and log.threads.epoch(1) == 1
