"""PluginManager: load plugins by name, run them on the bus, and keep their failures to themselves."""

from __future__ import annotations

import asyncio
import difflib
import importlib
import inspect
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from kbert_tui.events import catalog as ev

from .base import Handler, PluginContext, PluginPort, PluginState, plugin_options

ENTRY_POINT_GROUP = "kbert_tui.plugins"

# The built-ins by name, so they load even when kbert-tui runs from a source tree (not installed).
BUILTIN_PLUGINS = {
    "early_stopping": "kbert_tui.plugins.builtin.early_stopping:EarlyStoppingPlugin",
    "best_model": "kbert_tui.plugins.builtin.best_model:BestModelPlugin",
    "error_threshold": "kbert_tui.plugins.builtin.error_threshold:ErrorThresholdPlugin",
    "metrics_aggregator": "kbert_tui.plugins.builtin.metrics_aggregator:MetricsAggregatorPlugin",
    "metrics_csv": "kbert_tui.plugins.builtin.metrics_csv:MetricsCsvPlugin",
}

# Keys of a [plugins.<name>] table that the manager reads; the rest is the plugin's own config.
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_ERRORS = 5


class PluginLoadError(Exception):
    """A plugin spec could not be turned into a PluginPort class."""


class PluginTimeout(Exception):
    """A plugin call ran past its time limit."""


def resolve_plugin(spec: str | type) -> type[PluginPort]:
    """Find a plugin class: an entry-point name in group `kbert_tui.plugins`, or `package.module:Class`.

    Raises PluginLoadError in one line, with the nearest known name when the name is misspelt."""
    if isinstance(spec, type):
        target: Any = spec
    elif ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            target = importlib.import_module(module_name)
        except Exception as exc:  # a plugin module may fail on import in any way
            raise PluginLoadError(f"cannot import {module_name!r} for plugin {spec!r}: "
                                  f"{type(exc).__name__}: {_one_line(exc)}") from exc
        for part in attr.split("."):
            if not hasattr(target, part):
                hint = _nearest(part, [n for n in dir(target) if not n.startswith("_")])
                raise PluginLoadError(f"module {module_name!r} has no {attr!r}{hint} (plugin {spec!r})")
            target = getattr(target, part)
    else:
        found = list(entry_points(group=ENTRY_POINT_GROUP, name=spec))
        if found:
            try:
                target = found[0].load()
            except Exception as exc:
                raise PluginLoadError(
                    f"entry point {spec!r} ({found[0].value}) failed to load: {type(exc).__name__}: {_one_line(exc)}"
                ) from exc
        elif spec in BUILTIN_PLUGINS:
            return resolve_plugin(BUILTIN_PLUGINS[spec])
        else:
            known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(BUILTIN_PLUGINS))
            raise PluginLoadError(
                f"no plugin named {spec!r}{_nearest(spec, known)}; known: {', '.join(known)}; "
                f"or give \"package.module:Class\""
            )
    if not (isinstance(target, type) and issubclass(target, PluginPort)):
        raise PluginLoadError(f"{spec!r} is {_one_line(repr(target))}, not a PluginPort subclass")
    return target


def _nearest(name: str, known: list[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `known`, or nothing when none is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 200 else text[:199] + "…"


@dataclass(slots=True)
class _Slot:
    """One configured plugin instance and what the manager knows about it."""

    name: str
    spec: str | type
    config: dict[str, Any]
    timeout_s: float
    max_errors: int
    plugin: PluginPort | None = None
    state: PluginState = PluginState.UNLOADED
    errors: int = 0
    events_handled: int = 0
    reported: tuple[int, int] = (-1, -1)  # the first report always goes out
    last_error: str | None = None
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)


def _normalise(plugin_configs: Any) -> list[tuple[str, Any, bool, dict[str, Any]]]:
    """(name, spec, enabled, table) from a {name: table} mapping or `PluginSpec`-like records."""
    items: list[tuple[str, Any, bool, dict[str, Any]]] = []
    if plugin_configs is None:
        return items
    if isinstance(plugin_configs, Mapping):
        for name, table in plugin_configs.items():
            table = dict(table)
            if "plugin" not in table:
                raise PluginLoadError(f"[plugins.{name}] needs a `plugin` key")
            items.append((str(name), table.pop("plugin"), bool(table.pop("enabled", True)), table))
    else:
        for spec in plugin_configs:  # PluginSpec(instance_name, plugin, enabled, options)
            items.append((spec.instance_name, spec.plugin, bool(spec.enabled), dict(spec.options)))
    return items


class PluginManager:
    """Loads, initializes and activates the configured plugins; isolates their failures.

    Every handler a plugin subscribes through its helpers runs under a per-call timeout and counts
    towards an error budget: after `max_errors` failures the plugin is set aside (unsubscribed,
    cleaned up, `plugin.error` with `fatal: true`) and everything else carries on.
    """

    def __init__(
        self,
        bus: Any,
        plugin_configs: Mapping[str, Mapping[str, Any]] | Iterable[Any] | None = None,
        *,
        output_dir: str | Path | None = None,
        run_id: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_errors: int = DEFAULT_MAX_ERRORS,
        init_timeout_s: float = 10.0,
        stats_interval_s: float = 2.0,
    ) -> None:
        self.bus = bus
        self.context = PluginContext(Path(output_dir) if output_dir is not None else None, run_id)
        self.init_timeout_s = init_timeout_s
        self.stats_interval_s = stats_interval_s
        self._stats_task: asyncio.Task[None] | None = None
        self._slots: dict[str, _Slot] = {}
        for name, spec, enabled, table in _normalise(plugin_configs):
            if not enabled:
                continue
            slot_timeout = float(table.pop("timeout_s", timeout_s))
            slot_errors = int(table.pop("max_errors", max_errors))
            self._slots[name] = _Slot(name, spec, table, slot_timeout, slot_errors)
        self._router_id: str | None = None
        self._started = False

    # ------------------------------------------------------------------ public view
    @property
    def plugins(self) -> dict[str, PluginPort]:
        """The live plugin instances by instance name (set-aside ones excluded)."""
        return {n: s.plugin for n, s in self._slots.items() if s.plugin is not None and s.state is PluginState.ACTIVE}

    def state(self, name: str) -> PluginState:
        return self._slots[name].state

    @property
    def states(self) -> dict[str, str]:
        return {n: s.state.value for n, s in self._slots.items()}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load, initialize and activate every enabled plugin, in config order."""
        if self._started:
            return
        self._started = True
        self._router_id = await self.bus.subscribe(ev.PLUGIN_MESSAGE, self._route_message)
        for slot in self._slots.values():
            await self._start_one(slot)
        if self._slots and self.stats_interval_s > 0:
            self._stats_task = asyncio.get_running_loop().create_task(self._report_stats_forever())

    async def _report_stats_forever(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            await self.report_stats()

    async def report_stats(self) -> None:
        """`plugin.stats` {plugin_name, events_handled, errors, state} for each plugin whose counts moved."""
        for slot in self._slots.values():
            counts = (slot.events_handled, slot.errors)
            if counts != slot.reported:
                slot.reported = counts
                await self._emit(slot, ev.PLUGIN_STATS, {
                    "plugin_name": slot.name, "events_handled": slot.events_handled,
                    "errors": slot.errors, "state": slot.state.value,
                })

    async def close(self) -> None:
        """Clean up every live plugin (newest first), then cancel any handler call still running."""
        if self._stats_task is not None:
            self._stats_task.cancel()
            await asyncio.gather(self._stats_task, return_exceptions=True)
            self._stats_task = None
        await self.report_stats()
        for slot in reversed(list(self._slots.values())):
            if slot.state in (PluginState.INITIALIZED, PluginState.ACTIVE):
                error = await self._cleanup(slot)
                if error:
                    await self._emit(slot, ev.PLUGIN_ERROR, {"plugin_name": slot.name, "error": error,
                                                           "stage": "cleanup", "fatal": False})
                await self._set_state(slot, PluginState.DEACTIVATED)
                await self._emit(slot, ev.PLUGIN_DEACTIVATED, {"plugin_name": slot.name, "reason": "shutdown",
                                                             "events_handled": slot.events_handled})
        leftovers = [t for s in self._slots.values() for t in s.inflight if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=1.0)
        if self._router_id is not None:
            await self.bus.unsubscribe(self._router_id)
            self._router_id = None

    async def _start_one(self, slot: _Slot) -> None:
        try:
            cls = resolve_plugin(slot.spec)
            plugin = cls(slot.config)
        except Exception as exc:
            await self._fail(slot, "load", f"{type(exc).__name__}: {exc}")
            return
        plugin.attach(self.bus, instance_name=slot.name, context=self.context,
                      guard=partial(self._guard, slot))
        slot.plugin = plugin
        await self._set_state(slot, PluginState.LOADED)
        await self._emit(slot, ev.PLUGIN_LOADED, {
            "plugin_name": slot.name, "version": plugin.version,
            "spec": slot.spec if isinstance(slot.spec, str) else f"{slot.spec.__module__}:{slot.spec.__qualname__}",
            "capabilities": list(plugin.capabilities),
        })
        try:
            await asyncio.wait_for(plugin.initialize(), timeout=self.init_timeout_s)
        except Exception as exc:
            reason = (f"initialize() took longer than {self.init_timeout_s:g} s"
                      if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}")
            await self._fail(slot, "initialize", reason)
            return
        await self._set_state(slot, PluginState.INITIALIZED)
        await self._emit(slot, ev.PLUGIN_INITIALIZED, {"plugin_name": slot.name, "config": _jsonable(plugin.config)})
        await self._set_state(slot, PluginState.ACTIVE)
        await self._emit(slot, ev.PLUGIN_ACTIVATED, {
            "plugin_name": slot.name, "version": plugin.version, "capabilities": list(plugin.capabilities),
        })

    async def _fail(self, slot: _Slot, stage: str, error: str) -> None:
        """Set a plugin aside: tell everyone, undo its subscriptions and tasks, let it clean up."""
        was_live = slot.state in (PluginState.LOADED, PluginState.INITIALIZED, PluginState.ACTIVE)
        slot.last_error = error
        await self._set_state(slot, PluginState.FAILED)
        await self._emit(slot, ev.PLUGIN_ERROR, {
            "plugin_name": slot.name, "error": error, "stage": stage, "fatal": True, "error_count": slot.errors,
        })
        if slot.plugin is not None and was_live:
            cleanup_error = await self._cleanup(slot)
            await self._emit(slot, ev.PLUGIN_DEACTIVATED, {
                "plugin_name": slot.name, "reason": f"set aside after {stage} failure",
                **({"cleanup_error": cleanup_error} if cleanup_error else {}),
            })

    async def _cleanup(self, slot: _Slot) -> str | None:
        """Run the plugin's cleanup() under the time limit, then release its subscriptions and tasks."""
        plugin = slot.plugin
        assert plugin is not None
        error = None
        try:
            await asyncio.wait_for(plugin.cleanup(), timeout=max(slot.timeout_s, 1.0))
        except TimeoutError:
            error = f"cleanup() took longer than {max(slot.timeout_s, 1.0):g} s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            await plugin.release()
        except Exception as exc:
            error = error or f"release: {type(exc).__name__}: {exc}"
        return error

    # ------------------------------------------------------------------ isolation
    def _guard(self, slot: _Slot, handler: Handler, label: str) -> Handler:
        """Wrap a plugin handler: skip once set aside, time-limit it, count its failures."""

        async def guarded(event: Any) -> None:
            if slot.state not in (PluginState.LOADED, PluginState.INITIALIZED, PluginState.ACTIVE):
                return
            slot.events_handled += 1
            started = time.perf_counter()
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await self._await_limited(slot, result, label, event)
                elif time.perf_counter() - started > slot.timeout_s:  # a blocking sync handler
                    raise PluginTimeout(
                        f"{label} blocked the loop for {time.perf_counter() - started:.1f} s on {event.name}"
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._handler_failed(slot, label, event, exc)

        guarded.__qualname__ = f"{slot.name}:{label}"
        return guarded

    async def _await_limited(self, slot: _Slot, awaitable: Any, label: str, event: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        slot.inflight.add(task)
        task.add_done_callback(slot.inflight.discard)
        try:
            done, _ = await asyncio.wait({task}, timeout=slot.timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()  # not awaited: a handler that ignores cancellation must not hang us too
            raise PluginTimeout(f"{label} took longer than {slot.timeout_s:g} s on {event.name}")
        task.result()

    async def _handler_failed(self, slot: _Slot, label: str, event: Any, exc: BaseException) -> None:
        if slot.state is PluginState.FAILED:
            return
        slot.errors += 1
        error = f"{type(exc).__name__}: {exc}"
        slot.last_error = error
        if slot.errors >= slot.max_errors:
            await self._fail(slot, "handler",
                             f"{error} (in {label} on {event.name}; {slot.errors} errors, limit {slot.max_errors})")
            return
        await self._emit(slot, ev.PLUGIN_ERROR, {
            "plugin_name": slot.name, "error": error, "stage": "handler", "handler": label,
            "event_name": event.name, "fatal": False, "error_count": slot.errors, "max_errors": slot.max_errors,
        })

    # ------------------------------------------------------------------ messages and events
    async def _route_message(self, event: Any) -> None:
        data = event.data or {}
        sender, to, message = data.get("from"), data.get("to"), data.get("message")
        targets = [s for s in self._slots.values() if s.state is PluginState.ACTIVE
                   and (s.name == to or (to == "*" and s.name != sender))]
        if not targets and to != "*" and sender in self._slots:
            await self._emit(self._slots[sender], ev.PLUGIN_ERROR, {
                "plugin_name": sender, "error": f"no active plugin named {to!r} to receive a message",
                "stage": "message", "fatal": False,
            })
        for slot in targets:
            plugin = slot.plugin
            assert plugin is not None
            deliver = self._guard(slot, _message_handler(plugin, sender, message), "on_message")
            await deliver(event)

    async def _set_state(self, slot: _Slot, new: PluginState) -> None:
        old, slot.state = slot.state, new
        if old is not new:
            await self._emit(slot, ev.PLUGIN_STATE_CHANGED,
                             {"plugin_name": slot.name, "old_state": old.value, "new_state": new.value})

    async def _emit(self, slot: _Slot, name: str, data: dict[str, Any]) -> None:
        await self.bus.emit(name, data, source=f"plugin:{slot.name}", correlation_id=self.context.run_id)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def check_options(config: Any) -> None:
    """Raise ConfigError when a `[plugins.<name>]` table has keys its plugin's `Options` reject.

    `load_config` already checks this (and that each plugin loads); this is for configs built otherwise.
    """
    origin = str(config.source) if getattr(config, "source", None) else "<config>"
    for spec in config.plugins:
        try:
            cls = resolve_plugin(spec.plugin)
        except Exception:  # noqa: BLE001 - reported at run time, like any plugin that fails to load
            continue
        plugin_options(cls, dict(spec.options), spec.instance_name, origin)


def _message_handler(plugin: PluginPort, sender: Any, message: Any) -> Handler:
    """Hands `message` from `sender` to the plugin, whatever event carries it."""
    return lambda _event: plugin.on_message(sender, message)
