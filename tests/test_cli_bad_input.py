"""Bad input ends a command with one line and exit 2, with or without a terminal, before anything is
written or the monitor opens; a run the user stopped exits 3. The terminal path is checked twice: with
stdout faking a terminal (the monitor must not be reached) and in a real one under tmux."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kbert_tui.tui
from kbert_tui.cli import EXIT_STOPPED, main
from kbert_tui.session import RunSession
from kbert_tui.state import count_of
from kbert_tui.training.testing import tiny_document, write_csv
from test_cli import write_toml

KBERT = [sys.executable, "-m", "kbert_tui"]


@pytest.fixture(autouse=True)
def private_cache_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KBERT_TUI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # so a stray runs/ folder would show up here


@pytest.fixture(params=["headless", "terminal"])
def terminal(request, monkeypatch) -> bool:
    """Both paths: stdout redirected, and stdout a terminal with the monitor forbidden to open."""
    if request.param == "terminal":
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)

        def no_monitor(*args, **kwargs):
            raise AssertionError("the monitor opened on bad input")

        for name in ("monitor_run", "run_replay", "MonitorApp"):
            monkeypatch.setattr(kbert_tui.tui, name, no_monitor)
    return request.param == "terminal"


def csv_config(folder: Path, train_rows: list[dict] | None = None, *, raw: bytes | None = None,
               **data: object) -> tuple[Path, Path]:
    """A config on tiny CSVs whose train file is `train_rows` (or `raw` bytes); (config path, train path)."""
    document = tiny_document(folder / "data")
    train = Path(document["data"]["train"])
    if raw is not None:
        train.write_bytes(raw)
    elif train_rows is not None:
        write_csv(train, train_rows)
    document["data"].update(data)
    del document["run"]["output_dir"]  # the default, runs/<id> under the current folder, must stay unmade
    del document["run"]["name"]
    return write_toml(folder / "titanic.toml", document), train


BAD_CSVS = {
    "missing label column": (dict(train_rows=[{"id": "1", "text": "good", "stars": "5"}]),
                             "missing column(s) 'label'"),
    "empty file": (dict(raw=b""), "the file is empty"),
    "not UTF-8": (dict(raw=b"id,text,label\n1,caf\xe9 ok,positive\n"), "not UTF-8 text: byte 0xe9 on line 2"),
    "a single class": (dict(train_rows=[{"id": str(i), "text": f"fine {i}", "label": "positive"} for i in range(9)]),
                       "the training labels hold only one class ('positive')"),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_a_bad_csv_is_one_line_and_nothing_is_written(tmp_path, capsys, terminal, case):
    kwargs, what = BAD_CSVS[case]
    config, train = csv_config(tmp_path, **kwargs)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"kbert-tui: error: {train}: ") and what in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/ folder, no events.jsonl


def test_a_bad_csv_with_an_output_dir_leaves_it_unmade(tmp_path, capsys):
    config, _ = csv_config(tmp_path, raw=b"")
    assert main(["run", str(config), "--headless", "--output-dir", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, what", [
    (b"", "empty: no events to replay"),
    (b"\n\n", "empty: no events to replay"),
    (b"\x00\x01\xff binary\n", "not an events file: none of its 1 line is an event (first problem: "),
    (b'{"hello": "world"}\n[1, 2]\n', "not an events file: none of its 2 lines is an event (first problem: "),
])
def test_replaying_a_file_without_events_exits_2_before_the_monitor(tmp_path, capsys, terminal, content, what):
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kbert-tui: error: {path}: {what}") and err.count("\n") == 1


def test_a_missing_events_file_is_named_once(tmp_path, capsys, terminal):
    assert main(["replay", "nope.jsonl"]) == 2
    assert capsys.readouterr().err == "kbert-tui: error: nope.jsonl: no such file\n"


def test_a_stray_argument_shows_the_usage_of_its_command(capsys):
    assert main(["run", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kbert-tui run ") and "unrecognized arguments: --bogus" in err
    assert main(["replay", "x.jsonl", "--bogus"]) == 2
    assert capsys.readouterr().err.startswith("usage: kbert-tui replay ")
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err.startswith("usage: kbert-tui [-h]")


def test_counts_take_the_noun_in_the_number_they_need():
    assert (count_of(1, "malformed line"), count_of(0, "event"), count_of(2001, "line")) == (
        "1 malformed line", "0 events", "2,001 lines")


def test_a_csv_run_without_a_name_is_named_after_its_config(tmp_path, capsys):
    from kbert_tui.config import load_config

    config, _ = csv_config(tmp_path)
    loaded = load_config(config)
    assert loaded.run.name == "titanic"
    assert [p.plugin for p in loaded.plugins] == ["metrics_csv"]  # metrics.csv without a [plugins] table


def test_a_headless_run_stopped_on_request_exits_3(tmp_path, capsys, monkeypatch):
    config = write_toml(tmp_path / "tiny.toml", tiny_document(tmp_path, training={"epochs": 50}))
    start = RunSession.start

    async def start_then_stop_at_step_2(self):
        await start(self)

        def on_batch(event):
            if event.data["step"] == 2:
                self.request_stop("enough", requested_by="test")

        await self.bus.subscribe("training.batch_completed", on_batch)

    monkeypatch.setattr(RunSession, "start", start_then_stop_at_step_2)
    assert main(["run", str(config), "--headless", "--output-dir", str(tmp_path / "o")]) == EXIT_STOPPED == 3
    assert "stopped at step" in capsys.readouterr().out


# ---------------------------------------------------------------------- in a real terminal (tmux)

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One command in a detached 120x40 tmux session; its exit status lands in a file."""

    def __init__(self, folder: Path, command: list[str]) -> None:
        self.name = f"kbert-test-{os.getpid()}-{time.monotonic_ns()}"
        self.status = folder / f"{self.name}.status"
        env = f"KBERT_TUI_CACHE_DIR={shlex.quote(str(folder / 'cache'))}"
        script = f"cd {shlex.quote(str(folder))} && {env} {shlex.join(command)}; echo $? > {self.status}; sleep 60"
        subprocess.run(["tmux", "new-session", "-d", "-x", "120", "-y", "40", "-s", self.name, script], check=True)

    def screen(self) -> str:
        # -J joins lines the terminal wrapped, so a long message reads as the one line it is
        return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-t", self.name], capture_output=True,
                              text=True).stdout

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def exit_status(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status.exists() and self.status.read_text().strip():
                return int(self.status.read_text())
            time.sleep(0.2)
        raise AssertionError(f"the command did not end; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def tmux(tmp_path):
    sessions: list[Tmux] = []

    def start(command: list[str]) -> Tmux:
        sessions.append(Tmux(tmp_path, command))
        return sessions[-1]

    yield start
    for session in sessions:
        session.close()


@needs_tmux
def test_in_a_terminal_an_empty_events_file_and_a_bad_csv_are_one_line_each(tmp_path, tmux):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    replay = tmux(KBERT + ["replay", "empty.jsonl"])
    assert replay.exit_status() == 2
    assert "kbert-tui: error: empty.jsonl: empty: no events to replay" in replay.screen()
    config, train = csv_config(tmp_path, raw=b"id,text\n1,fine\n")
    run = tmux(KBERT + ["run", config.name])
    assert run.exit_status() == 2
    lines = [line.rstrip() for line in run.screen().splitlines() if line.strip()]
    assert lines == [f"kbert-tui: error: {train}: missing column(s) 'label'; the file has 'id', 'text' (see "
                     "data.text_columns, data.template, data.label_column, data.id_column)"]
    assert not (tmp_path / "runs").exists()


@needs_tmux
@pytest.mark.slow
def test_in_a_terminal_quitting_a_live_run_with_yes_exits_3(tmp_path, tmux):
    config = write_toml(tmp_path / "long.toml", tiny_document(tmp_path, training={"epochs": 500}))
    run = tmux(KBERT + ["run", config.name, "--output-dir", "out"])
    run.wait_for("RUNNING")
    run.keys("q")
    run.wait_for("Stop & quit")
    run.keys("y")
    assert run.exit_status() == 3
    assert "training.stopped" in (tmp_path / "out" / "events.jsonl").read_text()


def test_run_given_a_directory_says_so_and_writes_nothing(tmp_path, capsys, terminal):
    (tmp_path / "runs").mkdir()
    assert main(["run", "runs"]) == 2
    assert capsys.readouterr().err == ("kbert-tui: error: runs: is a directory, not a config file "
                                       "(a TOML file: `kbert-tui init` writes one)\n")  # was "config file not found"
    assert list((tmp_path / "runs").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_replay_takes_a_run_directory_like_attach_and_compare(tmp_path, capsys):
    from simulate import simulate_run

    from kbert_tui.events._codec import encode_event

    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(encode_event(e) for e in simulate_run(epochs=1, steps_per_epoch=4)))
    assert main(["replay", str(run)]) == 0  # was "is a directory, not an events file"
    out = capsys.readouterr().out
    assert out.startswith(f"{run / 'events.jsonl'}: ") and "completed" in out
    (tmp_path / "empty").mkdir()
    assert main(["replay", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == (f"kbert-tui: error: {tmp_path / 'empty'} holds no events.jsonl or "
                                       "session.json: not a run directory\n")
