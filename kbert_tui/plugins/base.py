"""PluginPort: what a plugin is, and the helpers it uses to talk to the bus."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from kbert_tui.events import catalog as ev

Handler = Callable[[Any], Any]
Guard = Callable[[Handler, str], Handler]


class PluginState(enum.StrEnum):
    """Where a plugin is in its life; `plugin.state_changed` reports each move."""

    UNLOADED = "unloaded"
    LOADED = "loaded"
    INITIALIZED = "initialized"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    FAILED = "failed"  # set aside after an error; it gets no more events


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What a plugin may know about the run it serves."""

    output_dir: Path | None = None
    run_id: str | None = None


class PluginNotAttached(RuntimeError):
    """A bus helper was used before the plugin was given a bus."""


class PluginPort:
    """Base class of every plugin.

    Subclasses set `name`, `version` and `capabilities`, take their settings from `self.config`,
    subscribe in `initialize()` with `self.subscribe(...)`, and emit with `self.emit(...)`.
    Subscriptions and tasks made through these helpers are undone when the plugin is cleaned up
    or set aside, so `cleanup()` only has to release what the plugin opened itself (files...).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    capabilities: ClassVar[tuple[str, ...]] = ()
    # The names of its own events (beyond the catalogue's): a `[[rules]]` `when` may name them.
    emits: ClassVar[tuple[str, ...]] = ()
    # A frozen dataclass of `kbert_tui.config.option(...)` fields: the plugin's keys, declared once.
    # `kbert-tui run` checks a config's keys against it before anything starts (a typo is exit 2);
    # `self.options` is the parsed instance. Without it, `self.config` is the raw table, unchecked.
    Options: ClassVar[type | None] = None

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.instance_name: str = type(self).name or type(self).__name__
        self.context = PluginContext()
        self.bus: Any = None
        self._guard: Guard | None = None
        # A plain list, as in the guide's EventAwarePlugin (which assigns and appends to it itself).
        self.subscription_ids: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._options: Any = None

    @property
    def options(self) -> Any:
        """`self.config` read through `Options` (raises ConfigError naming the bad key)."""
        if self._options is None and type(self).Options is not None:
            self._options = plugin_options(type(self), self.config, self.instance_name)
        return self._options

    # ------------------------------------------------------------------ hooks to override
    async def initialize(self) -> None:
        """Subscribe to events and open resources; raising here sets the plugin aside."""

    async def cleanup(self) -> None:
        """Release what `initialize` opened; subscriptions and tasks are undone afterwards anyway."""

    async def on_message(self, sender: str, message: dict[str, Any]) -> None:
        """A `plugin.message` addressed to this plugin (or to "*") by another plugin."""

    # ------------------------------------------------------------------ helpers
    def attach(self, bus: Any, *, instance_name: str | None = None,
               context: PluginContext | None = None, guard: Guard | None = None) -> None:
        """Give the plugin its bus (the PluginManager does this before `initialize`)."""
        self.bus = bus
        if instance_name:
            self.instance_name = instance_name
        if context is not None:
            self.context = context
        self._guard = guard

    @property
    def source(self) -> str:
        return f"plugin:{self.instance_name}"

    def _require_bus(self) -> Any:
        if self.bus is None:
            raise PluginNotAttached(f"plugin {self.instance_name!r} has no bus yet; attach() it first")
        return self.bus

    async def subscribe(self, pattern: str, handler: Handler) -> str:
        """Subscribe `handler` (sync or async, taking an Event); remembered and undone on cleanup."""
        bus = self._require_bus()
        label = getattr(handler, "__qualname__", repr(handler))
        wrapped = self._guard(handler, label) if self._guard is not None else handler
        sub_id: str = await bus.subscribe(pattern, wrapped)
        self.subscription_ids.append(sub_id)
        return sub_id

    async def unsubscribe(self, sub_id: str) -> bool:
        if sub_id in self.subscription_ids:
            self.subscription_ids.remove(sub_id)
        return bool(await self._require_bus().unsubscribe(sub_id))

    async def emit(self, name: str, data: dict[str, Any], *, correlation_id: str | None = None,
                   metadata: dict[str, Any] | None = None) -> None:
        """Emit from this plugin (source `plugin:<name>`, correlation the run id unless given)."""
        await self._require_bus().emit(
            name, data, source=self.source,
            correlation_id=correlation_id if correlation_id is not None else self.context.run_id,
            metadata=metadata,
        )

    async def send_message(self, to: str, message: dict[str, Any]) -> None:
        """Send `message` to the plugin named `to` ("*" for all others) as a `plugin.message` event."""
        await self.emit(ev.PLUGIN_MESSAGE, {"from": self.instance_name, "to": to, "message": message})

    def start_task(
        self, coro: Coroutine[Any, Any, Any] | Awaitable[Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Run a background task that is cancelled when the plugin is cleaned up or set aside."""
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def release(self) -> None:
        """Undo every subscription and cancel every task made through the helpers; idempotent."""
        subs, self.subscription_ids = self.subscription_ids, []
        for sub_id in subs:
            if self.bus is not None:
                await self.bus.unsubscribe(sub_id)
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)


MANAGER_KEYS = ("plugin", "enabled", "timeout_s", "max_errors")  # read by the PluginManager, not the plugin


def plugin_options(cls: type[PluginPort], table: Mapping[str, Any], instance: str, origin: str = "<config>") -> Any:
    """`table`'s plugin keys parsed by `cls.Options` (None when the plugin declares none)."""
    if cls.Options is None:
        return None
    from kbert_tui.config import read_section

    own = {k: v for k, v in table.items() if k not in MANAGER_KEYS}
    return read_section(cls.Options, own, f"plugins.{instance}", origin)
