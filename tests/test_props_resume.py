"""Property: a run killed at any step and resumed from any earlier checkpoint tells the story of a run that was
never interrupted (differential: the two processes' log against the one-process log of the same run).

The log of the interrupted run is built from the uninterrupted one: the first process logged everything up to
step `killed_at`; the second, started later, went on from its checkpoint at step `resumed_at` <= killed_at
and logged everything after it again. RunState, the compare record and export must read both logs the same.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from simulate import simulate_run

from kbert_tui.events import Event
from kbert_tui.state import RunState
from kbert_tui.state.compare import RunRecord

EPOCHS, STEPS = 3, 7


def reference() -> list[Event]:
    return list(simulate_run(epochs=EPOCHS, steps_per_epoch=STEPS, run_id="r", system_every=3, model_every=4))


def after_step(events: list[Event], step: int) -> int:
    """Where the events of step `step` end (its batch, an evaluation, its epoch's end): the next step's start."""
    if step == 0:
        return next(i for i, e in enumerate(events) if e.name == "training.epoch_started")
    batch = next(i for i, e in enumerate(events) if e.name == "training.batch_completed" and e.data["step"] == step)
    return next((i for i, e in enumerate(events[batch + 1:], batch + 1)
                 if e.name in ("training.batch_completed", "training.epoch_started",
                               "training.completed")), len(events))


def interrupted(events: list[Event], killed_at: int, resumed_at: int) -> list[Event]:
    started = next(e for e in events if e.name == "training.started")
    first = events[:after_step(events, killed_at)]
    rest = events[after_step(events, resumed_at):]
    bests = [e for e in events[:after_step(events, resumed_at)] if e.name == "training.new_best_model"]
    best = ({"metric": bests[-1].data["metric"], "value": bests[-1].data["value"], "epoch": bests[-1].data["epoch"]}
            if bests else {"metric": "val_loss", "value": None, "epoch": None})
    later = timedelta(hours=1)  # the second process starts an hour after the first was killed
    again = Event(started.name, {**started.data, "resumed_at_step": resumed_at, "best": best},
                  timestamp=first[-1].timestamp + later, source=started.source, correlation_id="r",
                  id="resumed-start")
    shift = again.timestamp - rest[0].timestamp + timedelta(milliseconds=5)  # the rest comes after it
    return first + [again] + [replace(e, timestamp=e.timestamp + shift) for e in rest]


def story(state: RunState) -> tuple:
    t = state.training
    epochs = [{k: v for k, v in row.items() if k != "duration"} for row in t.epoch_metrics]
    return (list(t.curve.xs("step")), list(t.curve.loss), list(t.curve.xs("samples")), epochs,
            [(m[0], m[3]) for m in t.curve.marks], t.best_value, t.best_epoch, t.status, t.step, t.epochs_done)


steps = st.integers(min_value=1, max_value=EPOCHS * STEPS - 1)


@given(killed_at=steps, back=st.integers(min_value=0, max_value=EPOCHS * STEPS))
def test_a_resumed_run_reads_as_the_run_never_interrupted(killed_at: int, back: int) -> None:
    resumed_at = max(0, killed_at - back)
    events = reference()
    log = interrupted(events, killed_at, resumed_at)

    whole, resumed = RunState(), RunState()
    whole.apply_all(events)
    resumed.apply_all(log)
    assert story(resumed) == story(whole)
    assert resumed.training.resumes == [resumed_at]
    times = list(resumed.training.curve.xs("time"))
    assert times == sorted(times) and times[-1] < list(whole.training.curve.xs("time"))[-1] + 2  # the hour is not on it

    one, two = RunRecord(path=None), RunRecord(path=None)  # type: ignore[arg-type]
    for event in events:
        one.feed(event)
    for event in log:
        two.feed(event)
    assert list(two.steps) == list(one.steps) and list(two.losses) == list(one.losses)
    assert two.epochs == one.epochs and two.final == one.final and two.status == one.status
    assert two.wall_s is not None and one.wall_s is not None and math.isclose(two.wall_s, one.wall_s, abs_tol=2.0)
