"""`run`, `replay` and `attach` when there is no terminal to draw the monitor on (no Textual here).

Everything printed from event data goes through `shown`: event payloads come from other processes,
control.jsonl and brokers, so a field may be missing, of another type, or hold terminal escape
sequences; a line is printed whatever the payload, with control characters made visible.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev
from kbert_tui.lifecycle import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED

__all__ = ["Progress", "attach_headless", "drive_session", "epoch_line", "exit_status", "number", "print_progress",
           "print_resume", "print_summary", "replay_headless", "run_headless", "shown"]

LINE_WIDTH = 120  # an epoch line fits a 120-column terminal
SHOWN_LIMIT = 300  # characters of one event-supplied value on a line: a 256 KB requested_by stays one line


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """`value` as text fit for a terminal line: control characters visible, at most `limit` characters."""
    from kbert_tui.state import printable

    text = printable(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def number(value: Any, digits: int = 4) -> str:
    """A metric with `digits` decimals; `-` when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}"


def _count(value: Any) -> str:
    """A whole number with thousands separators; anything else shown as it is (`?` when missing)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "?" if value is None else shown(value, 40)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Progress:
    """The headless run's lines, one per event worth a line; the baseline's accuracy rides on each epoch line."""

    def __init__(self) -> None:
        self.baseline: str | None = None  # "bag-of-words 0.770" once data.baseline_computed came

    def __call__(self, event: Event) -> None:
        from kbert_tui.state.ranks import rank_of

        ranked = rank_of(event)
        if ranked is not None and ranked["rank"] != 0:
            return  # a multi-rank run's ranks report the same numbers: rank 0's lines say it once
        if event.name == ev.DATA_BASELINE_COMPUTED:
            d = _dict(event.data)
            model, accuracy = d.get("model"), d.get("val_accuracy")
            if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool):
                short = (str(model).split() or ["baseline"])[0] if model else "baseline"
                self.baseline = f"{shown(short, 40)} {accuracy:.3f}"
            print(f"baseline: {shown(model)} val_acc {number(accuracy)}  val_f1 {number(d.get('val_f1'))} "
                  f"({_count(d.get('features', 0))} features, {number(d.get('seconds', 0.0), 1)} s)", flush=True)
            return
        print_progress(event, self.baseline)


def _encoder(metrics: dict[str, Any]) -> str:
    """" (encoder 0.8125)" when the model predicts together with the bag-of-words (model.with_bag_of_words)."""
    value = metrics.get("encoder_val_accuracy")
    return f" (encoder {number(value)})" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _started(d: dict[str, Any], baseline: str | None) -> None:
    raw = d.get("blas")
    blas = raw if isinstance(raw, dict) else {"name": raw}
    what = (f"training {shown(d.get('model_type', '?'))} ({_count(d.get('num_parameters'))} parameters) on "
            f"{shown(d.get('device', '?'))}: {_count(d.get('total_epochs'))} epochs × "
            f"{_count(d.get('steps_per_epoch'))} steps")
    library = f"BLAS {shown(blas.get('summary') or blas.get('name'))}"
    together = f"{what}, {library}"
    print(together if len(together) <= LINE_WIDTH else f"{what}\n  {library}", flush=True)
    if blas.get("hint"):
        print(f"note: {shown(blas['hint'])}", file=sys.stderr, flush=True)


def _validated(d: dict[str, Any], baseline: str | None) -> None:
    if d.get("id_column_detected"):
        print(f"predictions.csv takes its ids from the test file's {shown(repr(d['id_column_detected']))} column "
              "(data.id_column is not set)", flush=True)


def epoch_line(d: dict[str, Any], baseline: str | None) -> str:
    """`epoch 2: train_loss 0.3031  val_loss 0.3273  val_acc 0.7900  val_f1 0.7700  (12.5 s, 456 samples/s)`,
    in LINE_WIDTH columns for any realistic figures: the gaps, then the rate, then val_loss give way."""
    m = _dict(d.get("metrics"))
    head = f"epoch {_count(d.get('epoch'))}: "
    scores = {"train_loss": f"train_loss {number(m.get('train_loss'))}",
              "val_loss": f"val_loss {number(m.get('val_loss'))}",
              "val_acc": f"val_acc {number(m.get('val_accuracy'))}{_encoder(m)}",
              "val_f1": f"val_f1 {number(m.get('val_f1'))}"}
    seconds = f"{number(d.get('duration'), 1)} s"
    rate = f", {number(m.get('samples_per_sec'), 0)} samples/s"
    tail = f" · {baseline}" if baseline else ""
    gap = "  "
    for _ in range(4):
        line = head + gap.join(scores.values()) + f"{gap}({seconds}{rate}){tail}"
        if len(line) <= LINE_WIDTH:
            break
        if gap == "  ":
            gap = " "
        elif rate:
            rate = ""
        else:
            scores.pop("val_loss", None)
    return line


def _epoch(d: dict[str, Any], baseline: str | None) -> None:
    print(epoch_line(d, baseline), flush=True)


def _completed(d: dict[str, Any], baseline: str | None) -> None:
    m = _dict(d.get("final_metrics"))
    best = _dict(d.get("best"))
    score = f": val_acc {number(m.get('val_accuracy'))}{_encoder(m)}" if "val_accuracy" in m else ""
    score += f" · {baseline}" if score and baseline else ""
    restored = (f", weights of epoch {_count(d['restored_epoch'])} (best {shown(best.get('metric'))})"
                if d.get("restored_epoch") else "")
    line = f"completed in {number(d.get('total_duration'), 1)} s{score}{restored}"
    if d.get("predictions_path"):  # a path may be long: on its own line past LINE_WIDTH
        extra = f"predictions → {shown(d['predictions_path'])}"
        line = f"{line}; {extra}" if len(line) + 2 + len(extra) <= LINE_WIDTH else f"{line}\n  {extra}"
    print(line, flush=True)


def _stopped(d: dict[str, Any], baseline: str | None) -> None:
    print(f"stopped at step {_count(d.get('step'))} ({shown(d.get('reason', '?'))}); "
          f"checkpoint → {shown(d.get('checkpoint_path'))}", flush=True)


def _rule(d: dict[str, Any], baseline: str | None) -> None:
    bell = "\a" if d.get("action") == "notify" and sys.stdout.isatty() else ""
    print(f"{bell}rule {shown(d.get('rule'))} fired: {shown(d.get('action'))} ({shown(d.get('reason'))})", flush=True)


def _paused(d: dict[str, Any], baseline: str | None) -> None:
    print(f"paused at step {_count(d.get('step'))} by {shown(d.get('requested_by'))}; "
          "resume from `kbert-tui attach`", flush=True)


def _resumed(d: dict[str, Any], baseline: str | None) -> None:
    print(f"resumed at step {_count(d.get('step'))} by {shown(d.get('requested_by'))}", flush=True)


_LINES: dict[str, Callable[[dict[str, Any], str | None], None]] = {
    ev.TRAINING_STARTED: _started,
    ev.DATA_VALIDATION_COMPLETED: _validated,
    ev.TRAINING_EPOCH_COMPLETED: _epoch,
    ev.TRAINING_COMPLETED: _completed,
    ev.TRAINING_STOPPED: _stopped,
    ev.RULE_FIRED: _rule,
    ev.TRAINING_PAUSED: _paused,
    ev.TRAINING_RESUMED: _resumed,
}


def print_progress(event: Event, baseline: str | None = None) -> None:
    """The line `event` is worth in a headless run or attach, if any (whatever its payload holds)."""
    line = _LINES.get(event.name)
    if line is not None:
        line(_dict(event.data), baseline)


# ---------------------------------------------------------------------- replay and attach without a terminal


def print_summary(path: Any, state: Any, malformed: int, first_error: str | None, *, recording: bool = False) -> int:
    """Where the run ended; `recording`: the file is all there is (a replay), so a run still 'running'
    at its end stopped without a final event (killed, or its machine went down)."""
    from kbert_tui.state import count_of, format_number

    t = state.training
    if state.events_seen == 0 and malformed:
        print(f"kbert-tui: error: {shown(path)}: not an events file: none of its {count_of(malformed, 'line')} "
              f"is an event (first problem: {shown(first_error)})", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{shown(path)}: {count_of(state.events_seen, 'event')}, {count_of(malformed, 'malformed line')} skipped")
    if malformed and first_error:
        print(f"first skipped line: {shown(first_error)}")
    status = shown(t.status)
    if recording and t.live:
        last = t.last_at.strftime("%Y-%m-%d %H:%M:%S UTC") if t.last_at else "?"
        status = f"ended without a final event (last event at {last}; killed?)"
    print(f"run {shown(t.run_name or '?')} ({shown(t.run_id or '?')}): {status}, epoch {_count(t.epochs_done)}/"
          f"{_count(t.total_epochs or '?')}, step {_count(t.step)}/{_count(t.total_steps or '?')}")
    if lanes := state.ranks.summary():
        print(shown(lanes))
    if t.best_value is not None:
        print(f"best {shown(t.best_metric)} {shown(format_number(t.best_value))} (epoch {_count(t.best_epoch)})")
    if t.versus_baseline:
        print(shown(t.versus_baseline))
    if t.error:
        print(f"error: {shown(t.error)}")
    return EXIT_OK


def replay_headless(source: Any) -> int:
    """`replay` without a terminal: reduce the whole recording and print where the run ended."""
    from kbert_tui.state import RunState

    state = RunState()
    for event in source.reader:
        state.apply(event)
    return print_summary(source.path, state, source.reader.malformed, source.reader.first_error, recording=True)


def attach_headless(source: Any, progress: Callable[[Event], None]) -> int:
    """`attach` without a terminal: what `replay` prints for the history, then `progress` for each new
    event, until the run is over."""
    from kbert_tui.state import RunState

    run = source.run
    batch_size = source.BATCH
    state = RunState()
    while batch := run.read(batch_size):
        state.apply_all(batch)
    code = print_summary(run.events_path or run.label, state, run.malformed, run.first_error)
    if code or run.ended:
        if run.note:
            print(shown(run.note))
        run.close()
        return code
    print(f"following {shown(run.events_path or run.label)} until the run ends (Ctrl-C detaches; the run goes on)",
          flush=True)
    try:
        while not run.ended:
            batch = run.read(batch_size)
            for event in batch:
                progress(event)
            if not batch:
                time.sleep(run.idle_wait_s)
    finally:
        run.close()
    print(shown(run.note), flush=True)
    return EXIT_OK


# ---------------------------------------------------------------------- kbert-tui run without a terminal

def run_headless(config: Any, output_dir: str | None, run_id: str | None = None) -> int:
    from kbert_tui.lifecycle import ExitGuard
    from kbert_tui.session import RunSession

    session = RunSession(config, output_dir=output_dir, run_id=run_id)
    ended_by: list[int] = []  # the signal's exit status, when one ended the run
    # Once training has ended the process ends within 5 s, whatever a handler does (a stuck loop too).
    guard = ExitGuard(busy=lambda: session.bus.busy_handlers() if session.bus is not None else [],
                      last_words=session.record_end)
    guard.watch(lambda: session.outcome is not None, lambda: exit_status(session, session.outcome, ended_by))
    try:
        return asyncio.run(drive_session(session, ended_by))
    except KeyboardInterrupt:
        print("interrupted; the run was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        print(f"kbert-tui: error: {error.filename or session.output_dir}: {error.strerror or error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        guard.disarm()


async def drive_session(session: Any, ended_by: list[int]) -> int:
    """Start `session`, print its progress, stop it with a checkpoint on a stop signal; the exit status."""
    import kbert_tui.training  # noqa: F401  -- loads OpenBLAS before MLX; training.started says which (header)
    from kbert_tui.lifecycle import STOP_SIGNALS, on_stop_signals, signal_exit

    main_task = asyncio.current_task()
    assert main_task is not None
    why: list[str] = []

    def stop_signal(signum: int) -> None:  # Ctrl-C, SIGTERM, SIGHUP: stop with a checkpoint, exit 128 + N
        if ended_by:
            return  # already stopping: a second signal must not cut the close (and the log's flush) short
        ended_by.append(signal_exit(signum))
        why.append(STOP_SIGNALS[signum])
        main_task.cancel()

    # held until the session is closed, so session.json gets its final state whatever signal comes
    undo_signals = on_stop_signals(stop_signal)
    try:
        return await _run_session(session, ended_by, why)
    finally:
        undo_signals()


async def _run_session(session: Any, ended_by: list[int], why: list[str]) -> int:
    from kbert_tui.events import PersistenceError

    log_error: str | None = None
    try:
        await session.start()
        assert session.bus is not None
        if session.ranks is None or session.ranks.is_main:  # the other ranks' lines would be the same
            progress = Progress()
            session.bus.subscribe_sync("training.*", progress)
            session.bus.subscribe_sync(ev.DATA_BASELINE_COMPUTED, progress)
            session.bus.subscribe_sync(ev.DATA_VALIDATION_COMPLETED, progress)  # names a detected id column
            session.bus.subscribe_sync(ev.RULE_FIRED, progress)
        print(f"run {session.run_id}: events → {session.events_path}", flush=True)
        outcome = await session.wait()
    except asyncio.CancelledError:
        print(f"{why[0] if why else 'interrupted'}: stopping the run and saving a checkpoint", file=sys.stderr,
              flush=True)
        outcome = "interrupted"
    except PersistenceError as error:
        log_error, outcome = str(error), session.outcome or "failed"
    finally:
        try:
            await session.close()
        except PersistenceError as error:
            log_error = str(error)
    if log_error is not None:  # the run may have gone well, but its log is not whole: say where and why
        print(f"kbert-tui: error: event log {session.events_path}: {log_error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    if session.broker is not None and session.broker.unpublished:
        print(f"note: {session.broker.unpublished:,} events did not reach the broker (Redis was away at the end); "
              f"the log has them all", file=sys.stderr, flush=True)
    if outcome == "completed":
        print(f"done: {session.output_dir}", flush=True)
    elif session.ranks is None or session.ranks.is_main:
        print_resume(session.output_dir)
    return exit_status(session, outcome, ended_by, report=True)


def print_resume(output_dir: Any) -> None:
    """After a run that did not complete: the command that goes on with it, when it left a checkpoint."""
    from kbert_tui.resume import resume_command

    if command := resume_command(output_dir):
        print(f"resume: {command}", flush=True)


def exit_status(session: Any, outcome: str | None, ended_by: list[int], *, report: bool = False) -> int:
    if ended_by:
        return ended_by[0]
    if outcome == "completed":
        return EXIT_OK
    failure = session.failure or {}
    if failure:
        if report:
            print(f"error: {shown(failure.get('error'), 2000)}", file=sys.stderr)
        if failure.get("bad_input"):  # a UserInputError (config, data, checkpoint) raised in the worker
            return EXIT_BAD_INPUT
    if outcome == "stopped":  # by a stop request (a plugin, an attached monitor), not a signal
        return EXIT_STOPPED
    return EXIT_FAILED if outcome == "failed" else EXIT_INTERRUPTED
