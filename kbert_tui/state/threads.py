"""Causation beneath the run id: which event caused which, and the epoch and step each event belongs to.

Every event of a run shares the run id as its correlation id; this index adds the structure under it.
An event's parent is, in order of preference:

1. `metadata["caused_by"]`: the id of the event that caused it, or a `metadata["span_id"]` another
   event of the run declared (emitters that can't know a bus-assigned id name a span instead);
2. `data["event_id"]` on `bus.handler_error` and `*.error` events: the event whose handler failed;
3. the rule for its kind, for recordings made before emitters said so (`CAUSE_RULES`): a
   `training.new_best_model` comes from the last `training.epoch_completed`, a
   `system.performance_recovered` from the warning on the same component and metric, a
   `training.paused` from the last `control.pause_requested`, ….

The epoch and step of an event are its own `data.epoch` / `data.step` when it has them, else those of
the last training step before it (a sampler reading taken during step 120 belongs to step 120), until
the run ends: what follows `training.completed` / `stopped` / `failed` belongs to no step or epoch.
"""

from __future__ import annotations

from array import array
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev

__all__ = ["RunThreads", "CAUSE_RULES", "NO_VALUE"]

NO_VALUE = -1

# event name -> the names whose latest occurrence caused it (first found wins)
CAUSE_RULES: dict[str, tuple[str, ...]] = {
    ev.TRAINING_EPOCH_COMPLETED: (ev.TRAINING_EPOCH_STARTED,),
    ev.TRAINING_EVALUATION_COMPLETED: (ev.TRAINING_BATCH_COMPLETED,),
    ev.TRAINING_NEW_BEST_MODEL: (ev.TRAINING_EPOCH_COMPLETED,),
    ev.TRAINING_EARLY_STOPPED: (ev.TRAINING_EPOCH_COMPLETED,),
    ev.MODEL_CHECKPOINT_SAVED: (ev.CONTROL_STOP_REQUESTED, ev.TRAINING_NEW_BEST_MODEL, ev.TRAINING_EPOCH_COMPLETED),
    ev.TRAINING_STOPPED: (ev.CONTROL_STOP_REQUESTED,),
    ev.TRAINING_PAUSED: (ev.CONTROL_PAUSE_REQUESTED,),
    ev.TRAINING_RESUMED: (ev.CONTROL_RESUME_REQUESTED,),
    ev.TRAINING_COMPLETED: (ev.TRAINING_EPOCH_COMPLETED,),
    ev.SYSTEM_PERFORMANCE_RECOVERED: (ev.SYSTEM_PERFORMANCE_WARNING,),
}
# A checkpoint or best model belongs to the epoch just completed: a rule only links within one epoch.
_SAME_EPOCH = {ev.TRAINING_NEW_BEST_MODEL, ev.TRAINING_EARLY_STOPPED}
_KEYED = {ev.SYSTEM_PERFORMANCE_WARNING, ev.SYSTEM_PERFORMANCE_RECOVERED}  # linked per component+metric


def _int(value: Any) -> int | None:
    """A step or epoch the int64 columns hold (NO_VALUE is -1, so a negative one is none either)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


class RunThreads:
    """Parents, children, epoch and step for the events of a bounded window (sequence numbers as in
    `EventLog`); `evict(seq)` forgets one that left the window."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._parent = array("q", [NO_VALUE]) * capacity
        self._epoch = array("q", [NO_VALUE]) * capacity
        self._step = array("q", [NO_VALUE]) * capacity
        self._children: dict[int, list[int]] = {}
        self._by_id: dict[str, int] = {}
        self._by_span: dict[str, int] = {}
        self._latest: dict[str, int] = {}  # name (or name + key) -> newest seq, for CAUSE_RULES
        self._epoch_now = NO_VALUE
        self._step_now = NO_VALUE
        self._pending_controls = 0

    # -- building ------------------------------------------------------------------------------------
    def add(self, seq: int, event: Event) -> None:
        slot = seq % self.capacity
        name = event.name
        data = event.data
        epoch = _int(data.get("epoch"))
        step = _int(data.get("step"))
        if name == ev.TRAINING_BATCH_COMPLETED:
            if step is not None:
                self._step_now = step
            if epoch is not None:
                self._epoch_now = epoch
        elif name == ev.TRAINING_EPOCH_STARTED and epoch is not None:
            self._epoch_now = epoch
        self._epoch[slot] = epoch if epoch is not None else self._epoch_now
        self._step[slot] = step if step is not None else self._step_now
        if name in _RUN_ENDS:  # what comes after (samples while the process closes) is in no step or epoch
            self._epoch_now = self._step_now = NO_VALUE
        self._by_id[event.id] = seq
        meta = event.metadata
        if meta:
            span = meta.get("span_id")
            if isinstance(span, str):
                self._by_span[span] = seq
        parent = self._find_parent(event, name, data, meta)
        self._parent[slot] = NO_VALUE if parent is None else parent
        if parent is not None:
            self._children.setdefault(parent, []).append(seq)
        if name in _RULE_TARGETS:
            self._latest[self._rule_key(name, data)] = seq

    def _rule_key(self, name: str, data: dict[str, Any]) -> str:
        if name in _KEYED:
            return f"system.performance_warning/{data.get('component')}/{data.get('metric')}"
        return name

    def _find_parent(self, event: Event, name: str, data: dict[str, Any], meta: dict[str, Any]) -> int | None:
        cause = meta.get("caused_by") if meta else None
        if isinstance(cause, str):
            return self._by_id.get(cause, self._by_span.get(cause))
        if name == ev.BUS_HANDLER_ERROR or name.endswith(".error"):
            failed = data.get("event_id")
            if isinstance(failed, str):
                return self._by_id.get(failed)
        rule = CAUSE_RULES.get(name)
        if rule is None:
            return None
        if name in _KEYED:
            return self._latest.get(self._rule_key(name, data))
        for candidate in rule:
            seq = self._latest.get(candidate)
            if seq is None:
                continue
            if candidate.startswith("control.") and name == ev.MODEL_CHECKPOINT_SAVED:
                # a checkpoint answers a stop request only when the stop is the newest thing that happened
                if any(self._latest.get(other, -1) > seq for other in rule[1:]):
                    continue
            if name in _SAME_EPOCH or candidate == ev.TRAINING_EPOCH_COMPLETED:
                epoch = _int(data.get("epoch"))
                if epoch is not None and self._epoch[seq % self.capacity] != epoch:
                    continue
            return seq
        return None

    def evict(self, seq: int, event: Event) -> None:
        """`seq` leaves the window: drop what refers to it."""
        if self._by_id.get(event.id) == seq:
            del self._by_id[event.id]
        span = event.metadata.get("span_id") if event.metadata else None
        if isinstance(span, str) and self._by_span.get(span) == seq:
            del self._by_span[span]
        self._children.pop(seq, None)

    # -- queries -------------------------------------------------------------------------------------
    def parent(self, seq: int, base: int) -> int | None:
        """The seq of what caused `seq`, if it is still in the window (seqs below `base` have left)."""
        p = self._parent[seq % self.capacity]
        return p if p != NO_VALUE and p >= base else None

    def children(self, seq: int) -> list[int]:
        return list(self._children.get(seq, ()))

    def epoch(self, seq: int) -> int | None:
        value = self._epoch[seq % self.capacity]
        return None if value == NO_VALUE else value

    def step(self, seq: int) -> int | None:
        value = self._step[seq % self.capacity]
        return None if value == NO_VALUE else value

    def seq_of(self, event_id: str) -> int | None:
        return self._by_id.get(event_id, self._by_span.get(event_id))

    def thread(self, seq: int, base: int) -> list[int]:
        """`seq`'s causes (its parent, the parent's parent, …) and consequences (children, theirs, …),
        with `seq` itself; ascending."""
        out = {seq}
        cursor = self.parent(seq, base)
        while cursor is not None and cursor not in out:
            out.add(cursor)
            cursor = self.parent(cursor, base)
        todo = [seq]
        while todo:
            for child in self._children.get(todo.pop(), ()):
                if child not in out and child >= base:
                    out.add(child)
                    todo.append(child)
        return sorted(out)

    def descendants(self, seq: int) -> set[int]:
        """Everything `seq` caused, directly or not (not `seq` itself)."""
        out: set[int] = set()
        todo = [seq]
        while todo:
            for child in self._children.get(todo.pop(), ()):
                if child not in out:
                    out.add(child)
                    todo.append(child)
        return out


_RULE_TARGETS = {cause for causes in CAUSE_RULES.values() for cause in causes}
_RUN_ENDS = {ev.TRAINING_COMPLETED, ev.TRAINING_STOPPED, ev.TRAINING_FAILED}
