"""The filter language: every kind of term, AND/negation, and errors that say where."""

from __future__ import annotations

from datetime import datetime, UTC

import pytest

from kbert_tui.events import Event
from kbert_tui.state import FilterSyntaxError, parse_filter

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(name: str, data: dict | None = None, source: str = "trainer", corr: str | None = "run-1") -> Event:
    return Event(name=name, data=data or {}, timestamp=T0, source=source, correlation_id=corr)


BATCH = ev("training.batch_completed", {"step": 7, "loss": 0.42, "metrics": {"grad_norm": 1.5, "lr": 1e-4}})
EPOCH = ev("training.epoch_completed", {"epoch": 2, "metrics": {"val_loss": 0.3}})
CPU = ev("system.cpu_usage", {"percent": 97.5, "per_cpu": [90, 99]}, source="system")
PLUGIN = ev("plugin.error", {"plugin_name": "early_stopping", "error": "Boom in handler"},
            source="plugin:early_stopping", corr="other-7")
FLAGS = ev("data.validation_completed", {"passed": False, "issues": ["x"], "note": None})
ALL = [BATCH, EPOCH, CPU, PLUGIN, FLAGS]


def names(query: str) -> list[str]:
    matcher = parse_filter(query)
    return [e.name for e in ALL if matcher.matches(e)]


def test_empty_query_matches_everything_and_is_falsy():
    matcher = parse_filter("   ")
    assert not matcher
    assert names("") == [e.name for e in ALL]


def test_name_glob():
    assert names("training.*") == ["training.batch_completed", "training.epoch_completed"]
    assert names("*.error") == ["plugin.error"]
    assert names("name:system.*") == ["system.cpu_usage"]


def test_key_value_and_dotted_paths():
    assert names("step=7") == ["training.batch_completed"]
    assert names("metrics.grad_norm=1.5") == ["training.batch_completed"]
    assert names("plugin_name=early_*") == ["plugin.error"]
    assert names("passed=false") == ["data.validation_completed"]
    assert names("note=null") == ["data.validation_completed"]
    assert names("per_cpu.1=99") == ["system.cpu_usage"]


def test_numeric_comparisons():
    assert names("loss<0.5") == ["training.batch_completed"]
    assert names("loss>0.5") == []
    assert names("percent>=97.5") == ["system.cpu_usage"]
    assert names("metrics.val_loss<=0.3") == ["training.epoch_completed"]
    assert names("epoch>1") == ["training.epoch_completed"]


def test_source_and_correlation():
    assert names("source:system") == ["system.cpu_usage"]
    assert names("source:plugin:*") == ["plugin.error"]
    assert names("corr:other-7") == ["plugin.error"]
    assert names("corr:run-*") == [e.name for e in ALL if e.correlation_id == "run-1"]


def test_free_text_is_case_insensitive_and_quoted_text_keeps_spaces():
    assert names("boom") == ["plugin.error"]
    assert names('"boom in handler"') == ["plugin.error"]
    assert names('"in boom"') == []


def test_terms_and_together_and_negate():
    assert names("training.* loss<1") == ["training.batch_completed"]
    assert names("training.* AND epoch=2") == ["training.epoch_completed"]
    assert names("!training.*") == ["system.cpu_usage", "plugin.error", "data.validation_completed"]
    assert names("!source:system !training.*") == ["plugin.error", "data.validation_completed"]
    assert names('!"boom"') == [e.name for e in ALL if e is not PLUGIN]
    assert names("key!=1") == [e.name for e in ALL]  # missing fields differ


def test_missing_field_never_matches_a_comparison():
    assert names("nonexistent>0") == []
    assert names("nonexistent=1") == []


@pytest.mark.parametrize(
    ("query", "position", "fragment"),
    [
        ("loss>", 5, "needs a number"),
        ("training.* loss>abc", 16, "not a number"),
        ("!", 0, "needs a term"),
        ('"unclosed', 0, "unclosed quote"),
        ("ok source:", 3, "needs a value"),
        ("a OR", 2, "OR needs a term after it"),
        ("OR b", 0, "OR needs a term before it"),
        ("training.* (loss>5 OR loss=1", 11, "unclosed '('"),
        ("loss>5)", 6, "')' without a matching '('"),
        ("a ()", 2, "empty parentheses"),
        ("(epoch:2 OR loss>1)", 1, "outside OR and parentheses"),
        ("x OR step:3", 5, "outside OR and parentheses"),
        ("(loss>)", 6, "needs a number"),
        ("=5", 0, "field name"),
        ("train[ing", 5, "unclosed '['"),
        ("a..b=1", 0, "bad field path"),
    ],
)
def test_bad_syntax_names_the_column(query: str, position: int, fragment: str):
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(query)
    assert info.value.position == position
    assert fragment in info.value.message
    assert f"column {position + 1}" in str(info.value)


def test_a_dotted_word_is_an_exact_event_name_and_quotes_make_it_text():
    assert names("training.batch_completed") == ["training.batch_completed"]
    assert names("training.batch") == []
    assert names('"training.batch"') == ["training.batch_completed"]
    assert names("0.42") == ["training.batch_completed"]  # not a name: free text


def test_a_bare_key_also_finds_a_field_one_level_down():
    assert names("val_loss<0.5") == ["training.epoch_completed"]
    assert names("grad_norm>1") == ["training.batch_completed"]
    assert names("metrics.val_loss<0.5") == ["training.epoch_completed"]


NAN_BATCH = ev("training.batch_completed", {"step": 8, "loss": float("nan")})
LOGGED_NAN = ev("training.batch_completed", {"step": 9, "loss": "NaN"})  # how the JSONL log writes NaN


def test_or_matches_either_side_and_and_binds_tighter():
    assert names("system.* OR plugin.*") == ["system.cpu_usage", "plugin.error"]
    assert names("training.* epoch=2 OR source:system") == ["training.epoch_completed", "system.cpu_usage"]
    assert names("training.* (epoch=2 OR step=7)") == ["training.batch_completed", "training.epoch_completed"]
    assert names("training.* || system.*") == ["training.batch_completed", "training.epoch_completed",
                                               "system.cpu_usage"]


def test_groups_nest_and_negate():
    assert names("!(training.* OR system.*)") == ["plugin.error", "data.validation_completed"]
    assert names("((step=7) OR (epoch=2 val_loss<0.5)) loss<1") == ["training.batch_completed"]
    assert names("!(boom)") == [e.name for e in ALL if e is not PLUGIN]


def test_a_parenthesis_inside_a_value_at_top_level_stays_part_of_it():
    matcher = parse_filter("error=f(x)")
    assert matcher.matches(ev("plugin.error", {"error": "f(x)"}))
    assert parse_filter('(error="f(x)" OR loss>1)').matches(ev("plugin.error", {"error": "f(x)"}))


def test_nan_matches_a_nan_float_and_the_logged_string():
    matcher = parse_filter("training.batch_completed (loss>5 OR loss=NaN)")
    assert matcher.matches(NAN_BATCH) and matcher.matches(LOGGED_NAN)
    assert matcher.matches(ev("training.batch_completed", {"loss": 6.0}))
    assert not matcher.matches(BATCH)
    assert not parse_filter("loss=nan").matches(BATCH)


def test_scopes_stay_at_the_top_level_beside_an_or_group():
    matcher = parse_filter("epoch:2 (loss<1 OR val_loss<1)")
    assert matcher.scopes == (("epoch", 2, False),)
    assert matcher.matches(BATCH) and matcher.matches(EPOCH)


def test_fields_inside_or_are_shown():
    matcher = parse_filter("loss>5 OR grad_norm>1")
    assert matcher.fields == (("loss",), ("grad_norm",))
