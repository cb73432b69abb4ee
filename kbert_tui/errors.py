"""Bad input from the user, as exceptions: each ends a command with `lifecycle.EXIT_BAD_INPUT` (2).

The message says where and what (a file, a key path, a row) in one line; the command prints it and
exits 2, never with a traceback. The modules that raise them re-export them (`config.ConfigError`,
`training.data.DataError`, …). Imports nothing of the project, so any layer may raise them.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "DeviceError", "PretrainedError", "UserInputError"]


class UserInputError(Exception):
    """Bad input from the user (config, data, checkpoint): the message says where and what; exit status 2."""


class ConfigError(UserInputError, ValueError):
    """A configuration problem; the message names the file, the key path and the expectation."""


class DataError(UserInputError):
    """The data cannot be trained on; the message says which file and what to fix."""


class DeviceError(UserInputError):
    """`[training] device` asks for a GPU this MLX can't use."""


class CheckpointError(UserInputError):
    """`resume_from` names a checkpoint that can't be resumed (missing, damaged, another model's shape)."""


class PretrainedError(UserInputError):
    """A `model.pretrained` checkpoint that cannot be used; the message says which file and why."""
