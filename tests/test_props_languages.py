"""The filter and rule languages against generated text (issue 19).

Any text either parses or raises FilterSyntaxError / RuleProblem with a column inside the text, never
another exception, and a parsed filter never raises on an event. Queries built from the documented
grammar (state/filter.py's docstring) are judged twice on generated events: by `parse_filter` and by
the plain reference evaluator below, which walks the generated tree; the answers must agree. The
rule engine is checked the same way against a reference of what `for` and `once` mean.
"""

from __future__ import annotations

import fnmatch
import json
import math
from datetime import datetime, UTC
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kbert_tui.events import Event
from kbert_tui.state.filter import FilterSyntaxError, parse_filter
from kbert_tui.state.rules import ACTIONS, RULE_KEYS, RuleEngine, RuleProblem, parse_rule

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MISSING = object()

# ------------------------------------------------------------------ generated events

NAMES = ["training.started", "training.batch_completed", "training.epoch_completed", "system.cpu_usage",
         "data.cache_hit", "my-app.custom_x"]
SOURCES = ["trainer", "system", "plugin:csv", "plugin:summary", "rules"]
WORDS = ["alpha", "beta", "ok", "fail", "batch", "trainer"]  # free text: no dots, globs, operators, nan/null
FLOATS = [0.0, 0.5, 1.25, 3.0, 6.25, -1.5, math.nan]
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 8), st.sampled_from(FLOATS), st.sampled_from(WORDS))


@st.composite
def events(draw: Any) -> Event:
    data: dict[str, Any] = {}
    for key in draw(st.sets(st.sampled_from(["loss", "epoch", "step", "status", "val_accuracy"]))):
        data[key] = draw(LEAF)
    if draw(st.booleans()):
        data["metrics"] = {k: draw(LEAF) for k in draw(st.sets(st.sampled_from(["val_accuracy", "loss", "f1"])))}
    return Event(draw(st.sampled_from(NAMES)), data, T0, draw(st.sampled_from(SOURCES)),
                 draw(st.sampled_from([None, "run-1", "run-22"])))


# ------------------------------------------------------------------ the grammar, as trees and as text

PATHS = ["loss", "epoch", "step", "status", "val_accuracy", "f1", "metrics.val_accuracy", "metrics.loss"]
NUMBERS = ["0", "1", "2", "-1", "0.5", "1.25", "3", "6.25", "-1.5"]
EQ_VALUES = NUMBERS + WORDS + ["true", "false", "null", "NaN", "f*", "o?", "*a*"]


def leaves() -> st.SearchStrategy[tuple]:
    return st.one_of(
        st.tuples(st.just("name"), st.sampled_from(NAMES)),
        st.tuples(st.just("glob"), st.sampled_from(["training.*", "*.cpu_usage", "sys?em.*", "*", "train*", "x*"])),
        st.tuples(st.just("name:"), st.sampled_from(["training.*", "data.cache_hit", "nothing"])),
        st.tuples(st.just("source:"), st.sampled_from(["trainer", "plugin:*", "sys*", "nobody"])),
        st.tuples(st.just("corr:"), st.sampled_from(["run-1", "run-*", "other"])),
        st.tuples(st.just("cmp"), st.sampled_from(PATHS), st.sampled_from(["=", "!="]), st.sampled_from(EQ_VALUES)),
        st.tuples(st.just("cmp"), st.sampled_from(PATHS), st.sampled_from([">", "<", ">=", "<="]),
                  st.sampled_from(NUMBERS)),
        st.tuples(st.just("text"), st.sampled_from(WORDS)),
        st.tuples(st.just("quoted"), st.sampled_from(["alpha", "fail", "plugin:csv", "run-2"])),
    )


def trees() -> st.SearchStrategy[tuple]:
    def extend(inner: st.SearchStrategy[tuple]) -> st.SearchStrategy[tuple]:
        return st.one_of(
            st.tuples(st.just("not"), inner),
            st.tuples(st.just("and"), st.lists(inner, min_size=2, max_size=3), st.booleans()),
            st.tuples(st.just("or"), st.lists(inner, min_size=2, max_size=3)),
        )

    return st.recursive(leaves(), extend, max_leaves=8)


def render(node: tuple) -> str:
    kind = node[0]
    if kind in ("name", "glob", "text"):
        return node[1]
    if kind in ("name:", "source:", "corr:"):
        return kind + node[1]
    if kind == "cmp":
        return f"{node[1]}{node[2]}{node[3]}"
    if kind == "quoted":
        return f'"{node[1]}"'
    if kind == "not":
        inner = node[1]
        return "!" + (render(inner) if inner[0] not in ("and", "or", "not") else f"({render(inner)})")
    if kind == "and":
        parts = [render(c) if c[0] != "or" else f"({render(c)})" for c in node[1]]
        return (" AND " if node[2] else " ").join(parts)
    return " OR ".join(render(c) for c in node[1])


# ------------------------------------------------------------------ the reference evaluator


def resolve(event: Event, path: tuple[str, ...]) -> Any:
    data = event.data
    if path[0] not in data:  # a bare key also finds the first nested dict holding it
        data = next((v for v in data.values() if isinstance(v, dict) and path[0] in v), data)
    value: Any = data
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def equals(value: Any, expected: str) -> bool:
    wanted = number(expected)
    if wanted is not None and math.isnan(wanted):
        return (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and value.lower() == "nan")
    if value is MISSING:
        return False
    if value is None:
        return expected.lower() in ("null", "none")
    if isinstance(value, bool):
        return expected.lower() == str(value).lower()
    if isinstance(value, int | float):
        return wanted is not None and float(value) == wanted
    if any(c in expected for c in "*?["):
        return fnmatch.fnmatchcase(value, expected)
    return value == expected


def compare(value: Any, op: str, expected: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    bound = float(expected)
    return {">": value > bound, "<": value < bound, ">=": value >= bound, "<=": value <= bound}[op]


def text_of(event: Event) -> str:
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    return f"{event.name} {event.source} {event.correlation_id or ''} {data}".lower()


def reference(node: tuple, event: Event) -> bool:
    kind = node[0]
    if kind == "name":
        return event.name == node[1]
    if kind in ("glob", "name:"):
        return fnmatch.fnmatchcase(event.name, node[1])
    if kind == "source:":
        return fnmatch.fnmatchcase(event.source, node[1])
    if kind == "corr:":
        return fnmatch.fnmatchcase(event.correlation_id or "", node[1])
    if kind == "cmp":
        _, path, op, value = node
        found = resolve(event, tuple(path.split(".")))
        if op == "=":
            return equals(found, value)
        if op == "!=":
            return not equals(found, value)
        return compare(found, op, value)
    if kind in ("text", "quoted"):
        return node[1].lower() in text_of(event)
    if kind == "not":
        return not reference(node[1], event)
    if kind == "and":
        return all(reference(c, event) for c in node[1])
    return any(reference(c, event) for c in node[1])


# ------------------------------------------------------------------ properties


@given(trees(), st.lists(events(), min_size=1, max_size=12))
def test_a_grammar_query_matches_what_the_reference_evaluator_says(tree, sample):
    query = render(tree)
    matcher = parse_filter(query)
    for event in sample:
        assert matcher.matches(event) == reference(tree, event), (query, event)


QUERY_CHARS = st.sampled_from(list("ab.*?[]()!=<>:\"' -_019") + ["OR", "AND", "loss", "training.", "epoch:", "NaN",
                                                                   "source:", "caused-by:", "|", "é", "\t"])


@given(st.one_of(st.text(max_size=40), st.lists(QUERY_CHARS, max_size=25).map("".join),
                 st.tuples(trees(), st.integers(0, 60), QUERY_CHARS).map(
                     lambda t: (q := render(t[0]))[:t[1]] + t[2] + q[t[1]:])),
       st.lists(events(), max_size=4))
def test_any_text_is_a_filter_or_an_error_with_a_column_in_it(query, sample):
    try:
        matcher = parse_filter(query)
    except FilterSyntaxError as error:
        assert 0 <= error.position <= len(query), (query, error.position)
        assert f"at column {error.position + 1}" in str(error)
        return
    for event in sample:  # a parsed filter judges any event without raising
        assert matcher.matches(event) in (True, False)
        assert matcher.matches_alone(event) in (True, False)


# ------------------------------------------------------------------ rules


def rule_values() -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=20), st.integers(-2, 5), st.booleans(), st.none(), st.floats(allow_nan=True),
                     st.lists(st.sampled_from([*ACTIONS, "reboot"]), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                                 st.integers(),
                                                                                                 max_size=2))


@given(st.dictionaries(st.sampled_from([*RULE_KEYS, "whn", "actions", ""]), rule_values(), max_size=6),
       st.one_of(st.none(), trees().map(render), st.text(max_size=30)))
def test_any_rule_table_is_a_rule_or_a_problem_naming_its_key(table, when):
    if when is not None:
        table["when"] = when
    try:
        rule = parse_rule(table, 1)
    except RuleProblem as problem:
        assert problem.key in table or problem.key in ("when", "action")
        assert problem.message and "\n" not in problem.message
        if problem.position is not None:
            assert problem.key == "when" and 0 <= problem.position <= len(table["when"])
            assert f"at column {problem.position + 1}" in problem.message
        return
    assert rule.when == table["when"] and set(rule.actions) <= set(ACTIONS)


@settings(max_examples=40)
@given(st.lists(st.tuples(trees(), st.integers(1, 3), st.booleans()), min_size=1, max_size=3),
       st.lists(events(), max_size=30))
def test_the_rule_engine_fires_where_the_reference_says(specs, stream):
    rules = [parse_rule({"when": render(tree), "action": "notify", "for": count, "once": once}, n)
             for n, (tree, count, once) in enumerate(specs, 1)]
    engine = RuleEngine(rules)
    got = [(i, next(k for k, r in enumerate(rules) if r is f.rule), f.count)
           for i, event in enumerate(stream) for f in engine.check(event)]

    assert got == [(i, r, specs[r][1]) for i, r in reference_firings(specs, stream)]


def reference_firings(specs: list[tuple], stream: list[Event], judged: Any = lambda e: True) -> list[tuple[int, int]]:
    """(event position, rule position) of each firing: per rule and event name, a run of consecutive
    matches fires when it reaches `for` (and starts again); a non-matching event of that name ends the
    run; `once` fires only once; events the rules emitted (source "rules") are never judged.
    `specs` are (tree, for, once, …)."""
    fired = []
    runs: list[dict[str, int]] = [{} for _ in specs]
    spent = [False] * len(specs)
    for i, event in enumerate(stream):
        if event.source == "rules" or not judged(event):
            continue
        for r, (tree, count, once, *_) in enumerate(specs):
            if spent[r]:
                continue
            if not reference(tree, event):
                runs[r][event.name] = 0
                continue
            runs[r][event.name] = runs[r].get(event.name, 0) + 1
            if runs[r][event.name] == count:
                fired.append((i, r))
                runs[r][event.name] = 0
                spent[r] = once
    return fired


# ------------------------------------------------------------------ the runner on a real bus

RUNNER_ACTIONS = ["notify", "pause", "checkpoint", "emit", "stop"]


@given(st.lists(st.tuples(trees(), st.integers(1, 2), st.booleans(),
                          st.lists(st.sampled_from(RUNNER_ACTIONS), min_size=1, max_size=3, unique=True)),
                min_size=1, max_size=2),
       st.lists(events(), max_size=15))
def test_the_runner_turns_each_firing_into_its_events_linked_to_the_trigger(specs, stream):
    """kbert_tui.rules.RuleRunner on a bus: one rule.fired per reference firing and action, in order, each
    caused by its trigger, then the control request or emitted event caused by that rule.fired."""
    import asyncio

    from kbert_tui.events import EventBus
    from kbert_tui.rules import RuleRunner

    rules = [parse_rule({"name": f"r{n}", "when": render(tree), "action": actions, "for": count, "once": once,
                         **({"event": "alarm.raised"} if "emit" in actions else {})}, n)
             for n, (tree, count, once, actions) in enumerate(specs)]

    async def scenario() -> list[Event]:
        bus = EventBus()
        runner = RuleRunner(bus, rules, run_id="run-1", notify=lambda title, message: None)
        await runner.start()
        for n, event in enumerate(stream):
            await bus.emit(event.name, event.data, source=event.source, correlation_id=event.correlation_id,
                           metadata={"n": n})
        await bus.flush()
        await runner.stop()
        history = list(bus.history)
        await bus.shutdown()
        return history

    history = asyncio.run(scenario())
    position = {e.id: e.metadata["n"] for e in history if "n" in e.metadata}
    assert sorted(position.values()) == list(range(len(stream)))
    ours = reference_firings(specs, stream, lambda e: e.correlation_id in (None, "run-1"))  # its run's only
    expected = [(i, f"r{r}", action) for i, r in ours for action in specs[r][3]]
    fired = [e for e in history if e.name == "rule.fired"]
    assert [(position[e.data["caused_by"]], e.data["rule"], e.data["action"]) for e in fired] == expected
    assert all(e.metadata["caused_by"] == e.data["caused_by"] for e in fired)
    spans = {e.metadata["span_id"]: e.data["action"] for e in fired}
    follow_ups = [e for e in history if e.source == "rules" and "n" not in e.metadata and e.name != "rule.fired"]
    made = {"pause": "control.pause_requested", "checkpoint": "control.checkpoint_requested",
            "stop": "control.stop_requested", "emit": "alarm.raised"}
    assert sorted(e.name for e in follow_ups) == sorted(made[a] for a in spans.values() if a != "notify")
    assert all(made[spans[e.metadata["caused_by"]]] == e.name for e in follow_ups)
