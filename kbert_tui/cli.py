"""`kbert-tui run | replay | attach | compare | init`: the command line.

Exit status (kbert_tui.lifecycle): 0 success, 1 training failed, 2 bad input (config, data, arguments),
3 stopped by the user (`s`, `q` then yes, or a stop request), 128 + N stopped by signal N with a
checkpoint (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP). Bad input prints one line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kbert_tui import __version__
from kbert_tui.headless import print_resume, run_headless
from kbert_tui.lifecycle import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "build_parser", "main"]

RANK_STATUS_ENV = "KBERT_TUI_RANK_STATUS"  # `run --ranks`: the folder where each rank leaves its exit status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kbert-tui",
        description="Train a BERT-style text classifier with MLX and watch every event it emits.",
    )
    parser.add_argument("--version", action="version", version=f"kbert-tui {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="train from a config file (or the built-in demo)",
                              description="Train from CONFIG (TOML); without it, the built-in demo.")
    run.add_argument("config", nargs="?", metavar="CONFIG", help="a TOML config file (see `kbert-tui init`)")
    run.add_argument("--headless", action="store_true", help="no TUI: a line per epoch, events in the log file")
    run.add_argument("--output-dir", metavar="DIR", help="where the events, checkpoints and predictions go")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="go on with a stopped (or killed) run from its newest checkpoint: same run id, same folder, "
                          "one log; CONFIG defaults to the file the run started from")
    run.add_argument("--broker", metavar="URL", help="also publish every event to Redis (redis://host:6379/0); "
                                                     "overrides [events] broker")
    run.add_argument("--ranks", type=_positive_int, metavar="N",
                     help="train data-parallel on N ranks on this machine through mlx.launch (ring backend); headless")
    run.add_argument("--hostfile", metavar="FILE",
                     help="train on the ranks an mlx.launch hostfile lists (several hosts); headless")

    replay = commands.add_parser("replay", help="show a recorded run (a run directory or events.jsonl) in the monitor",
                                 description="Replay PATH (and its rotated segments) into the monitor.")
    replay.add_argument("path", metavar="PATH", help="a run directory, or an events.jsonl written by `kbert-tui run`")
    replay.add_argument("--speed", type=_positive_float, metavar="X",
                        help="play back at X times the recorded pace (default: load as fast as possible)")

    attach = commands.add_parser(
        "attach", help="watch (and steer) a run that another process is training",
        description="Open the monitor on a run written by another process: its history, then live, until it "
                    "ends. TARGET is a run directory or an events file; without it, the newest run under runs/.")
    attach.add_argument("target", nargs="?", metavar="TARGET",
                        help="a run directory, an events.jsonl, or a broker URL (redis://host:6379/0)")
    attach.add_argument("run_id", nargs="?", metavar="RUN_ID",
                        help="with a broker URL: the run to open (without it, the runs are listed)")
    attach.add_argument("--read-only", action="store_true", help="watch only: no pause/resume/stop keys")
    attach.add_argument("--token", metavar="TOKEN",
                        help="the run's [events] broker_token, for control through the broker "
                             "(default: $KBERT_TUI_BROKER_TOKEN)")

    compare = commands.add_parser(
        "compare", help="runs side by side: loss and validation curves, final and best metrics, config differences",
        description="Compare runs (run directories or events files, rotated segments included). In a terminal: "
                    "a comparison view; otherwise, or with --format, the table on stdout.")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="a run directory or events.jsonl (two or more)")
    compare.add_argument("--format", choices=("table", "markdown", "csv", "json"),
                         help="print the table in this format instead of opening the view")

    init = commands.add_parser("init", help="write a commented example config that runs as is",
                               description="Write a commented example config (the built-in demo's settings).")
    init.add_argument("path", nargs="?", default="kbert-tui.toml", metavar="PATH",
                      help="the file to write (default: kbert-tui.toml)")
    init.add_argument("--force", action="store_true", help="overwrite PATH if it exists")

    watch = commands.add_parser(
        "watch", help="run a training script and watch it (its kbert_tui.init() logs, output, CPU and memory)",
        description="Start COMMAND with the run directory in its environment and open the monitor on its run; "
                    "exits with COMMAND's status.")
    watch.add_argument("--output-dir", metavar="DIR", help="the run directory (default: runs/<run id>)")
    watch.add_argument("--headless", action="store_true", help="no TUI: the command's output and a line per epoch")
    watch.add_argument("watched", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run")
    imports = commands.add_parser(
        "import", help="turn a TensorBoard log directory into run directories",
        description="Read PATH's tfevents files (scalars; one run per directory holding them) into run directories.")
    imports.add_argument("path", metavar="PATH", help="a TensorBoard log directory (or one tfevents file)")
    imports.add_argument("--output-dir", metavar="DIR", default="runs", help="where the runs go (default: runs)")
    export = commands.add_parser("export", help="write a run's metrics, every step, as csv, parquet or tfevents",
                                 description="Write every metric RUN logged (no sampling) to OUTPUT.")
    export.add_argument("run", metavar="RUN", help="a run directory or events.jsonl")
    export.add_argument("--format", choices=("csv", "parquet", "tfevents"), default="csv")
    export.add_argument("--output", metavar="OUTPUT",
                        help="the file (csv, parquet) or directory (tfevents); default: beside the run's log")
    rules = commands.add_parser("rules", help="try a config's [[rules]] on recorded runs",
                                description="`rules check CONFIG RUN…`: when each rule would have fired.")
    rules_check = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND").add_parser(
        "check", help="replay runs through a config's [[rules]]",
        description="Replay each RUN's events through CONFIG's [[rules]] and print, for each rule, each time it would "
                    "have fired: step, time, trigger, action. Exit 0: some rule fired; 1: none did; 2: bad input.")
    rules_check.add_argument("config", metavar="CONFIG", help="a TOML config file with [[rules]]")
    rules_check.add_argument("runs", nargs="+", metavar="RUN", help="a run directory or events.jsonl")
    rules_check.set_defaults(command_parser=rules_check)
    for command_parser in commands.choices.values():
        command_parser.set_defaults(command_parser=command_parser)  # a stray argument gets its command's usage
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exit_:  # argparse: --help / --version exit 0, a usage error exits 2
        return int(exit_.code or 0)
    if args.command == "run":
        return _rank_status(_run(args))
    if args.command == "init":
        return _init(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "attach":
        return _attach(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "rules":
        if args.rules_command is None:
            args.command_parser.print_usage(sys.stderr)
            return _error("rules: which? `kbert-tui rules check CONFIG RUN…`")
        from kbert_tui.rules_check import rules_check_command

        return rules_check_command(args.config, args.runs)
    if args.command == "watch":
        from kbert_tui.watch import watch_command

        return watch_command(args)
    if args.command in ("import", "export"):
        from kbert_tui import tboard

        return tboard.import_command(args) if args.command == "import" else tboard.export_command(args)
    parser.print_help()
    return EXIT_OK


# ---------------------------------------------------------------------- init


def _init(args: argparse.Namespace) -> int:
    from kbert_tui.config_docs import example_config

    path = Path(args.path).expanduser()
    if path.exists() and not args.force:
        return _error(f"{path} already exists (use --force to overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(example_config(path.name), encoding="utf-8")
    except OSError as error:
        return _error(f"cannot write {path}: {error.strerror or error}")
    print(f"wrote {path}; run it with: kbert-tui run {path}")
    return EXIT_OK


# ---------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> int:
    from kbert_tui.config import default_config, load_config
    from kbert_tui.errors import ConfigError

    from kbert_tui.plugins import check_options

    if args.config is not None and Path(args.config).expanduser().is_dir():
        return _error(f"{args.config}: is a directory, not a config file (a TOML file: `kbert-tui init` writes one)")
    run_id = None  # a new one, unless --resume continues a run
    try:
        if args.resume is not None:
            from kbert_tui.resume import find_resume_point, resume_config

            if args.output_dir is not None:
                return _error("--resume and --output-dir: a resumed run goes on in its own directory")
            point = find_resume_point(args.resume)
            config = resume_config(point, args.config)
            args.output_dir, run_id = str(point.run_dir), point.run_id
        else:
            config = load_config(args.config) if args.config else default_config()
        check_options(config)  # each plugin's keys against its declared Options, before anything starts
    except ConfigError as error:
        return _error(str(error))
    problem = _data_problem(config)
    if problem:
        return _error(problem)
    if args.output_dir is not None:
        out = Path(args.output_dir).expanduser()
        if out.exists() and not out.is_dir():
            return _error(f"--output-dir: {out} exists and is not a directory")
    if args.broker is not None:
        from dataclasses import replace

        from kbert_tui.config import broker_url_problem

        if problem := broker_url_problem(args.broker):
            return _error(f"--broker: {problem}")
        config = config.replace(events=replace(config.events, broker=args.broker))
    if args.hostfile is not None and args.ranks:
        return _error("--ranks and --hostfile: the hostfile lists the ranks (give one or the other)")
    if (args.ranks or 1) > 1 or args.hostfile is not None:
        return _launch_ranks(args)
    if os.environ.get("MLX_RANK") is not None and (problem := _ranks_problem()):
        return _error(problem)
    # Open the monitor unless --headless or stdout is not a terminal.
    if not args.headless:
        if sys.stdout.isatty():
            return _run_tui(config, args.output_dir, run_id)
        print("stdout is not a terminal: running headless", file=sys.stderr, flush=True)
    return run_headless(config, args.output_dir, run_id)


def _launch_ranks(args: argparse.Namespace) -> int:
    """`run --ranks N` / `--hostfile FILE`: the same run on N local ranks (ring backend) or on the hostfile's,
    through `mlx.launch`; each rank is `run --headless`."""
    import shutil
    import subprocess
    import tempfile

    launcher = shutil.which("mlx.launch", path=str(Path(sys.executable).parent)) or shutil.which("mlx.launch")
    if launcher is None:
        return _error("--ranks: mlx.launch not found (it comes with mlx; is this Python's environment active?)")
    if args.hostfile is not None:
        hostfile = Path(args.hostfile).expanduser()
        if not hostfile.is_file():
            return _error(f"--hostfile: {hostfile}: no such file")
        command = [launcher, "--hostfile", str(hostfile.resolve())]  # its backend, or MLX's default
    else:
        command = [launcher, "-n", str(args.ranks), "--backend", "ring"]
    command += ["--python", sys.executable, "-m", "kbert_tui", "run", "--headless"]
    if args.config:
        command.append(str(Path(args.config).expanduser().resolve()))
    if args.resume is not None:  # each rank finds the same checkpoint (and run id) on its own
        command += ["--resume", str(Path(args.resume).expanduser().resolve())]
    elif args.output_dir is not None:
        command += ["--output-dir", str(Path(args.output_dir).expanduser().resolve())]
    if args.broker is not None:
        command += ["--broker", args.broker]
    ranks = f"the ranks of {args.hostfile}" if args.hostfile else f"{args.ranks} ranks"
    print(f"launching {ranks}: {' '.join(command)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kbert-ranks-") as status:
        # mlx.launch exits 0 whatever its ranks did: each rank leaves its status here instead.
        command[1:1] = ["--env", f"{RANK_STATUS_ENV}={status}"]
        try:
            subprocess.call(command)
        except KeyboardInterrupt:
            print("interrupted; the ranks were stopped", file=sys.stderr)
            return EXIT_INTERRUPTED
        codes = {int(f.name[4:]): int(f.read_text() or EXIT_FAILED) for f in Path(status).glob("rank[0-9]*")}
    lost = sorted(set(range(args.ranks)) - set(codes)) if args.ranks else []
    if lost or not codes:
        what = ", ".join(f"rank {r}" for r in lost) or "no rank"
        print(f"kbert-tui: error: {what} ended without an exit status (killed? see mlx.launch's messages above)",
              file=sys.stderr)
        return EXIT_FAILED
    failed = {rank: code for rank, code in sorted(codes.items()) if code != EXIT_OK}
    return failed.get(0) or next(iter(failed.values()), EXIT_OK)


def _ranks_problem() -> str | None:
    """Why this process, started as a rank (MLX_RANK set), cannot join the others, if it cannot."""
    import kbert_tui.training  # noqa: F401  -- OpenBLAS under MLX first
    from kbert_tui.training.distributed import current_ranks

    try:
        current_ranks()
    except (RuntimeError, ValueError) as error:
        env = ", ".join(f"{k}={os.environ.get(k)}" for k in ("MLX_RANK", "MLX_HOSTFILE") if k in os.environ)
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        return f"cannot join the other ranks ({env}): {reason}"
    return None


def _rank_status(code: int) -> int:
    """Under `run --ranks`: leave this rank's exit status where the launching process reads it."""
    folder, rank = os.environ.get(RANK_STATUS_ENV), os.environ.get("MLX_RANK")
    if folder and rank is not None and rank.isdigit():
        try:
            Path(folder, f"rank{rank}").write_text(str(code))
        except OSError:
            pass  # the launching process is gone: nobody to tell
    return code


def _data_problem(config: Any) -> str | None:
    """The CSVs' fatal problem (`<file>: <what>`), found before any folder is made or the monitor opens."""
    if config.data.is_builtin_demo:
        return None
    from kbert_tui.errors import DataError
    from kbert_tui.training.checkpoint import read_state
    from kbert_tui.training.data import load_data

    labels = None
    if config.training.resume_from is not None:
        try:
            labels = read_state(config.training.resume_from)["labels"]
        except Exception:  # the trainer reports a damaged checkpoint in its own words
            labels = None
    try:
        load_data(config.data, config.run.seed, lambda *args, **kwargs: None, label_names=labels)
    except DataError as error:
        return str(error)
    return None


def _run_tui(config: Any, output_dir: str | None, run_id: str | None = None) -> int:
    from kbert_tui.session import RunSession
    from kbert_tui.training import BLAS  # loads OpenBLAS before MLX
    from kbert_tui.tui import monitor_run

    sessions: list[RunSession] = []

    def session(config: Any, output_dir: str | None = None) -> RunSession:
        sessions.append(RunSession(config, output_dir=output_dir, run_id=run_id))
        return sessions[-1]

    try:
        code = monitor_run(config, output_dir=output_dir, stopped_status=EXIT_STOPPED, session_factory=session)
    except KeyboardInterrupt:
        print("interrupted; the run was stopped", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if code != EXIT_OK and sessions:
        print_resume(sessions[0].output_dir)
    if code == EXIT_INTERRUPTED:
        return code
    if BLAS.hint:
        print(f"note: {BLAS.hint}", file=sys.stderr)
    return code


def _replay(args: argparse.Namespace) -> int:
    from kbert_tui.headless import replay_headless
    from kbert_tui.tui import open_replay, run_replay

    path = args.path
    if Path(path).expanduser().is_dir():  # a run directory, as attach and compare take: its events.jsonl
        from kbert_tui.remote import resolve_run

        try:
            path = str(resolve_run(path).events_path)
        except OSError as error:  # resolve_run's message names the directory and what it lacks
            return _error(str(error))
    try:
        source = open_replay(path, speed=args.speed)
    except OSError as error:
        return _error(f"{path}: {_os_problem(error)}")
    problem = _events_problem(path)
    if problem:
        return _error(f"{path}: {problem}")
    if not sys.stdout.isatty():
        print("stdout is not a terminal: printing a summary instead of opening the monitor", file=sys.stderr)
        return replay_headless(source)
    return run_replay(source)


def _attach(args: argparse.Namespace) -> int:
    from kbert_tui.remote import AttachedRun, resolve_run
    from kbert_tui.tui import AttachSource

    if args.target is not None and "://" in args.target:
        return _attach_broker(args)
    if args.run_id is not None:
        return _error(f"attach: unexpected {args.run_id!r} (a RUN_ID goes with a redis:// URL)")
    try:
        source = AttachSource(AttachedRun(resolve_run(args.target)), read_only=args.read_only)
    except OSError as error:
        return _error(f"cannot attach: {error.strerror or error}")
    return _show_attached(source)


def _attach_broker(args: argparse.Namespace) -> int:
    import os

    from kbert_tui.config import broker_url_problem
    from kbert_tui.remote.broker import BrokerError, BrokerRun, list_runs, redact
    from kbert_tui.tui import AttachSource

    url = args.target
    if problem := broker_url_problem(url):
        return _error(f"attach: {problem}")
    try:
        if args.run_id is None:
            runs = list_runs(url)
        else:
            run = BrokerRun(url, args.run_id, token=args.token or os.environ.get("KBERT_TUI_BROKER_TOKEN"))
    except BrokerError as error:
        return _error(str(error))
    if args.run_id is None:
        if not runs:
            print(f"no runs on {redact(url)}")
        from kbert_tui.headless import shown

        for r in runs:  # what a broker holds is anyone's writing: shown, never interpreted by the terminal
            print(f"{shown(r.get('run_id', '?'), 80):40s} {shown(r.get('state', '?'), 20):10s} "
                  f"{shown(r.get('host', '?'), 80)} "
                  f"pid {shown(r.get('pid', '?'), 20)}  started {shown(str(r.get('started_at', '?'))[:19])}"
                  f"{'  control' if r.get('control') else ''}")
        return EXIT_OK
    return _show_attached(AttachSource(run, read_only=args.read_only))


def _show_attached(source: Any) -> int:
    from kbert_tui.headless import Progress, attach_headless
    from kbert_tui.tui import run_attached

    if not sys.stdout.isatty():
        print("stdout is not a terminal: printing the history's summary, then progress lines", file=sys.stderr)
        try:
            return attach_headless(source, Progress())
        except KeyboardInterrupt:
            print("detached; the run goes on", file=sys.stderr)
            return EXIT_INTERRUPTED
    return run_attached(source)


def _compare(args: argparse.Namespace) -> int:
    from kbert_tui.remote import resolve_run
    from kbert_tui.state.compare import compare_table, label_runs, load_run, render_table

    if len(args.runs) < 2:
        return _error("compare needs two or more runs (run directories or events files)")
    interactive = args.format is None and sys.stdout.isatty()  # the view draws loss curves: every batch
    records = []
    for run in args.runs:
        try:
            record = load_run(resolve_run(run).events_path, curves=interactive)
        except OSError as error:  # resolve_run's messages name the path; open()'s carry it in .filename
            return _error(f"{run}: {_os_problem(error)}" if error.filename else str(error))
        if record.run_id is None and not record.steps:
            what = "empty" if record.events == 0 else f"no training.started in its {record.events:,} lines"
            return _error(f"{run}: not a run's events log ({what})")
        records.append(record)
    label_runs(records)
    if interactive:
        from kbert_tui.tui.compare import CompareApp

        CompareApp(records).run()
        return EXIT_OK
    sys.stdout.write(render_table(compare_table(records), args.format or "table"))
    return EXIT_OK


def _os_problem(error: OSError) -> str:
    """What went wrong opening a file, without repeating its name."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not an events file"
    return (error.strerror or str(error)).lower()


def _events_problem(path: str) -> str | None:
    """Why PATH can't be replayed (empty, or no line is an event), read up to its first event."""
    from kbert_tui.events.store import read_events
    from kbert_tui.state import count_of

    reader = read_events(path)
    try:
        if next(iter(reader), None) is not None:
            return None
    except OSError as error:
        return _os_problem(error)
    if reader.lines == 0:
        return "empty: no events to replay"
    return (f"not an events file: none of its {count_of(reader.lines, 'line')} is an event "
            f"(first problem: {reader.first_error})")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def __getattr__(name: str) -> Any:
    """The headless printers' old names here (`_Progress`, `_print_progress`), loaded when first asked for."""
    if name in ("_Progress", "_print_progress"):
        from kbert_tui import headless

        return headless.Progress if name == "_Progress" else headless.print_progress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _error(message: str) -> int:
    print(f"kbert-tui: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT
