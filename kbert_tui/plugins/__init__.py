"""Plugins: PluginPort, the PluginManager that loads and isolates them, and the built-ins."""

from .base import PluginContext, PluginNotAttached, PluginPort, PluginState
from .manager import (
    BUILTIN_PLUGINS,
    ENTRY_POINT_GROUP,
    PluginLoadError,
    PluginManager,
    PluginTimeout,
    check_options,
    resolve_plugin,
)

__all__ = [
    "BUILTIN_PLUGINS",
    "check_options",
    "ENTRY_POINT_GROUP",
    "PluginContext",
    "PluginLoadError",
    "PluginManager",
    "PluginNotAttached",
    "PluginPort",
    "PluginState",
    "PluginTimeout",
    "resolve_plugin",
]
