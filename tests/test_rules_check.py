"""`kbert-tui rules check CONFIG RUN…`: a config's rules tried on recorded runs, by the live rule runner."""

from __future__ import annotations

import math

import pytest
from simulate import simulate_run

from kbert_tui.cli import main
from kbert_tui.config import load_config
from kbert_tui.events import Event
from kbert_tui.events._codec import encode_event
from kbert_tui.events.store import read_events
from kbert_tui.rules_check import check_rules

SPIKE_STEP, NAN_STEP = 37, 50

RULES = '''
[[rules]]
name = "spike"
when = "training.batch_completed loss>5"
action = "stop"

[[rules]]
name = "nan"
when = "training.batch_completed loss=NaN"
action = ["notify", "checkpoint"]

[[rules]]
name = "first epoch"
when = "training.epoch_completed"
action = "notify"
once = true

[[rules]]
name = "failed"
when = "training.failed"
action = "notify"
'''


def recorded(tmp_path, name: str, events: list[Event]):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "events.jsonl").write_text("".join(encode_event(e) for e in events))
    return folder


def spiky_run(run_id: str = "run-a") -> list[Event]:
    events = list(simulate_run(epochs=3, steps_per_epoch=20, run_id=run_id))
    for event in events:
        if event.name == "training.batch_completed" and event.data["step"] == SPIKE_STEP:
            event.data["loss"] = 9.5
        elif event.name == "training.batch_completed" and event.data["step"] == NAN_STEP:
            event.data["loss"] = math.nan
    return events


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


def test_each_rule_fires_where_the_recorded_events_say(tmp_path, config):
    events = spiky_run()
    firings = check_rules(load_config(config).rules, events)
    # the reference: read off the events directly
    batches = [e for e in events if e.name == "training.batch_completed"]
    over_5 = [e.data["step"] for e in batches if e.data["loss"] > 5]
    nans = [e.data["step"] for e in batches if math.isnan(e.data["loss"])]
    first_epoch = next(e for e in events if e.name == "training.epoch_completed")
    assert over_5 == [SPIKE_STEP] and nans == [NAN_STEP] and first_epoch.data["epoch"] == 1
    assert [(f.rule, f.step, f.action, f.trigger) for f in firings] == [
        ("first epoch", 20, "notify", "training.epoch_completed"),
        ("spike", SPIKE_STEP, "stop", "training.batch_completed"),
        ("nan", NAN_STEP, "notify", "training.batch_completed"),
        ("nan", NAN_STEP, "checkpoint", "training.batch_completed"),
    ]


def test_firings_come_in_the_order_of_the_events(tmp_path, config):
    events = spiky_run()
    firings = check_rules(load_config(config).rules, events)
    first_epoch_at = next(e.timestamp for e in events if e.name == "training.epoch_completed")
    spike_at = next(e.timestamp for e in events
                    if e.name == "training.batch_completed" and e.data["step"] == SPIKE_STEP)
    assert [f.at for f in firings] == sorted(f.at for f in firings)
    assert {f.rule: f.at for f in firings}["first epoch"] == first_epoch_at < spike_at
    assert firings[0].since_start == (firings[0].at - events[0].timestamp).total_seconds() > 0


def test_the_command_prints_each_firing_under_its_rule(tmp_path, config, capsys):
    events = spiky_run()
    run = recorded(tmp_path, "a", events)
    assert main(["rules", "check", str(config), str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    spike = next(e for e in events if e.name == "training.batch_completed" and e.data["step"] == SPIKE_STEP)
    elapsed = int((spike.timestamp - events[0].timestamp).total_seconds())
    assert out[0] == f"{run}: 4 firings"
    assert out[1] == "  spike (when training.batch_completed loss>5; stop): 1×"
    assert out[2].split()[:4] == ["step", str(SPIKE_STEP), spike.timestamp.strftime("%H:%M:%S"),
                                  f"+0:{elapsed // 60:02d}:{elapsed % 60:02d}"]
    assert out[2].split()[4:6] == ["training.batch_completed", "stop"] and "loss=9.5" in out[2]
    assert out[3] == "  nan (when training.batch_completed loss=NaN; notify, checkpoint): 2×"
    assert [line.split()[5] for line in out[4:6]] == ["notify", "checkpoint"]
    assert out[6].startswith("  first epoch (when training.epoch_completed; notify): 1×")
    assert out[8] == "  failed (when training.failed; notify): never fired"


def test_exit_1_when_no_rule_would_have_fired(tmp_path, config, capsys):
    calm = recorded(tmp_path, "calm", [e for e in simulate_run(epochs=1, steps_per_epoch=5)
                                        if e.name != "training.epoch_completed"])
    assert main(["rules", "check", str(config), str(calm)]) == 1
    out = capsys.readouterr().out
    assert out.count("never fired") == 4


def test_a_resumed_run_starts_the_rules_again_as_its_new_process_did(tmp_path, config):
    """`once` is per process, live: a log with two processes (run --resume) fires a once-rule twice."""
    first = [e for e in simulate_run(epochs=2, steps_per_epoch=5, run_id="r") if e.name != "training.completed"]
    again = list(simulate_run(epochs=2, steps_per_epoch=5, run_id="r"))
    firings = check_rules(load_config(config).rules, first + again)
    assert [f.rule for f in firings] == ["first epoch", "first epoch"]


def test_a_rule_check_on_a_real_run_finds_what_the_live_rule_did(tmp_path, capsys, monkeypatch):
    """The tiny model trained with a stop rule: the live run's rule.fired and the check agree."""
    from test_resume import write_config

    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))
    config = write_config(tmp_path, epochs=1, rule="training.batch_completed step=3", action="stop")
    assert main(["run", "--headless", str(config), "--output-dir", str(tmp_path / "run")]) == 3
    live = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e.name == "rule.fired"]
    capsys.readouterr()
    checked = check_rules(load_config(config).rules, list(read_events(tmp_path / "run" / "events.jsonl")))
    assert [(f.rule, f.action, f.reason) for f in checked] == [
        (e.data["rule"], e.data["action"], e.data["reason"]) for e in live] == [
        ("halt", "stop", "training.batch_completed step=3 (epoch 1)")]
    assert checked[0].step == 3


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: ["missing.toml", "run"], "missing.toml: config file not found"),
    (lambda tmp: ["norules.toml", "run"], "norules.toml: no [[rules]] to check"),
    (lambda tmp: ["rules.toml", str(tmp / "nowhere")], "nowhere"),
    (lambda tmp: ["rules.toml", str(tmp / "empty")], "not a run's events log (empty)"),
    (lambda tmp: ["rules.toml", str(tmp / "garbage")], "not a run's events log (none of its 2 lines is an event)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, config, capsys, monkeypatch, make, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "norules.toml").write_text('[run]\nname = "x"\n')
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "events.jsonl").write_text("")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "events.jsonl").write_text("not json\n{}\n")
    assert main(["rules", "check", *make(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kbert-tui: error: ") and message in err


def test_rules_without_a_subcommand_says_which(capsys):
    assert main(["rules"]) == 2
    assert "rules check CONFIG RUN" in capsys.readouterr().err
