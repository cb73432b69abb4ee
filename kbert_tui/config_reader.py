"""Reading a config's TOML tables: each value checked against its key's type and bounds, every problem one
ConfigError naming the file, the key path and what was expected (kbert_tui.config's parser uses it)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, overload

from kbert_tui.errors import ConfigError

__all__ = ["TableReader", "template_problem"]

_Check = Callable[[Any], bool]


class TableReader:
    """Reads one TOML table, tracking the key path and the file for error messages."""

    def __init__(self, table: Mapping[str, Any], path: str, origin: str, base_dir: Path) -> None:
        self.table = table
        self.path = path
        self.origin = origin
        self.base_dir = base_dir
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, expectation: str, got: Any = dataclasses.MISSING) -> ConfigError:
        where = f"{self.origin}: {self.key(name)}"
        expectation = _one_line(expectation)  # it may quote a path or a template from the file
        if got is dataclasses.MISSING:
            return ConfigError(f"{where}: {expectation}")
        return ConfigError(f"{where}: expected {expectation}, got {_show(got)}")

    def _get(self, name: str) -> Any:
        self.seen.add(name)
        return self.table.get(name, dataclasses.MISSING)

    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        expectation = "an integer" + _range_text(minimum, maximum)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, expectation, value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.fail(name, expectation, value)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_min: bool = False,
    ) -> float:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        low = (">" if exclusive_min else ">=") if minimum is not None else None
        expectation = "a number" + _range_text(minimum, maximum, low)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(name, expectation, value)
        too_low = minimum is not None and (value <= minimum if exclusive_min else value < minimum)
        if too_low or (maximum is not None and value > maximum):
            raise self.fail(name, expectation, value)
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, "true or false", value)
        return value

    @overload
    def text(self, name: str, default: str, *, choices: tuple[str, ...] | None = None) -> str: ...
    @overload
    def text(self, name: str, default: None, *, choices: tuple[str, ...] | None = None) -> str | None: ...
    def text(self, name: str, default: str | None, *, choices: tuple[str, ...] | None = None) -> str | None:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return default
        if choices is not None:
            if value not in choices:
                raise self.fail(name, "one of " + ", ".join(f'"{c}"' for c in choices), value)
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "a non-empty string", value)
        return value

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...] | None:
        value = self._get(name)
        if value is dataclasses.MISSING:
            return None
        if isinstance(value, str):
            value = [value]
        ok = isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
        if not ok:
            raise self.fail(name, "a non-empty list of column names", value)
        return tuple(value)

    def user_path(self, name: str, value: str) -> Path:
        """`value` as a path, `~` expanded; a NUL or an unknown `~user` is this key's error."""
        if "\x00" in value:
            raise self.fail(name, "a path without NUL characters", value)
        try:
            return Path(value).expanduser()
        except RuntimeError:
            raise self.fail(name, "a path whose ~user exists", value) from None

    def path_value(self, name: str, *, must_exist: bool, kind: str = "file") -> Path | None:
        value = self.text(name, None)
        if value is None:
            return None
        path = self.user_path(name, value)
        if not path.is_absolute():
            path = self.base_dir / path
        if must_exist:
            exists = path.is_file() if kind == "file" else path.is_dir()
            if not exists:
                raise self.fail(name, f"{kind} not found: {path} (relative paths start at the config file's folder)")
        return path

    def table_of(self, name: str) -> TableReader:
        value = self._get(name)
        if value is dataclasses.MISSING:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(name, "a table", value)
        return TableReader(value, self.key(name), self.origin, self.base_dir)

    def done(self) -> None:
        """Reject keys nobody asked for."""
        for name in self.table:
            if name not in self.seen:
                known = ", ".join(sorted(self.seen)) or "none"
                raise self.fail(name, f"unknown key (known keys here: {known})")


def template_problem(template: str) -> str | None:
    """Why `template` can't build a text from a row (None when it can): `{Column}` or `{Column:spec}` fields."""
    import string

    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as error:
        return str(error)
    for _, name, spec, conversion in fields:
        if conversion:
            return f"{{{name}!{conversion}}}: a field takes no !conversion"
        try:
            format("", spec or "")  # row values are text: the spec must suit a string
        except ValueError as error:
            return f"{{{name}:{spec}}}: {error}"
    return None


def _one_line(text: str) -> str:
    """`text` with line breaks and other control characters written as escapes."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _range_text(minimum: Any, maximum: Any, low: str | None = ">=") -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{low or '>='} {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return (" " + " and ".join(parts)) if parts else ""


def _show(value: Any) -> str:
    text = repr(value)
    kind = type(value).__name__
    return f"{text[:60]}{'…' if len(text) > 60 else ''} ({kind})"
