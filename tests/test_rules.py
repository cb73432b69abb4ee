"""[[rules]]: checked at config load, judged on events, acting on a real run through control events."""

from __future__ import annotations

import asyncio
import re
import json
import subprocess
import sys
from datetime import datetime, UTC
from pathlib import Path

import pytest

from kbert_tui.config import ConfigError, load_config
from kbert_tui.events import Event, EventBus
from kbert_tui.rules import RuleRunner
from kbert_tui.session import RunSession
from kbert_tui.state import EventLog
from kbert_tui.state.rules import RuleEngine, RuleProblem, parse_rule
from kbert_tui.training.testing import tiny_config

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batch(step: int, loss: float, corr: str = "run-1") -> Event:
    return Event("training.batch_completed", {"step": step, "epoch": 1, "loss": loss}, T0, "trainer", corr)


def rule(**table) -> object:
    return parse_rule({"when": "training.batch_completed (loss>5 OR loss=NaN)", "action": "pause", **table}, 1)


# ------------------------------------------------------------------ the engine


def test_a_rule_fires_on_each_matching_event_and_says_why():
    engine = RuleEngine([rule(name="spike")])
    assert engine.check(batch(1, 0.5)) == []
    [firing] = engine.check(batch(2, 6.25))
    assert firing.rule.name == "spike" and firing.count == 1
    assert firing.reason == "training.batch_completed loss=6.25 (epoch 1, step 2)"
    assert [f.reason for f in engine.check(batch(3, float("nan")))] == [
        "training.batch_completed loss=nan (epoch 1, step 3)"]
    assert engine.fired == [2]


def test_for_needs_that_many_matching_events_of_the_name_in_a_row():
    engine = RuleEngine([rule(**{"for": 3})])
    hits = [bool(engine.check(batch(s, loss))) for s, loss in enumerate([6, 7, 1, 6, 6, 9, 8, 8, 8], 1)]
    # 6 7 then 1 breaks the run; 6 6 9 fires at its third; 8 8 8 fires again
    assert hits == [False, False, False, False, False, True, False, False, True]
    other = Event("system.cpu_usage", {"percent": 3}, T0, "system")
    engine2 = RuleEngine([rule(**{"for": 2})])
    assert not engine2.check(batch(1, 6))
    assert not engine2.check(other)  # an event of another name does not break the run
    assert engine2.check(batch(2, 6))[0].reason.endswith("2 in a row")


def test_once_fires_a_single_time_and_rules_never_judge_their_own_events():
    engine = RuleEngine([rule(once=True), parse_rule({"when": "rule.*", "action": "notify"}, 2)])
    assert len(engine.check(batch(1, 9))) == 1
    assert engine.check(batch(2, 9)) == []
    own = Event("rule.fired", {"rule": "x"}, T0, "rules")
    assert engine.check(own) == []


@pytest.mark.parametrize(
    ("table", "key", "fragment"),
    [
        ({"when": "training.* (loss>5", "action": "pause"}, "when", "unclosed '(': add ')' at column 12"),
        ({"when": "loss>", "action": "pause"}, "when", "at column 6"),
        ({"when": "epoch:2", "action": "pause"}, "when", "use epoch=N"),
        ({"action": "pause"}, "when", "expected a filter expression"),
        ({"when": "loss>5", "action": "explode"}, "action", "unknown action 'explode'"),
        ({"when": "loss>5", "action": []}, "action", "expected one of pause, stop"),
        ({"when": "loss>5", "action": ["pause", "pause"]}, "action", "listed twice"),
        ({"when": "loss>5", "action": "emit"}, "event", 'needs event = "a dotted.name"'),
        ({"when": "loss>5", "action": "pause", "event": "a.b"}, "event", 'only meaningful with action "emit"'),
        ({"when": "loss>5", "action": "emit", "event": "alarm.raised\x1b[2J"}, "event",
         'needs event = "a dotted.name"'),
        ({"when": "loss>5", "action": "emit", "event": "alarm.*"}, "event", 'needs event = "a dotted.name"'),
        ({"when": "loss>5", "action": "emit", "event": "alarm."}, "event", 'needs event = "a dotted.name"'),
        ({"when": "loss>5", "action": "pause", "for": 0}, "for", "whole number >= 1"),
        ({"when": "loss>5", "action": "pause", "once": "yes"}, "once", "true or false"),
        ({"when": "loss>5", "action": "pause", "cooldown": 3}, "cooldown", "unknown key"),
    ],
)
def test_a_bad_rule_names_its_key_and_the_problem(table, key, fragment):
    with pytest.raises(RuleProblem) as info:
        parse_rule(table, 1)
    assert info.value.key == key
    assert fragment in info.value.message


# ------------------------------------------------------------------ config and CLI


RULES_TOML = '''
[[rules]]
name = "loss spike"
when = "training.batch_completed (loss>5 OR loss=NaN)"
action = ["pause", "checkpoint"]

[[rules]]
when = "{when}"
action = "{action}"
'''


def test_config_reads_rules_and_a_bad_one_is_a_config_error_naming_it(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(RULES_TOML.format(when="training.completed", action="notify"))
    config = load_config(good)
    assert [r.name for r in config.rules] == ["loss spike", "rule 2"]
    assert config.rules[0].actions == ("pause", "checkpoint")
    bad = tmp_path / "bad.toml"
    bad.write_text(RULES_TOML.format(when="training.* (loss>5 OR", action="notify"))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == (f"{bad}: rules[2].when: OR needs a term after it, e.g. loss>5 OR loss=NaN "
                               "at column 20: 'training.* (loss>5 OR'")
    bad.write_text(RULES_TOML.format(when="loss>1", action="reboot"))
    with pytest.raises(ConfigError, match=r"rules\[2\]\.action: unknown action 'reboot'"):
        load_config(bad)


def test_the_cli_refuses_a_bad_rule_with_exit_2_before_writing_anything(tmp_path):
    bad = tmp_path / "bad.toml"
    out = tmp_path / "out"
    bad.write_text(f'[run]\noutput_dir = "{out}"\n' + RULES_TOML.format(when="loss>>1", action="stop"))
    proc = subprocess.run([sys.executable, "-m", "kbert_tui", "run", str(bad), "--headless"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kbert-tui: error: {bad}: rules[2].when: '>1' is not a number (after loss>) at column 6: 'loss>>1'"]
    assert not out.exists()


def _load(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return load_config(path)


def test_a_rule_on_an_event_no_producer_declares_is_refused_naming_the_nearest_declared_name(tmp_path):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[[rules]]\nwhen = "training.epoch_complete val_acc>0.5"\naction = "notify"\n')
    assert str(info.value) == (
        f"{tmp_path / 'run.toml'}: rules[1].when: no producer declares an event named 'training.epoch_complete' "
        "(did you mean 'training.epoch_completed'?) at column 1; for an event of your own add "
        "custom_event = true to the rule")
    # a glob matching no declared name, a name: term and a negated name are held to the same
    for when, wrong, column in (("trainin.* loss>1", "trainin.*", 1), ("loss>1 name:traning.batch_completed",
                                "traning.batch_completed", 13), ("!sytem.cpu_usage", "sytem.cpu_usage", 2)):
        with pytest.raises(ConfigError, match=rf"rules\[1\]\.when: no producer declares an event named "
                           rf"'{re.escape(wrong)}' \(did you mean '[a-z_.*]+'\?\) at column {column};"):
            _load(tmp_path, f'[[rules]]\nwhen = "{when}"\naction = "notify"\n')


def test_declared_names_custom_events_and_events_of_plugins_and_rules_are_accepted(tmp_path):
    ok = _load(tmp_path, '[[rules]]\nwhen = "training.epoch_completed val_accuracy>0.5"\naction = "notify"\n'
                         '[[rules]]\nwhen = "system.* OR bus.loop_blocked"\naction = "notify"\n'
                         '[[rules]]\nwhen = "my.own_event"\naction = "notify"\ncustom_event = true\n'
                         '[[rules]]\nwhen = "training.completed"\naction = "emit"\nevent = "alarm.raised"\n'
                         '[[rules]]\nwhen = "alarm.raised"\naction = "notify"\n'
                         '[plugins.summary]\nplugin = "metrics_aggregator"\n'
                         '[[rules]]\nwhen = "metrics.aggregated"\naction = "notify"\n')
    assert [r.custom_event for r in ok.rules] == [False, False, True, False, False, False]
    # metrics.aggregated is the metrics_aggregator plugin's: without it configured nothing emits it
    with pytest.raises(ConfigError, match=r"rules\[1\]\.when: no producer declares an event named "
                                          r"'metrics\.aggregated'"):
        _load(tmp_path, '[[rules]]\nwhen = "metrics.aggregated"\naction = "notify"\n')
    with pytest.raises(ConfigError, match=r"rules\[1\]\.custom_event: expected true or false"):
        _load(tmp_path, '[[rules]]\nwhen = "my.own_event"\naction = "notify"\ncustom_event = "yes"\n')


def test_the_cli_refuses_a_rule_on_an_undeclared_event_with_exit_2_before_writing_anything(tmp_path):
    bad = tmp_path / "bad.toml"
    out = tmp_path / "out"
    bad.write_text(f'[run]\noutput_dir = "{out}"\n[[rules]]\nwhen = "training.epoch_complete"\naction = "stop"\n')
    proc = subprocess.run([sys.executable, "-m", "kbert_tui", "run", str(bad), "--headless"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "rules[1].when: no producer declares an event named 'training.epoch_complete'" in line
    assert "custom_event = true" in line and not out.exists()


# ------------------------------------------------------------------ the runner on a bus


def test_the_runner_links_rule_fired_to_its_trigger_and_the_request_to_rule_fired():
    async def scenario() -> list[Event]:
        bus = EventBus()
        seen: list[Event] = []
        await bus.subscribe("*", seen.append)
        notes: list[tuple[str, str]] = []
        rules = [parse_rule({"name": "spike", "when": "loss>5", "action": ["pause", "notify", "emit"],
                             "event": "alerts.loss_spike"}, 1)]
        runner = RuleRunner(bus, rules, "run-1", notify=lambda title, text: notes.append((title, text)))
        await runner.start()
        bus.emit_sync("training.batch_completed", {"step": 4, "loss": 7.5}, source="trainer", correlation_id="run-1")
        bus.emit_sync("training.batch_completed", {"step": 5, "loss": 9.0}, source="trainer", correlation_id="other")
        await bus.flush()
        await runner.stop()
        await bus.shutdown()
        assert notes == [("kbert-tui rule spike", "training.batch_completed loss=7.5 (step 4)")]
        return seen

    seen = asyncio.run(scenario())
    names = [e.name for e in seen]
    assert names == ["training.batch_completed", "training.batch_completed", "rule.fired",
                     "control.pause_requested", "rule.fired", "rule.fired", "alerts.loss_spike"]
    trigger = seen[0]
    fired = [e for e in seen if e.name == "rule.fired"]
    assert [f.data["action"] for f in fired] == ["pause", "notify", "emit"]
    assert all(f.data["caused_by"] == trigger.id and f.metadata["caused_by"] == trigger.id for f in fired)
    assert fired[0].data["rule"] == "spike" and fired[0].source == "rules"
    pause = seen[3]
    assert pause.data == {"requested_by": "rule:spike"} and pause.correlation_id == "run-1"
    assert pause.metadata["caused_by"] == fired[0].metadata["span_id"]
    assert seen[6].metadata["caused_by"] == fired[2].metadata["span_id"]
    assert seen[6].data["trigger_data"] == {"step": 4, "loss": 7.5}
    from kbert_tui.events.catalog import check_payload

    assert [p for e in seen if e.source == "rules" for p in check_payload(e.name, e.data)] == []  # as declared


# ------------------------------------------------------------------ a real run


def _events(path: Path) -> list[Event]:
    from kbert_tui.events.store import read_events

    return list(read_events(path))


def test_a_rule_pauses_a_real_run_and_saves_a_checkpoint_while_paused(tmp_path):
    config = tiny_config(tmp_path, training={"epochs": 3})
    config = config.replace(rules=(parse_rule({"name": "crafted", "when": "training.batch_completed step=5",
                                               "action": ["pause", "checkpoint"]}, 1),))

    async def scenario() -> RunSession:
        session = RunSession(config)
        await session.start()
        assert session.bus is not None
        paused = asyncio.Event()
        saved = asyncio.Event()
        session.bus.subscribe_sync("training.paused", lambda e: paused.set())
        session.bus.subscribe_sync("model.checkpoint_saved",
                                   lambda e: saved.set() if e.data["kind"] == "requested" else None)
        await asyncio.wait_for(paused.wait(), 60)
        await asyncio.wait_for(saved.wait(), 30)  # served while the run is paused
        assert session.worker.control.paused
        session.request_resume("test")
        assert await asyncio.wait_for(session.wait(), 120) == "completed"
        await session.close()
        return session

    session = asyncio.run(scenario())
    events = _events(session.events_path)
    by_name = {}
    for e in events:
        by_name.setdefault(e.name, []).append(e)
    # the rule acts on the loop while the worker trains on: the pause lands at step 5 or soon after
    paused_at = by_name["training.paused"][0].data["step"]
    assert 5 <= paused_at <= 5 + 3 and len(by_name["training.paused"]) == 1
    assert by_name["training.paused"][0].data["requested_by"] == "rule:crafted"
    saved = [e for e in by_name["model.checkpoint_saved"] if e.data["kind"] == "requested"]
    assert len(saved) == 1 and saved[0].data["requested_by"] == "rule:crafted"
    assert saved[0].data["step"] <= paused_at
    assert Path(saved[0].data["path"]).name == f"requested-step-{saved[0].data['step']}"
    assert Path(saved[0].data["path"]).is_dir()
    # the thread: the trigger -> rule.fired -> control request -> paused / checkpoint saved
    log = EventLog(capacity=10_000)
    for e in events:
        log.append(e)
    trigger = next(e for e in events if e.name == "training.batch_completed" and e.data["step"] == 5)
    thread_names = [log.get(seq).name for seq in log.scope(log.threads.seq_of(trigger.id), "thread")]
    for name in ("rule.fired", "control.pause_requested", "control.checkpoint_requested", "training.paused",
                 "model.checkpoint_saved"):
        assert name in thread_names, (name, thread_names)


def test_a_rule_stops_a_real_headless_run(tmp_path):
    from kbert_tui.training.testing import tiny_document
    from test_cli import write_toml

    document = tiny_document(tmp_path, training={"epochs": 50})
    config = write_toml(tmp_path / "stop.toml", document)
    with config.open("a") as handle:
        handle.write('\n[[rules]]\nname = "enough"\nwhen = "training.epoch_completed epoch>=2"\naction = "stop"\n')
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "kbert_tui", "run", str(config), "--headless", "--output-dir",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "rule enough fired: stop (training.epoch_completed epoch=2)" in proc.stdout
    names = [json.loads(line)["name"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert "training.stopped" in names and "training.completed" not in names
    stopped = [json.loads(line)["data"] for line in (out / "events.jsonl").read_text().splitlines()
               if '"training.stopped"' in line][0]
    assert stopped["reason"] == "rule enough: training.epoch_completed epoch=2"
    assert stopped["requested_by"] == "rule:enough"
    assert stopped["epoch"] == 3  # stopped before the third epoch's first step


def test_the_documented_rules_load(tmp_path):
    import re

    root = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "docs/config.md"):
        [block] = [b for b in re.findall(r"```toml\n(.*?)```", (root / doc).read_text(), flags=re.S)
                   if "[[rules]]" in b]
        (tmp_path / "rules.toml").write_text(block)
        assert load_config(tmp_path / "rules.toml").rules[0].name == "loss spike"
    bad = tmp_path / "run.toml"
    bad.write_text('[[rules]]\nwhen = "training.batch_completed (loss>5"\naction = "pause"\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value).replace(str(bad), "run.toml")
    readme = " ".join((root / "README.md").read_text().split())
    assert f"`{message}`" in readme


def test_the_example_config_still_loads_with_its_rule_uncommented(tmp_path):
    from kbert_tui.config_docs import example_config

    text = example_config("x.toml")
    text = re.sub(r"^# (\[\[rules\]\]|name = \"loss spike\"|when = .*|action = .*|for = .*|once = .*)$", r"\1",
                  text, flags=re.M)
    (tmp_path / "x.toml").write_text(text)
    assert load_config(tmp_path / "x.toml").rules[0].actions == ("pause", "checkpoint")


# ------------------------------------------------------------------ in the monitor


def test_the_monitor_lists_fired_rules_rings_for_notify_and_k_requests_a_checkpoint(settle):
    from simulate import simulate_run
    from kbert_tui.tui import MonitorApp, StaticSource

    events = list(simulate_run(epochs=1, steps_per_epoch=8))
    trigger = next(e for e in events if e.name == "training.batch_completed")
    fired = [Event("rule.fired", {"rule": "spike", "action": action, "caused_by": trigger.id,
                                  "trigger": trigger.name, "reason": "training.batch_completed loss=6 (step 1)",
                                  "when": "loss>5", "count": 1}, T0, "rules", "run-0001") for action in
             ("pause", "notify")]
    at = events.index(trigger) + 1
    events[at:at] = fired
    sent: list[tuple[str, dict]] = []

    class Steerable(StaticSource):
        controllable = True

        async def emit_control(self, name, data):
            sent.append((name, data))

    async def scenario() -> None:
        app = MonitorApp(Steerable(events[:at + 2], label="live-ish"))
        rang: list[bool] = []
        app.bell = lambda: rang.append(True)  # type: ignore[method-assign]
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            app._drain()  # the drain timer's work: it rings for new notifications
            await pilot.pause()
            seen = app.state.rules["spike"]
            assert (seen.count, seen.actions) == (1, ["pause", "notify"])
            assert rang == [True] and app.state.last_notification == (
                "rule spike: training.batch_completed loss=6 (step 1)")
            pane = app.training_pane
            assert any("spike ×1 pause+notify" in row.plain for _, row in pane._rows(110, pane.pal))
            await pilot.press("k")
            await pilot.pause()
            assert sent == [("control.checkpoint_requested", {"requested_by": "tui"})]

    asyncio.run(scenario())
