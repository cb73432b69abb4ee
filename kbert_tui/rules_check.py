"""`kbert-tui rules check CONFIG RUN…`: a config's `[[rules]]` tried on recorded runs.

Each run's log is fed, oldest event first, to the same `RuleRunner` that acts on a live run; what it
would have emitted is recorded instead of acted on, and each `rule.fired` is printed under its rule with
the step, the time, the event that triggered it and the action. A new process of the run (a
`training.started`, as after `run --resume`) gets a new runner, as it would live: `once` and `for`
counts start again.

Exit status: 0 when a rule would have fired on some run, 1 when none would have, 2 for a config or a
run that can't be read (one line saying which and why).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from kbert_tui.events import Event, EventBus
from kbert_tui.events import catalog as ev
from kbert_tui.rules import RuleRunner
from kbert_tui.state.rules import Rule
from kbert_tui.state.summary import printable

__all__ = ["RuleFiring", "check_rules", "format_check"]


@dataclass(frozen=True)
class RuleFiring:
    """One time a rule would have fired: on which step and when, on which event, doing what."""

    rule: str
    step: int | None
    at: datetime
    since_start: float  # seconds since the log's first event
    trigger: str
    action: str
    reason: str


class _Recorder:
    """Stands in for the bus: keeps what the runner would emit (rule.fired and its requests) instead."""

    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []

    def emit_sync(self, event_name: str, data: dict[str, Any] | None = None, *, source: str | None = None,
                  correlation_id: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        if event_name == ev.RULE_FIRED and data is not None:
            self.fired.append(data)


def check_rules(rules: Sequence[Rule], events: Iterable[Event]) -> list[RuleFiring]:
    """Every firing of `rules` over `events` (oldest first), in order."""
    recorder = _Recorder()
    runner: RuleRunner | None = None
    out: list[RuleFiring] = []
    first: datetime | None = None
    step: int | None = None
    starts = 0
    for event in events:
        first = first or event.timestamp
        data = event.data if isinstance(event.data, dict) else {}
        if isinstance(data.get("step"), int) and not isinstance(data.get("step"), bool):
            step = data["step"]
        if event.name == ev.TRAINING_STARTED:
            starts += 1
        if runner is None or event.name == ev.TRAINING_STARTED and starts > 1:
            # the recorder stands in for the bus: the runner subscribes only in start(), never called here
            runner = RuleRunner(cast(EventBus, recorder), rules, None, notify=lambda title, message: None)
        runner.on_event(event)
        for fired in recorder.fired:
            out.append(RuleFiring(str(fired["rule"]), step, event.timestamp,
                                  (event.timestamp - first).total_seconds(), event.name, str(fired["action"]),
                                  str(fired.get("reason", ""))))
        recorder.fired.clear()
    return out


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"+{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def format_check(rules: Sequence[Rule], runs: Sequence[tuple[str, list[RuleFiring]]]) -> str:
    """The report: each run, each rule with its firings (step, time, trigger, action, why) or "never fired"."""
    lines: list[str] = []
    for label, firings in runs:
        lines.append(f"{printable(label)}: {len(firings)} firing{'s' if len(firings) != 1 else ''}")
        for rule in rules:
            mine = [f for f in firings if f.rule == rule.name]
            actions = ", ".join(rule.actions)
            head = f"  {printable(rule.name)} (when {printable(rule.when)}; {actions})"
            if not mine:
                lines.append(f"{head}: never fired")
                continue
            lines.append(f"{head}: {len(mine)}×")
            for f in mine:
                step = f"step {f.step}" if f.step is not None else "step —"
                reason = printable(f.reason.removeprefix(f.trigger).strip())
                lines.append(f"    {step:<12} {f.at.strftime('%H:%M:%S')} {_clock(f.since_start)}  "
                             f"{printable(f.trigger)}  {f.action}  {reason}")
    return "\n".join(lines) + "\n"


def rules_check_command(config_path: str, runs: Sequence[str]) -> int:
    """`kbert-tui rules check CONFIG RUN…` (exit status in the module's docstring)."""
    import sys

    from kbert_tui.cli import _error, _os_problem
    from kbert_tui.config import load_config
    from kbert_tui.errors import ConfigError
    from kbert_tui.events.store import read_events
    from kbert_tui.lifecycle import EXIT_FAILED, EXIT_OK
    from kbert_tui.remote import resolve_run

    try:
        config = load_config(config_path)
    except ConfigError as error:
        return _error(str(error))
    if not config.rules:
        return _error(f"{config_path}: no [[rules]] to check")
    reports: list[tuple[str, list[RuleFiring]]] = []
    for run in runs:
        try:
            reader = read_events(resolve_run(run).events_path)
            events = list(reader)
        except OSError as error:  # resolve_run's messages name the path; open()'s carry it in .filename
            return _error(f"{run}: {_os_problem(error)}" if error.filename else str(error))
        if not events:
            what = "empty" if reader.lines == 0 else f"none of its {reader.lines:,} lines is an event"
            return _error(f"{run}: not a run's events log ({what})")
        reports.append((run, check_rules(config.rules, events)))
    sys.stdout.write(format_check(config.rules, reports))
    return EXIT_OK if any(firings for _, firings in reports) else EXIT_FAILED
