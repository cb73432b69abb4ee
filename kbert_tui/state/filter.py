"""The event-log filter language: parse a query once, then match events quickly.

Terms are separated by spaces and AND together; `!term` negates one. A term is one of:

    training.*          a name glob (a term holding * ? or [ is a glob over the event name)
    training.started    a dotted word is an event name, matched exactly
    name:GLOB           the same, explicitly
    source:NAME         the event's source (a glob: source:plugin:*)
    corr:ID             the correlation id (a glob; `corr:run-1` or `corr:run-*`)
    key=value           a data field equals value (dotted path: metrics.grad_norm=0.5; value may be a glob)
    key!=value          a data field differs from value (or is missing)
    key>num  key<num    numeric comparison on a data field (also >= and <=)
                        (a bare key missing at the top also matches one level down: loss, val_accuracy)
    text  "two words"   free text, case-insensitive, over name, source and data

`AND` between terms is allowed and changes nothing. `a OR b` matches either side; AND binds tighter
(`x y OR z` is `(x y) OR z`), and parentheses group: `training.batch_completed (loss>5 OR loss=NaN)`.
`!( ... )` negates a group. epoch:/step:/caused-by: stay outside OR and parentheses (the log judges
them, not the event). `loss=NaN` also matches a NaN float. Bad syntax raises `FilterSyntaxError`
whose `position` is the 0-based column of the problem.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from kbert_tui.events import Event
from kbert_tui.events import catalog as ev

__all__ = ["EventMatcher", "FilterSyntaxError", "NameTerm", "is_event_name", "parse_filter", "event_text",
           "event_texts", "FILTER_HELP", "FILTER_TERMS"]

FILTER_TERMS: tuple[tuple[str, str], ...] = (
    ("training.*", "name glob (* ? [..])"),
    (ev.TRAINING_STARTED, "exact event name"),
    ("name:GLOB", "explicit name glob"),
    ("source:NAME", "source (glob)"),
    ("corr:ID", "correlation id (glob)"),
    ("epoch:N step:N", "events of that epoch / training step (readings taken during it too)"),
    ("caused-by:ID", "that event and everything it led to (c shows an event's id and thread)"),
    ("key=value", "data field equals (value may be a glob)"),
    ("key!=value", "differs or missing"),
    ("key>num key<num", "numeric (also >= <=)"),
    ("metrics.loss<0.3", "dotted paths into data; a bare key also finds metrics.KEY"),
    ("free text", "anywhere, any case"),
    ('"two words"', "quoted text"),
    ("!term", "negation"),
    ("a b", "terms AND together"),
    ("a OR b", "either (AND binds tighter)"),
    ("(a OR b) c  !(..)", "grouping; a negated group"),
)
"""Each term of the language with what it matches: the help screen and docs show these."""

FILTER_HELP = "\n".join(f"{term:<18}{what}" for term, what in FILTER_TERMS)

_GLOB_CHARS = set("*?[")
_EVENT_NAME = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)+$")


def is_event_name(text: str) -> bool:
    """Whether `text` reads as an event name in a filter (`a.dotted_name`), not as text or a glob."""
    return _EVENT_NAME.match(text) is not None
_OPERATORS = ("!=", ">=", "<=", "=", ">", "<")
_MISSING = object()


class FilterSyntaxError(ValueError):
    """A filter that can't be parsed; `position` is the 0-based column where the problem is."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at column {position + 1})")
        self.message = message
        self.position = position


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    position: int
    quoted: bool
    paren: bool = False  # a grouping "(" or ")"


def _tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    depth = 0  # open groups: outside one, a ")" after a "(" in the same word stays in it (`error=f(x)`)
    i, n = 0, len(query)
    while i < n:
        if query[i].isspace():
            i += 1
            continue
        if query[i] == "(" or (query[i] == "!" and i + 1 < n and query[i + 1] == "("):
            if query[i] == "!":
                tokens.append(_Token("!", i, False))
                i += 1
            tokens.append(_Token("(", i, False, True))
            depth += 1
            i += 1
            continue
        if query[i] == ")":
            tokens.append(_Token(")", i, False, True))
            depth = max(0, depth - 1)
            i += 1
            continue
        start = i
        buf: list[str] = []
        parts = 0
        quoted_parts = 0
        while i < n and not query[i].isspace():
            ch = query[i]
            if ch == ")" and (depth > 0 or "(" not in buf) and _closes_word(query, i):
                break
            parts += 1
            if ch in "\"'":
                quoted_parts += 1
                close = query.find(ch, i + 1)
                if close < 0:
                    raise FilterSyntaxError(f"unclosed quote {ch}", i)
                buf.append(query[i + 1:close])
                i = close + 1
            else:
                buf.append(ch)
                i += 1
        text = "".join(buf)
        negated_quote = quoted_parts == 1 and parts == 2 and query[start] == "!"
        if negated_quote:
            tokens.append(_Token("!", start, False))
            tokens.append(_Token(text[1:], start + 1, True))
        else:
            tokens.append(_Token(text, start, quoted_parts == 1 and parts == 1))
    return tokens


def _closes_word(query: str, i: int) -> bool:
    """Whether the ")" at `i` ends the word: only ")"s follow it before a space or the end."""
    j = i
    while j < len(query) and query[j] == ")":
        j += 1
    return j == len(query) or query[j].isspace()


def _glob(pattern: str) -> Callable[[str], bool]:
    regex = re.compile(fnmatch.translate(pattern), re.DOTALL)
    cache: dict[str, bool] = {}

    def match(value: str) -> bool:
        hit = cache.get(value)
        if hit is None:
            hit = regex.match(value) is not None
            if len(cache) < 10_000:
                cache[value] = hit
        return hit

    return match


def _resolve(event: Event, path: tuple[str, ...]) -> Any:
    data = event.data
    if path[0] not in data:
        # `val_accuracy>0.9` also finds metrics.val_accuracy: one level down, first nested dict that has it
        for nested in data.values():
            if isinstance(nested, dict) and path[0] in nested:
                data = nested
                break
    value: Any = data
    for part in path:
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
        if value is _MISSING:
            break
    if value is _MISSING and len(path) == 1:
        attr = {"name": "name", "source": "source", "corr": "correlation_id",
                "correlation_id": "correlation_id", "id": "id"}.get(path[0])
        if attr is not None:
            return getattr(event, attr)
    return value


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equals(expected: str) -> Callable[[Any], bool]:
    number = _as_number(expected)
    lowered = expected.lower()
    glob = _glob(expected) if _GLOB_CHARS & set(expected) else None
    if number is not None and math.isnan(number):  # `loss=NaN`: a NaN float live, "NaN" in the log
        return lambda value: (isinstance(value, float) and math.isnan(value)) or (
            isinstance(value, str) and value.lower() == "nan")

    def check(value: Any) -> bool:
        if value is _MISSING:
            return False
        if value is None:
            return lowered in ("null", "none")
        if isinstance(value, bool):
            return lowered == ("true" if value else "false")
        if isinstance(value, (int, float)):
            return number is not None and float(value) == number
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        return glob(text) if glob is not None else text == expected

    return check


# a value JSON can't hold is searched as its repr
_as_json = functools.partial(orjson.dumps, default=repr, option=orjson.OPT_NON_STR_KEYS)


def event_text(event: Event) -> str:
    """The lower-cased text free-text terms search: name, source, correlation id and the data (as JSON)."""
    return event_texts([event])[0]


def event_texts(events: Sequence[Event]) -> list[str]:
    """`event_text` of many events, in one pass that reads each event once (its data written by orjson:
    100k events ~115 ms, against ~225 ms with repr and ~360 ms in three passes over cold memory)."""
    try:
        return [f"{e.name} {e.source} {e.correlation_id or ''} {_as_json(e.data).decode()}".lower() for e in events]
    except Exception:  # noqa: BLE001 - a payload orjson refuses (deep nesting, odd keys): the careful way
        return [f"{e.name} {e.source} {e.correlation_id or ''} {_data_text(e.data).decode()}".lower() for e in events]


def _data_text(data: Any) -> bytes:
    try:
        return _as_json(data)
    except Exception:  # noqa: BLE001
        try:
            return repr(data).encode()
        except Exception:  # noqa: BLE001 - a payload object with a broken __repr__
            return b""


Predicate = Callable[[Event, Callable[[], str]], bool]
Scope = tuple[str, "int | str", bool]  # (epoch | step | caused-by, value, negated)


@dataclass(frozen=True, slots=True)
class NameTerm:
    """An event name (or name glob) a filter mentions, and its 0-based column in the query."""

    pattern: str
    position: int

    @property
    def is_glob(self) -> bool:
        return bool(_GLOB_CHARS & set(self.pattern))


class EventMatcher:
    """A parsed filter. `matches(event, text)` where `text()` returns `event_text(event)` (maybe cached)."""

    def __init__(self, query: str, predicates: list[Predicate], uses_text: bool,
                 fields: tuple[tuple[str, ...], ...] = (), scopes: tuple[Scope, ...] = (),
                 names: tuple[NameTerm, ...] = ()) -> None:
        self.query = query
        self._predicates = predicates
        self.uses_text = uses_text
        self.fields = fields  # data paths the filter compares (shown beside each matching row)
        self.names = names  # the event names and name globs it mentions (rules check them against the catalogue)
        # epoch:N step:N caused-by:ID: where an event sits in the run, which the event log knows
        # (`EventLog` checks them); `matches` leaves them out, `matches_alone` reads data.epoch/step
        self.scopes = scopes

    text_needles: tuple[str, ...] | None = None
    """Set when the filter is only free-text terms ANDed: the needles, each to be found in `event_text`."""
    required_needles: tuple[str, ...] = ()
    """Needles every event the filter accepts holds in its `event_text`: its free-text terms ANDed with the
    rest (none under an OR); a search on disk looks for them in the raw lines before decoding any."""

    def __bool__(self) -> bool:
        return bool(self._predicates or self.scopes)

    @property
    def has_predicates(self) -> bool:
        return bool(self._predicates)

    def matches_alone(self, event: Event) -> bool:
        """`matches`, with epoch:/step: judged by the event's own data (no log around it: a search on
        disk); caused-by: needs the log and matches nothing here."""
        for kind, value, negated in self.scopes:
            hit = kind != "caused-by" and event.data.get(kind) == value
            if hit == negated:
                return False
        return self.matches(event)

    def matches(self, event: Event, text: Callable[[], str] | None = None) -> bool:
        get_text = text if text is not None else (lambda: event_text(event))
        for predicate in self._predicates:
            if not predicate(event, get_text):
                return False
        return True

    def shown_fields(self, event: Event) -> str:
        """`key=value` for each data field the filter compares, as found in `event` (empty when none)."""
        parts = []
        for path in self.fields:
            value = _resolve(event, path)
            if value is _MISSING:
                continue
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            if isinstance(value, float):
                text = f"{value:.6g}"
            parts.append(f"{'.'.join(path)}={text}")
        return " ".join(parts)


def _term(token: _Token, fields: list[tuple[str, ...]] | None = None,
          names: list[NameTerm] | None = None) -> tuple[Predicate, bool]:
    raw, pos = token.text, token.position
    if token.quoted:
        return _Text(raw.lower()), True
    lowered = raw.lower()
    for prefix, attr in (("source:", "source"), ("corr:", "correlation_id"), ("name:", "name")):
        if lowered.startswith(prefix):
            value = raw[len(prefix):]
            if not value:
                raise FilterSyntaxError(f"'{prefix}' needs a value, e.g. {prefix}{_EXAMPLES[prefix]}", pos)
            if attr == "name" and names is not None:
                names.append(NameTerm(value, pos + len(prefix)))
            glob = _glob(value)
            return (lambda e, t, a=attr, g=glob: g(getattr(e, a) or "")), False
    # the first operator character in the term decides (so `a>=1` is >= and not >)
    positions = [(raw.find(o), o) for o in _OPERATORS if raw.find(o) >= 0]
    if positions:
        at = min(found for found, _ in positions)
        op = next(o for found, o in positions if found == at)
        key, value = raw[:at], raw[at + len(op):]
        if not key:
            raise FilterSyntaxError(f"'{op}' needs a field name before it, e.g. loss{op}0.5", pos)
        if not value and op not in ("=", "!="):
            raise FilterSyntaxError(f"'{key}{op}' needs a number after it", pos + at + len(op))
        path = tuple(key.split("."))
        if any(not part for part in path):
            raise FilterSyntaxError(f"bad field path '{key}'", pos)
        if fields is not None and path not in fields and path[0] not in _EVENT_ATTRS:
            fields.append(path)
        if op in ("=", "!="):
            check = _equals(value)
            if op == "=":
                return (lambda e, t: check(_resolve(e, path))), False
            return (lambda e, t: not check(_resolve(e, path))), False
        number = _as_number(value)
        if number is None:
            raise FilterSyntaxError(f"'{value}' is not a number (after {key}{op})", pos + at + len(op))
        compare = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__}[op]

        def numeric(e: Event, t: Callable[[], str], path: tuple[str, ...] = path) -> bool:
            got = _as_number(_resolve(e, path))
            return got is not None and compare(got, number)

        return numeric, False
    if _GLOB_CHARS & set(raw):
        if raw.count("[") > raw.count("]"):
            raise FilterSyntaxError("unclosed '[' in name glob", pos + raw.index("["))
        glob = _glob(raw)
        if names is not None:
            names.append(NameTerm(raw, pos))
        return (lambda e, t: glob(e.name)), False
    if _EVENT_NAME.match(raw):  # `training.started`: that event name (quote it to search text)
        if names is not None:
            names.append(NameTerm(raw, pos))
        return (lambda e, t: e.name == raw), False
    return _Text(lowered), True


class _Text:
    """A free-text term (`EventLog` searches its cached texts for the needle directly)."""

    __slots__ = ("needle",)

    def __init__(self, needle: str) -> None:
        self.needle = needle

    def __call__(self, event: Event, text: Callable[[], str]) -> bool:
        return self.needle in text()


_EXAMPLES = {"source:": "trainer", "corr:": "run-1", "name:": "training.*"}
_EVENT_ATTRS = {"name", "source", "corr", "correlation_id", "id"}


def parse_filter(query: str) -> EventMatcher:
    """Parse `query` into a matcher; an empty query matches everything."""
    parser = _Parser(_tokenize(query))
    alternatives = parser.alternatives(0)
    if len(alternatives) == 1:
        items = alternatives[0]
        predicates = [item for item in items if not isinstance(item, tuple)]
        scopes = [item for item in items if isinstance(item, tuple)]
    else:
        predicates, scopes = [_any(parser.without_scopes(alternatives))], []
    matcher = EventMatcher(query, predicates, parser.uses_text, tuple(parser.fields), tuple(scopes),
                           tuple(parser.names))
    texts = [p for p in predicates if isinstance(p, _Text)]
    matcher.required_needles = tuple(p.needle for p in texts)  # `predicates` are ANDed (an OR is one predicate)
    if predicates and len(texts) == len(predicates):
        matcher.text_needles = tuple(p.needle for p in texts)
    return matcher


_Item = Predicate | Scope


def _all(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda e, t: all(p(e, t) for p in predicates)


def _any(alternatives: list[Predicate]) -> Predicate:
    return lambda e, t: any(p(e, t) for p in alternatives)


class _Parser:
    """Recursive descent over the tokens: OR of ANDs of (maybe negated) terms and groups."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.fields: list[tuple[str, ...]] = []
        self.names: list[NameTerm] = []
        self.uses_text = False
        self._scope_at: dict[int, int] = {}  # id(scope) -> its column, for errors inside OR / groups

    def alternatives(self, depth: int) -> list[list[_Item]]:
        """The AND-lists between ORs, up to the ")" closing this depth (not consumed) or the end."""
        alternatives: list[list[_Item]] = [[]]
        last_or: _Token | None = None
        tokens = self.tokens
        while self.i < len(tokens):
            token = tokens[self.i]
            if token.paren and token.text == ")":
                if depth == 0:
                    raise FilterSyntaxError("')' without a matching '('", token.position)
                break
            if not token.quoted and token.text in ("OR", "||", "|"):
                if not alternatives[-1]:
                    raise FilterSyntaxError("OR needs a term before it, e.g. loss>5 OR loss=NaN", token.position)
                alternatives.append([])
                last_or = token
                self.i += 1
                continue
            if not token.quoted and token.text == "AND":
                self.i += 1
                continue
            alternatives[-1].append(self.item(depth))
        if last_or is not None and not alternatives[-1]:
            raise FilterSyntaxError("OR needs a term after it, e.g. loss>5 OR loss=NaN", last_or.position)
        return alternatives

    def without_scopes(self, alternatives: list[list[_Item]]) -> list[Predicate]:
        """Each AND-list as one predicate; epoch:/step:/caused-by: can't be judged there."""
        out = []
        for items in alternatives:
            for item in items:
                if isinstance(item, tuple):
                    raise FilterSyntaxError(f"'{item[0]}:' works only outside OR and parentheses",
                                            self._scope_at[id(item)])
            out.append(_all(items))  # type: ignore[arg-type]
        return out

    def item(self, depth: int) -> _Item:
        tokens = self.tokens
        token = tokens[self.i]
        negate = False
        if not token.quoted and token.text == "!" and self.i + 1 < len(tokens) \
                and tokens[self.i + 1].position == token.position + 1:
            negate = True  # `!"quoted text"` or `!(group)`
            self.i += 1
            token = tokens[self.i]
        if token.paren:
            return self.group(depth, negate)
        self.i += 1
        if not negate and not token.quoted and token.text.startswith("!") and not token.text.startswith("!="):
            negate = True
            stripped = token.text[1:]
            if not stripped:
                raise FilterSyntaxError("'!' needs a term after it, e.g. !system.*", token.position)
            token = _Token(stripped, token.position + 1, False)
        scope = _scope(token, negate)
        if scope is not None:
            self._scope_at[id(scope)] = token.position
            return scope
        predicate, text = _term(token, None if negate else self.fields, self.names)
        self.uses_text = self.uses_text or text
        if negate:
            def negated(e: Event, t: Callable[[], str]) -> bool:
                return not predicate(e, t)
            return negated
        return predicate

    def group(self, depth: int, negate: bool) -> Predicate:
        opening = self.tokens[self.i]
        self.i += 1
        alternatives = self.alternatives(depth + 1)
        if self.i >= len(self.tokens):
            raise FilterSyntaxError("unclosed '(': add ')'", opening.position)
        self.i += 1  # the ")"
        if alternatives == [[]]:
            raise FilterSyntaxError("empty parentheses", opening.position)
        predicate = _any(self.without_scopes(alternatives)) if len(alternatives) > 1 \
            else _all(self.without_scopes(alternatives))
        if negate:
            return lambda e, t: not predicate(e, t)
        return predicate


def _scope(token: _Token, negate: bool) -> Scope | None:
    if token.quoted:
        return None
    lowered = token.text.lower()
    for prefix in ("epoch:", "step:", "caused-by:"):
        if lowered.startswith(prefix):
            value = token.text[len(prefix):]
            kind = prefix[:-1]
            if not value:
                raise FilterSyntaxError(f"'{prefix}' needs a value, e.g. {prefix}{_SCOPE_EXAMPLES[kind]}",
                                        token.position)
            if kind == "caused-by":
                return (kind, value, negate)
            if not value.isdigit():
                raise FilterSyntaxError(f"'{value}' is not a whole number (after {prefix})",
                                        token.position + len(prefix))
            return (kind, int(value), negate)
    return None


_SCOPE_EXAMPLES = {"epoch": "3", "step": "120", "caused-by": "EVENT_ID"}
