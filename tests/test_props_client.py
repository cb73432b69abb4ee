"""Properties of the client API over generated metrics: what `run.log` takes is what the log gives back;
what it refuses, it refuses with a `LogError` naming the key."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kbert_tui
from kbert_tui.client import OUTBOX_NAME, RESERVED_KEYS, LogError
from kbert_tui.events import catalog as ev
from kbert_tui.events.store import read_events

names = st.text(min_size=1, max_size=20).filter(lambda k: k not in RESERVED_KEYS)
plain = st.one_of(st.integers(-2**53, 2**53), st.floats(allow_nan=False, allow_infinity=False))
numpy_scalars = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32).map(np.float32),
                          st.floats(allow_nan=False, allow_infinity=False).map(np.float64),
                          st.integers(-2**31, 2**31 - 1).map(np.int32))
values = st.one_of(plain, numpy_scalars)
metric_dicts = st.dictionaries(names, values, max_size=6)
logs = st.lists(st.tuples(metric_dicts, st.one_of(st.none(), st.integers(0, 10**9)), st.booleans()),
                min_size=1, max_size=8)


def watched_run(monkeypatch: pytest.MonkeyPatch, folder: Path) -> kbert_tui.Run:
    """A run writing to an outbox (the `watch` path): the same events, without a session per example."""
    (folder / OUTBOX_NAME).write_bytes(b"")
    monkeypatch.setenv("KBERT_TUI_RUN_DIR", str(folder))
    monkeypatch.setenv("KBERT_TUI_RUN_ID", "prop-run")
    return kbert_tui.init("prop")


def plain_value(value):
    return value.item() if isinstance(value, np.generic) else value


@given(logs)
def test_what_log_takes_comes_back_from_the_log(monkeypatch, entries):
    with tempfile.TemporaryDirectory() as folder, monkeypatch.context() as patch:
        run = watched_run(patch, Path(folder))
        expected = []
        last_step = 0
        for epoch, (metrics, step, is_epoch) in enumerate(entries, start=1):
            if is_epoch:
                run.log(metrics, epoch=epoch, step=step)
                expected.append((ev.TRAINING_EPOCH_COMPLETED, {k: plain_value(v) for k, v in metrics.items()}))
                last_step = step if step is not None else last_step
                continue
            run.log(metrics, step=step)
            last_step = last_step + 1 if step is None else step
            got = {k: plain_value(v) for k, v in metrics.items()}
            if "loss" in got:
                expected.append((ev.TRAINING_BATCH_COMPLETED, {**got, "step": last_step}))
            else:
                expected.append((ev.TRAINING_EVALUATION_COMPLETED, {**got, "step": last_step}))
        run.finish()
        read = []
        for event in read_events(Path(folder) / OUTBOX_NAME):
            d = event.data
            if event.name == ev.TRAINING_BATCH_COMPLETED:
                read.append((event.name, {**d["metrics"], "loss": d["loss"], "step": d["step"]}))
            elif event.name == ev.TRAINING_EVALUATION_COMPLETED:
                read.append((event.name, {**d["metrics"], "step": d["step"]}))
            elif event.name == ev.TRAINING_EPOCH_COMPLETED:
                read.append((event.name, d["metrics"]))
            assert ev.check_payload(event.name, d) == [], event.name
        assert read == expected
        for (_, a), (_, b) in zip(read, expected, strict=True):  # ints stay ints, floats stay floats
            assert all(type(a[k]) is type(b[k]) for k in b)


bad_values = st.one_of(st.text(max_size=5), st.none(), st.booleans(), st.lists(st.floats(), min_size=2, max_size=3),
                       st.lists(st.floats(), min_size=2, max_size=3).map(np.array), st.dictionaries(names, plain))


@given(metric_dicts, names, bad_values)
def test_a_value_that_is_not_a_number_is_a_log_error_naming_its_key(monkeypatch, good, key, bad):
    with tempfile.TemporaryDirectory() as folder, monkeypatch.context() as patch:
        run = watched_run(patch, Path(folder))
        with pytest.raises(LogError) as raised:
            run.log({**good, key: bad})
        assert repr(key) in str(raised.value)
        run.finish()
        with pytest.raises(LogError, match="after run.finish"):
            run.log(good)
        assert [e.name for e in read_events(Path(folder) / OUTBOX_NAME)
                if e.name.startswith("training.")] == [ev.TRAINING_STARTED, ev.TRAINING_COMPLETED]


@given(metric_dicts, st.sampled_from(sorted(RESERVED_KEYS)), values)
def test_a_reserved_key_is_a_log_error_naming_it(monkeypatch, good, key, value):
    with tempfile.TemporaryDirectory() as folder, monkeypatch.context() as patch:
        run = watched_run(patch, Path(folder))
        with pytest.raises(LogError, match=f"'{key}' is reserved"):
            run.log({**good, key: value})
        run.finish()


def test_non_finite_values_are_kept():
    import os

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / OUTBOX_NAME).write_bytes(b"")
        os.environ.update(KBERT_TUI_RUN_DIR=folder, KBERT_TUI_RUN_ID="nan-run")
        try:
            run = kbert_tui.init("nan")
            run.log({"loss": float("nan"), "grad": float("inf")})
            run.finish()
        finally:
            del os.environ["KBERT_TUI_RUN_DIR"], os.environ["KBERT_TUI_RUN_ID"]
        batch = next(e.data for e in read_events(Path(folder) / OUTBOX_NAME) if e.name == ev.TRAINING_BATCH_COMPLETED)
        loss, grad = batch["loss"], batch["metrics"]["grad"]
        assert (loss == "NaN" or math.isnan(loss)) and grad in ("Infinity", math.inf)


scalars = st.lists(st.tuples(st.sampled_from(["loss", "val/accuracy", "lr", "grad norm"]), st.integers(0, 10_000),
                             st.floats(allow_nan=False, allow_infinity=False, width=32)), max_size=40)


@given(scalars)
def test_scalars_imported_into_a_run_come_back_out_of_its_export(tags):
    """What `kbert-tui import` makes of a run's scalars, `kbert-tui export` gives back: the last value of each
    (tag, step), with its wall time."""
    from kbert_tui.events.store import JsonlStore
    from kbert_tui.tboard import Scalar, run_scalars, scalar_events

    given_scalars = [Scalar(step, 1_700_000_000.0 + step, tag, float(value)) for tag, step, value in tags]
    expected = {(s.tag, s.step): s.value for s in given_scalars}
    with tempfile.TemporaryDirectory() as folder:
        store = JsonlStore(Path(folder) / "events.jsonl")
        for event in scalar_events("prop", "prop-run", given_scalars, "generated"):
            assert ev.check_payload(event.name, event.data) == [], event.name
            store.append(event)
        store.close()
        back = run_scalars(Path(folder) / "events.jsonl")
    assert {(s.tag, s.step): s.value for s in back} == expected
    assert len(back) == len(expected)
    assert all(s.wall_time == 1_700_000_000.0 + s.step for s in back)
