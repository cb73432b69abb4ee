"""`kbert-tui run --resume RUN_DIR`: the same run, continued from its newest checkpoint.

A resumed run keeps its run id and its folder: the new process appends to the same events.jsonl and
metrics.csv, so replay, attach and compare read one log and tell one story. Its `training.started`
says where it picked up (`resumed_from`, `resumed_at_step`): readers drop what the earlier process
logged past that step (a killed run's steps after its last checkpoint are done again).

Keeping the id (rather than a new id linked both ways) is what lets every reader stay a reader of one
log: nothing has to find and join a second folder, and `attach RUN_ID` finds the run wherever it is.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kbert_tui.config import RunConfig, default_config, load_config
from kbert_tui.errors import ConfigError

__all__ = ["ResumePoint", "find_resume_point", "resume_command", "resume_config"]


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from, and what its state.json says."""

    run_dir: Path
    checkpoint: Path
    run_id: str | None
    step: int
    config_source: str | None  # the config file the run was started from (None: the built-in demo)


def _checkpoints(run_dir: Path) -> list[tuple[int, float, Path, dict[str, Any]]]:
    import json

    found = []
    folder = run_dir / "checkpoints"
    for checkpoint in sorted(folder.iterdir()) if folder.is_dir() else []:
        if checkpoint.name.endswith(".tmp") or not (checkpoint / "model.safetensors").is_file():
            continue  # a checkpoint being written when the process died
        try:
            state = json.loads((checkpoint / "state.json").read_text())
            step = state["step"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(step, int) and not isinstance(step, bool):
            found.append((step, (checkpoint / "state.json").stat().st_mtime, checkpoint, state))
    return found


def find_resume_point(run_dir: str | Path) -> ResumePoint:
    """The newest checkpoint of `run_dir` (most steps; the latest written on a tie); ConfigError naming the
    folder and what is missing when there is none."""
    import json

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run directory")
    from kbert_tui.remote.local import INFO_NAME, RunInfo

    info = RunInfo.read(run_dir / INFO_NAME)
    if info is not None and not info.ended and not info.process_gone():
        raise ConfigError(f"--resume {run_dir}: the run is still going (pid {info.pid} on {info.host}); stop it "
                          f"first (s in its monitor or in kbert-tui attach {run_dir})")
    found = _checkpoints(run_dir)
    if not found:
        raise ConfigError(f"--resume {run_dir}: no checkpoint to resume from in {run_dir / 'checkpoints'}")
    step, _, checkpoint, state = max(found, key=lambda item: (item[0], item[1]))
    try:
        saved = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError):
        saved = {}
    source = saved.get("source") if isinstance(saved, dict) else None
    run_id = state.get("run_id")
    return ResumePoint(run_dir.resolve(), checkpoint.resolve(), run_id if isinstance(run_id, str) else None, step,
                       source if isinstance(source, str) else None)


def resume_config(point: ResumePoint, config_path: str | None) -> RunConfig:
    """The config the resumed run trains with: CONFIG when given, else the file the run started from (the
    built-in demo when it started from none), resuming from `point` into its own folder."""
    if config_path is not None:
        config = load_config(config_path)
    elif point.config_source is None:
        config = default_config()
    elif Path(point.config_source).is_file():
        config = load_config(point.config_source)
    else:
        raise ConfigError(f"--resume {point.run_dir}: its config file {point.config_source} is gone; "
                          f"name one: kbert-tui run CONFIG --resume {point.run_dir}")
    return config.replace(training=replace(config.training, resume_from=point.checkpoint))


def resume_command(run_dir: str | Path) -> str | None:
    """`kbert-tui run --resume DIR` for a run that has a checkpoint to go on from (None when it has none);
    DIR relative to the working directory when it is under it."""
    run_dir = Path(run_dir)
    if not _checkpoints(run_dir):
        return None
    try:
        shown = run_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = run_dir.resolve()
    return f"kbert-tui run --resume {shlex.quote(str(shown))}"
