"""Rules that act on events: `[[rules]]` in the config, judged here on each event (no bus, no IO).

A rule is a `when` filter (the monitor's own filter language, `state.filter`) and one or more actions.
`RuleEngine.check(event)` returns the rules that fire on that event; `kbert_tui.rules.RuleRunner`
turns each firing into a `rule.fired` event and the control request it asks for.

`for = N`: the rule fires when N events *of the same name* have matched in a row (one of that name
that doesn't match starts the count again), and again after N more; `once = true`: at most once a run.
Events the rules themselves emitted (source "rules") are never judged, so a rule can't feed itself.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev

from .filter import EventMatcher, FilterSyntaxError, is_event_name, parse_filter

__all__ = ["ACTIONS", "CONTROL_REQUESTS", "RULE_KEYS", "RULES_SOURCE", "Firing", "Rule", "RuleEngine", "RuleProblem",
           "parse_rule", "undeclared_event"]

ACTIONS: dict[str, str] = {
    "pause": "pause the run (control.pause_requested)",
    "stop": "stop the run, saving a checkpoint (control.stop_requested)",
    "checkpoint": "save a checkpoint now and go on (control.checkpoint_requested)",
    "notify": "terminal bell and a banner in the monitor; a desktop notification where desktop-notifier is installed",
    "emit": "emit the event named by `event`, for plugins to react to",
}
"""Each action a rule may take, with what it does (the docs and errors list these)."""

CONTROL_REQUESTS = {"pause": ev.CONTROL_PAUSE_REQUESTED, "stop": ev.CONTROL_STOP_REQUESTED,
                    "checkpoint": ev.CONTROL_CHECKPOINT_REQUESTED}
RULES_SOURCE = "rules"
RULE_KEYS = ("when", "action", "name", "for", "once", "event", "custom_event")
"""The keys of a `[[rules]]` table (the docs' key list follows this)."""


class RuleProblem(ValueError):
    """A rule that can't be used: `key` is the rule's key at fault, `position` the column in `when`."""

    def __init__(self, key: str, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Rule:
    """One `[[rules]]` table, checked."""

    name: str
    when: str
    actions: tuple[str, ...]
    for_events: int = 1  # `for` in the config: matching events in a row before it fires
    once: bool = False
    event: str | None = None  # what `emit` emits
    custom_event: bool = False  # `when` may name events no producer declares


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def parse_rule(table: Mapping[str, Any], number: int) -> Rule:
    """Check one rule table (`number` is its 1-based place, the default name); raise RuleProblem."""
    if not isinstance(table, Mapping):
        raise RuleProblem("", f"expected a table ([[rules]]), got {_show(table)}")
    for key in table:
        if key not in RULE_KEYS:
            raise RuleProblem(str(key), f"unknown key (known keys: {', '.join(RULE_KEYS)})")
    name = table.get("name", f"rule {number}")
    if not isinstance(name, str) or not name.strip():
        raise RuleProblem("name", f"expected a non-empty string, got {_show(name)}")
    when = table.get("when")
    if not isinstance(when, str) or not when.strip():
        raise RuleProblem("when", 'expected a filter expression, e.g. "training.batch_completed loss>5"'
                          + ("" if when is None else f", got {_show(when)}"))
    try:
        matcher = parse_filter(when)
    except FilterSyntaxError as error:
        raise RuleProblem("when", f"{error.message} at column {error.position + 1}: {when!r}",
                          error.position) from None
    if matcher.scopes:
        raise RuleProblem("when", "epoch:/step:/caused-by: need the monitor's log; use epoch=N / step=N in a rule")
    raw = table.get("action")
    actions = (raw,) if isinstance(raw, str) else tuple(raw) if isinstance(raw, list) else None
    if not actions or not all(isinstance(a, str) for a in actions):
        raise RuleProblem("action", f"expected one of {', '.join(ACTIONS)} or a list of them"
                          + ("" if raw is None else f", got {_show(raw)}"))
    for action in actions:
        if action not in ACTIONS:
            raise RuleProblem("action", f"unknown action {action!r} (actions: {', '.join(ACTIONS)})")
    if len(set(actions)) != len(actions):
        raise RuleProblem("action", f"an action is listed twice: {list(actions)}")
    count = table.get("for", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise RuleProblem("for", f"expected a whole number >= 1 (events in a row), got {_show(count)}")
    once = table.get("once", False)
    if not isinstance(once, bool):
        raise RuleProblem("once", f"expected true or false, got {_show(once)}")
    event = table.get("event")
    if "emit" in actions:
        if not isinstance(event, str) or not is_event_name(event):  # so a rule's `when` can name it too
            raise RuleProblem("event", 'action "emit" needs event = "a dotted.name" to emit'
                              + ("" if event is None else f", got {_show(event)}"))
    elif event is not None:
        raise RuleProblem("event", 'only meaningful with action "emit"')
    custom_event = table.get("custom_event", False)
    if not isinstance(custom_event, bool):
        raise RuleProblem("custom_event", f"expected true or false, got {_show(custom_event)}")
    return Rule(name.strip(), when, actions, count, once, event, custom_event)


def undeclared_event(rule: Rule, declared: Collection[str]) -> RuleProblem | None:
    """The first event name or name glob in `rule.when` that matches no `declared` name (a misspelt
    name never fires), with the nearest declared one; None when all match or the rule opted out."""
    if rule.custom_event:
        return None
    for term in parse_filter(rule.when).names:
        if term.is_glob:
            glob = re.compile(fnmatch.translate(term.pattern), re.DOTALL)
            if any(glob.match(name) for name in declared):
                continue
            candidates = sorted({*declared, *(name.partition(".")[0] + ".*" for name in declared)})
        elif term.pattern in declared:
            continue
        else:
            candidates = sorted(declared)
        close = difflib.get_close_matches(term.pattern, candidates, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return RuleProblem("when", f"no producer declares an event named {term.pattern!r}{hint} at column "
                           f"{term.position + 1}; for an event of your own add custom_event = true to the rule",
                           term.position)
    return None


@dataclass(frozen=True)
class Firing:
    """A rule that fired on `event`: its actions are due now."""

    rule: Rule
    event: Event
    count: int  # matching events of that name in a row
    reason: str


class RuleEngine:
    """Judges events against the rules, keeping the in-a-row counts and which `once` rules have fired."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._matchers = [parse_filter(rule.when) for rule in self.rules]
        self._streaks: list[dict[str, int]] = [{} for _ in self.rules]
        self._spent = [False] * len(self.rules)
        self.fired = [0] * len(self.rules)

    def check(self, event: Event) -> list[Firing]:
        if event.source == RULES_SOURCE:
            return []
        out: list[Firing] = []
        for i, rule in enumerate(self.rules):
            if self._spent[i]:
                continue
            streaks = self._streaks[i]
            matcher = self._matchers[i]
            if not matcher.matches(event):
                if event.name in streaks:
                    streaks[event.name] = 0
                continue
            count = streaks.get(event.name, 0) + 1
            if count < rule.for_events:
                streaks[event.name] = count
                continue
            streaks[event.name] = 0
            self.fired[i] += 1
            if rule.once:
                self._spent[i] = True
            out.append(Firing(rule, event, count, _reason(rule, matcher, event, count)))
        return out


def _reason(rule: Rule, matcher: EventMatcher, event: Event, count: int) -> str:
    """`training.batch_completed loss=6.1 (step 40)`, plus `3 in a row` when `for` asked for it."""
    shown = matcher.shown_fields(event)
    where = [f"{key} {event.data[key]}" for key in ("epoch", "step") if isinstance(event.data.get(key), int)
             and f"{key}=" not in shown]
    text = event.name + (f" {shown}" if shown else "") + (f" ({', '.join(where)})" if where else "")
    return text + (f", {count} in a row" if rule.for_events > 1 else "")
