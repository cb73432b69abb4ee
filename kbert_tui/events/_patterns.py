"""Shell-style glob patterns over whole event names (`*` also matches dots)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from functools import lru_cache

_MAGIC = re.compile(r"[*?\[]")


def validate_pattern(pattern: object) -> str:
    if not isinstance(pattern, str):
        raise ValueError(f"event pattern must be a string, got {type(pattern).__name__}")
    if not pattern:
        raise ValueError("event pattern must not be empty")
    return pattern


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """Return a predicate telling whether an event name matches `pattern` (case-sensitive)."""
    validate_pattern(pattern)
    if pattern == "*":
        return _always
    if not _MAGIC.search(pattern):
        return pattern.__eq__
    head = pattern[:-1]
    if pattern.endswith("*") and not _MAGIC.search(head):
        return lambda name: name.startswith(head)
    tail = pattern[1:]
    if pattern.startswith("*") and not _MAGIC.search(tail):
        return lambda name: name.endswith(tail)
    regex = re.compile(fnmatch.translate(pattern))
    return lambda name: regex.match(name) is not None


def _always(name: str) -> bool:
    return True
