"""What `run --headless`, `replay` and `attach` print without a terminal holds for any payload: every event
name of the catalogue with generated data (missing keys, other types, NaN, huge numbers, escape sequences)
prints at most its line, never raises, and never writes a control character to the terminal."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from functools import partial
from datetime import datetime, UTC

from hypothesis import given
from hypothesis import strategies as st

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.events.catalog import SPECS
from kbert_tui.headless import Progress, print_progress, print_summary
from kbert_tui.state import RunState

# what a terminal could act on: C0 but newline, DEL, C1 (a lone \x9b is CSI on some terminals)
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
HOSTILE = ["\x1b]0;PWNED-TITLE\x07\x1b[2J", "\x1b[31mred", "\x9b2J", "a\rb", "[bold]x[/]", "\u202eevil", "\x00"]

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e308, 5e-324, 1e16])
           | st.text(max_size=12) | st.sampled_from(HOSTILE))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.sampled_from(["val_accuracy", "loss", "metric"]),
                                        inner, max_size=3), max_leaves=8)
# the keys the printers read, whatever the catalogue declares, so each one is tried missing and mistyped
READ_KEYS = ("metrics", "final_metrics", "best", "blas", "epoch", "step", "duration", "total_duration", "model_type",
             "num_parameters", "device", "total_epochs", "steps_per_epoch", "reason", "checkpoint_path", "requested_by",
             "rule", "action", "restored_epoch", "predictions_path", "id_column_detected", "model", "val_accuracy",
             "val_f1", "features", "seconds")
metric_dicts = st.dictionaries(st.sampled_from(["train_loss", "val_loss", "val_accuracy", "val_f1", "samples_per_sec",
                                                "encoder_val_accuracy"]), scalars, max_size=6)


def payloads(name: str) -> st.SearchStrategy[dict]:
    spec = SPECS[name]
    keys = sorted(set(READ_KEYS) | spec.required | spec.optional)
    optional = {key: (metric_dicts | values) if key.endswith("metrics") or key in ("best", "blas") else values
                for key in keys}
    return st.fixed_dictionaries({}, optional=optional)


events = st.sampled_from(sorted(SPECS)).flatmap(
    lambda name: st.builds(Event, name=st.just(name), data=payloads(name), source=st.sampled_from(["trainer",
                                                                                                   *HOSTILE]),
                           metadata=st.sampled_from([{}, {"rank": 0}, {"rank": 1}, {"rank": True}])))


def printed(call) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        call()
    return out.getvalue(), err.getvalue()


@given(st.lists(events, min_size=1, max_size=6))
def test_progress_prints_a_line_for_any_payload_and_no_control_character(batch):
    progress = Progress()
    for event in batch:
        out, err = printed(partial(progress, event))
        assert out.count("\n") <= 2 and err.count("\n") <= 1  # a long path or BLAS name goes on a line of its own
        assert not CONTROL.search(out + err), (event, out + err)


@given(st.lists(events, min_size=1, max_size=8))
def test_the_summary_of_any_history_prints_without_control_characters(batch):
    state = RunState()
    for event in batch:
        state.apply(event)
    out, err = printed(lambda: print_summary("runs/x/events.jsonl", state, 1, "line 3: \x1b[2Jbad", recording=True))
    assert "runs/x/events.jsonl" in out and not CONTROL.search(out + err)


# ---------------------------------------------------------------------- the payloads that crashed attach (issue 19)

def test_the_payloads_that_raised_print_a_line_each():
    cases = [
        (ev.TRAINING_EPOCH_COMPLETED, {"epoch": 3, "duration": 1.5}, "epoch 3: train_loss -"),  # KeyError: 'metrics'
        (ev.TRAINING_STARTED, {"num_parameters": 10, "device": "cpu"}, "training ? (10 parameters) on cpu"),
        (ev.TRAINING_EPOCH_COMPLETED, {"epoch": 1, "metrics": {}, "duration": "slow"}, "(- s, - samples/s)"),
        (ev.TRAINING_COMPLETED, {"total_duration": None}, "completed in - s"),
        (ev.TRAINING_STOPPED, {"reason": "user", "checkpoint_path": None}, "stopped at step ? (user)"),
    ]
    for name, data, expected in cases:
        out, _ = printed(partial(print_progress, Event(name=name, data=data)))
        assert expected in out, (name, out)


def test_an_escape_sequence_in_requested_by_is_shown_not_sent():
    event = Event(name=ev.TRAINING_PAUSED, data={"step": 6, "requested_by": "\x1b]0;PWNED-TITLE\x07\x1b[2J"},
                  timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    out, _ = printed(lambda: print_progress(event))
    assert out == "paused at step 6 by ␛]0;PWNED-TITLE␇␛[2J; resume from `kbert-tui attach`\n"


def test_a_huge_value_is_cut_to_one_short_line():
    event = Event(name=ev.TRAINING_PAUSED, data={"step": 6, "requested_by": "x" * 262_144})
    out, _ = printed(lambda: print_progress(event))
    assert out.count("\n") == 1 and len(out) < 400 and "…" in out


def test_a_resume_after_a_pause_prints_its_line():
    event = Event(name=ev.TRAINING_RESUMED, data={"epoch": 1, "step": 6, "requested_by": "tui"})
    out, _ = printed(lambda: print_progress(event))
    assert out == "resumed at step 6 by tui\n"


figures = st.none() | st.floats(min_value=0, max_value=10)  # losses, accuracies: what a run reports
epoch_payloads = st.fixed_dictionaries({
    "epoch": st.integers(min_value=1, max_value=9999),
    "duration": st.none() | st.floats(min_value=0, max_value=99_999),
    "metrics": st.fixed_dictionaries({}, optional={
        "train_loss": figures, "val_loss": figures, "val_accuracy": figures, "val_f1": figures,
        "encoder_val_accuracy": figures, "samples_per_sec": st.none() | st.floats(min_value=0, max_value=999_999)}),
})


@given(epoch_payloads, st.sampled_from([None, "bag-of-words 0.770", "logistic-regression 0.812"]))
def test_an_epoch_line_fits_120_columns_and_keeps_its_accuracy(data, baseline):
    out, _ = printed(lambda: print_progress(Event(name=ev.TRAINING_EPOCH_COMPLETED, data=data), baseline))
    line = out.rstrip("\n")
    assert len(line) <= 120, line
    assert line.startswith(f"epoch {data['epoch']:,}: train_loss ") and " val_acc " in line and " val_f1 " in line
    assert line.endswith(f" · {baseline}" if baseline else ")")


def test_the_start_and_end_lines_fit_120_columns_with_long_paths_and_library_names():
    started = Event(ev.TRAINING_STARTED, {"model_type": "bert", "num_parameters": 22_600_000, "device": "cpu",
                                          "blas": {"summary": "OpenBLAS 0.3.33 (ngsolve-openblas wheel, Haswell "
                                                   "kernels, 2 threads)"}, "total_epochs": 3, "steps_per_epoch": 1250})
    completed = Event(ev.TRAINING_COMPLETED, {
        "total_duration": 231.4, "final_metrics": {"val_accuracy": 0.9043, "encoder_val_accuracy": 0.8912},
        "restored_epoch": 2, "best": {"metric": "val_accuracy"},
        "predictions_path": "/home/someone/experiments/tweets/runs/minilm-20261205-031522-ab12/predictions.csv"})
    for event in (started, completed):
        out, _ = printed(partial(print_progress, event, "bag-of-words 0.855"))
        assert out and all(len(line) <= 120 for line in out.splitlines()), out
        assert "OpenBLAS" in out or "predictions.csv" in out
