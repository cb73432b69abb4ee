"""The rules of a run, acting on its bus: `[[rules]]` judged on every event (`state.rules.RuleEngine`).

Each firing emits `rule.fired` {rule, action, caused_by, trigger, reason, when, count}, linked to the
event that triggered it (metadata `caused_by`), then does the action through the same events the
monitor's keys use: `control.pause_requested`, `control.stop_requested`, `control.checkpoint_requested`
(each caused by its `rule.fired`), or the rule's own `event` for `emit`. `notify` is the `rule.fired`
itself (the monitor rings and shows a banner; headless prints a line) plus a desktop notification
when the optional desktop-notifier package is installed and a desktop answers.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kbert_tui.events import Event, EventBus
from kbert_tui.events import catalog as ev
from kbert_tui.state.rules import CONTROL_REQUESTS, RULES_SOURCE, Firing, Rule, RuleEngine

__all__ = ["RuleRunner", "desktop_notify"]


class RuleRunner:
    """Subscribes to every event of `bus` and acts on the firings of `rules` for run `run_id`."""

    def __init__(self, bus: EventBus, rules: Iterable[Rule], run_id: str | None = None,
                 notify: Callable[[str, str], None] | None = None) -> None:
        self.bus = bus
        self.engine = RuleEngine(rules)
        self.run_id = run_id
        self._notify = notify if notify is not None else desktop_notify
        self._subscription: str | None = None
        self._spans = itertools.count(1)

    async def start(self) -> None:
        if self.engine.rules:
            self._subscription = await self.bus.subscribe("*", self.on_event)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self.bus.unsubscribe(self._subscription)
            self._subscription = None

    def on_event(self, event: Event) -> None:
        if self.run_id is not None and event.correlation_id not in (None, self.run_id):
            return
        for firing in self.engine.check(event):
            for action in firing.rule.actions:
                self._act(firing, action)

    def _act(self, firing: Firing, action: str) -> None:
        rule, trigger = firing.rule, firing.event
        span = f"rule-{next(self._spans)}"
        if self.run_id is not None:
            span = f"{self.run_id}/{span}"
        self._emit(ev.RULE_FIRED, {
            "rule": rule.name, "action": action, "caused_by": trigger.id, "trigger": trigger.name,
            "reason": firing.reason, "when": rule.when, "count": firing.count,
        }, {"caused_by": trigger.id, "span_id": span})
        requested_by = f"rule:{rule.name}"
        if action in CONTROL_REQUESTS:
            data: dict[str, Any] = {"requested_by": requested_by}
            if action == "stop":
                data["reason"] = f"rule {rule.name}: {firing.reason}"
            self._emit(CONTROL_REQUESTS[action], data, {"caused_by": span})
        elif action == "emit":
            assert rule.event is not None
            self._emit(rule.event, {"rule": rule.name, "trigger": trigger.name, "reason": firing.reason,
                                    "trigger_data": trigger.data}, {"caused_by": span})
        elif action == "notify":
            self._notify(f"kbert-tui rule {rule.name}", firing.reason)

    def _emit(self, name: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.bus.emit_sync(name, data, source=RULES_SOURCE, correlation_id=self.run_id, metadata=metadata)


def desktop_notify(title: str, message: str) -> None:
    """A desktop notification through desktop-notifier, if installed; off the loop, never raising."""
    try:
        from desktop_notifier import DesktopNotifierSync  # type: ignore[import-not-found]
    except Exception:
        return

    def send() -> None:
        try:
            DesktopNotifierSync(app_name="kbert-tui").send(title=title, message=message)
        except Exception:  # no desktop session (ssh, CI): the banner and the bell still tell
            pass

    threading.Thread(target=send, name="kbert-notify", daemon=True).start()
