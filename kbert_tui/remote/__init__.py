"""Watching and steering a run from outside its process: same machine (files), or through a broker.

Imports `kbert_tui.events` (and `kbert_tui.config` for the broker settings) only; the session and the
CLI wire it in.
"""

from .local import (
    CONTROL_NAME,
    CONTROL_REQUESTS,
    INFO_NAME,
    AttachedRun,
    AttachTarget,
    LocalControlWatcher,
    RunInfo,
    newest_run,
    rank_logs,
    requester_name,
    resolve_run,
    send_control,
)

__all__ = [
    "CONTROL_NAME",
    "CONTROL_REQUESTS",
    "INFO_NAME",
    "AttachedRun",
    "AttachTarget",
    "LocalControlWatcher",
    "RunInfo",
    "newest_run",
    "rank_logs",
    "requester_name",
    "resolve_run",
    "send_control",
]
