"""Events to strict-JSON lines and back; any Python value becomes something JSON can hold."""

from __future__ import annotations

import dataclasses
import decimal
import enum
import json
import math
import re
import traceback
import uuid
from json.encoder import encode_basestring
from datetime import date, datetime, time, timedelta, UTC
from pathlib import PurePath
from typing import Any

from ._event import Event, new_event_id

try:  # orjson encodes ~7x and parses ~3x faster than the standard library; optional.
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by the stdlib fallback tests
    _orjson = None  # type: ignore[assignment]  # the module or nothing: every use checks for None
# Datetimes, dates and times go through _default (isoformat), as on the exact path: orjson 3.13 writes
# time(0, 0, 0, 10000) as "00:00:00.10000".
_PASSTHROUGH = _orjson.OPT_PASSTHROUGH_DATETIME if _orjson is not None else 0

_MAX_ARRAY_ITEMS = 1024
_MAX_DEPTH = 32


def _default(value: Any) -> Any:
    """Conversion for values the C encoder can't write (called only for those)."""
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except Exception:  # noqa: BLE001 - members that don't compare (TypeError, OverflowError...): as they come
            return list(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)  # a UUID as orjson writes it natively; a Decimal exactly, as its text
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, BaseException):
        return {
            "type": type(value).__name__,
            "message": str(value),
            "traceback": "".join(traceback.format_exception(value)) if value.__traceback__ else None,
        }
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    # numpy and MLX scalars/arrays: both offer .item() / .tolist() and a .size.
    size = getattr(value, "size", None)
    if isinstance(size, int) and hasattr(value, "tolist"):
        if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a scalar; an array of one stays a list
            try:
                return value.item()
            except Exception:
                pass
        if size <= _MAX_ARRAY_ITEMS:
            try:
                return value.tolist()
            except Exception:
                pass
        shape = getattr(value, "shape", None)
        return {"type": type(value).__name__, "shape": list(shape) if shape is not None else None,
                "dtype": str(getattr(value, "dtype", "")), "size": size}
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic-style models
        try:
            return value.model_dump()
        except Exception:
            pass
    return repr(value)


_fast_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
)


def _sanitize(value: Any, depth: int = 0, seen: frozenset[int] = frozenset(), notes: list[str] | None = None) -> Any:
    """Slow path: a deep copy made only of JSON-safe values (NaN → "NaN", odd keys → str).

    What had to be left out (nesting past `_MAX_DEPTH`, circular references, values that can't even
    be repr'd) is noted in `notes`, so the caller can say the event was degraded.
    """
    if depth > _MAX_DEPTH:
        if notes is not None:
            notes.append(f"data nested deeper than {_MAX_DEPTH} levels (cut there)")
        return f"<{type(value).__name__} nested deeper than {_MAX_DEPTH} levels>"
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if id(value) in seen:
        if notes is not None:
            notes.append("data holds a circular reference (written as a marker)")
        return f"<circular {type(value).__name__}>"
    inner = seen | {id(value)}
    if isinstance(value, dict):
        items = list(value.items())
        names = _key_names([k for k, _ in items])
        return {name: _sanitize(v, depth + 1, inner, notes) for name, (_, v) in zip(names, items, strict=True)}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v, depth + 1, inner, notes) for v in list(value)]
    try:
        converted = _default(value)
    except Exception:
        return _safe_repr(value)
    if converted is value or isinstance(converted, str):
        return converted
    return _sanitize(converted, depth + 1, inner, notes)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        return str(key.value)
    return str(key)


def _key_names(keys: list[Any]) -> list[str]:
    """JSON names for an object's keys, none twice: a string key keeps its name; a key that is not a string
    is written as its text, or, if that names another key of the object, as "<text> (<type>)"."""
    if all(type(key) is str for key in keys):
        return keys
    taken = {key for key in keys if isinstance(key, str)}
    names = []
    for key in keys:
        if isinstance(key, str):
            names.append(key)
            continue
        text = _safe_text(key)
        name, n = text, 1
        while name in taken:
            n += 1
            name = f"{text} ({type(key).__name__})" if n == 2 else f"{text} ({type(key).__name__} {n - 1})"
        taken.add(name)
        names.append(name)
    return names


def _safe_text(key: Any) -> str:
    try:
        return _key(key)
    except Exception:  # noqa: BLE001 - a key whose __str__ raises
        return _safe_repr(key)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def to_json(value: Any, notes: list[str] | None = None) -> str:
    """Encode `value` as compact strict JSON; never fails (what had to be cut is added to `notes`)."""
    if _orjson is not None:
        try:
            text = _orjson.dumps(value, default=_default, option=_PASSTHROUGH)
        except Exception:  # noqa: BLE001 - non-string keys, an int past 64 bits, a lone surrogate, circular...
            pass
        else:
            if b"null" not in text:
                return text.decode()
            try:  # None, or NaN/inf that orjson writes as null: the standard library tells them apart
                return _fast_encoder.encode(value)
            except Exception:  # noqa: BLE001 - NaN/inf, a dict mutated mid-encode...
                pass
    # The exact copy: NaN spelt out, keys made strings without clashes, depth and cycles cut and noted.
    return _fast_encoder.encode(_sanitize(value, notes=notes))


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of `value` (what a reader gets back after a round trip)."""
    return json.loads(to_json(value))


_quoted: dict[str, str] = {}


def _quote_cached(text: str) -> str:
    # Names, sources and correlation ids repeat: quote each once.
    quoted = _quoted.get(text)
    if quoted is None:
        quoted = encode_basestring(text)
        if len(_quoted) < 50_000:
            _quoted[text] = quoted
    return quoted


def encode_event_bytes(event: Event) -> bytes:
    """One JSONL line for `event` as UTF-8 bytes, with the trailing newline; never raises."""
    return encode_line(event)[0]


_seconds: tuple[int, bytes] = (-1, b"")  # the last whole second written, as text
# (name, source, correlation id) -> (id prefix, the line with holes for number, time, data and metadata)
_templates: dict[tuple[str, str, str | None], tuple[str, bytes, bytes]] = {}


def _template(key: tuple[str, str, str | None], prefix: str) -> tuple[str, bytes, bytes]:
    name, source, corr, ident = (_orjson.dumps(text).replace(b"%", b"%%") for text in (*key, prefix))
    head = b'{"id":' + ident[:-1] + b'%x","name":' + name + b',"timestamp":"%s'
    tail = b'+00:00","source":' + source + b',"correlation_id":' + corr + b',"data":%s,"metadata":%s}\n'
    template = (prefix, head + b".%06d" + tail, head + tail)  # with microseconds, and for a whole second
    if len(_templates) < 10_000:
        _templates[key] = template
    return template


def encode_fresh(event: Event) -> bytes | None:
    """The line of an event the bus made (it has `_origin`), filled into a template per name, source and
    correlation id, the seconds' text cached. None when its data or metadata holds a null, which
    `encode_line`'s exact path must look at."""
    global _seconds
    fields = event.__dict__
    data = _orjson.dumps(fields["data"], default=_default, option=_PASSTHROUGH)
    if b"null" in data:  # NaN/inf (or a None) in the data: see encode_line
        return None
    metadata = fields.get("metadata")
    if metadata:
        meta = _orjson.dumps(metadata, default=_default, option=_PASSTHROUGH)
        if b"null" in meta:
            return None
    else:
        meta = b"{}"
    nanos, prefix, number = fields["_origin"]
    key = (fields["name"], fields["source"], fields.get("correlation_id"))
    template = _templates.get(key)
    if template is None or template[0] is not prefix:
        template = _template(key, prefix)
    second = nanos // 1_000_000_000
    if _seconds[0] != second:
        _seconds = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S").encode())
    micro = nanos // 1000 % 1_000_000
    if micro:
        return template[1] % (number, _seconds[1], micro, data, meta)
    return template[2] % (number, _seconds[1], data, meta)


def encode_line(event: Event) -> tuple[bytes, str | None]:
    """`(line, None)`, or `(line, reason)` when the event could only be written in a degraded form.

    Degraded means: the data could not be encoded as given (nesting past the encoder's limits, a value
    whose conversion raised...); the line then holds a depth-capped copy, or as a last resort a
    `{"_unencodable": reason}` record in place of the data. Either way it is one valid line.
    """
    if _orjson is not None:
        try:
            fields = event.__dict__
            if "_origin" in fields:  # made by the bus: written from its parts
                line = encode_fresh(event)
                if line is not None:
                    return line, None
            else:
                line = _orjson.dumps(
                    {"id": event.id, "name": event.name, "timestamp": event.timestamp, "source": event.source,
                     "correlation_id": event.correlation_id, "data": event.data, "metadata": event.metadata},
                    default=_default,
                    option=_orjson.OPT_APPEND_NEWLINE | _PASSTHROUGH,
                )
                # orjson writes NaN/inf as null; any null we didn't put there sends the event down the
                # exact path, which spells them "NaN"/"Infinity" (None values in data also take that path).
                if line.count(b"null") == (event.correlation_id is None):
                    return line, None
        except Exception:  # noqa: BLE001 - too deep, odd keys, a failing default: the exact path decides
            pass
    notes: list[str] = []
    try:
        line = _encode_exact(event, notes).encode("utf-8", "backslashreplace")
        return line, (notes[0] if notes else None)
    except Exception as exc:  # noqa: BLE001 - hand-built events whose very fields misbehave
        reason = f"event could not be encoded: {type(exc).__name__}: {_safe_repr(exc)}"
    record = {**_fields(event), "data": {"_unencodable": reason}, "metadata": {}}
    return (_fast_encoder.encode(_sanitize(record)) + "\n").encode("utf-8", "backslashreplace"), reason


def _fields(event: Event) -> dict[str, Any]:
    stamp = event.timestamp
    return {
        "id": str(event.id),
        "name": str(event.name),
        "timestamp": stamp.isoformat() if isinstance(stamp, datetime) else str(stamp),
        "source": str(event.source),
        "correlation_id": None if event.correlation_id is None else str(event.correlation_id),
    }


def encode_event(event: Event) -> str:
    """One JSONL line for `event`, with the trailing newline (the exact, standard-library path)."""
    return _encode_exact(event, None)


def _encode_exact(event: Event, notes: list[str] | None) -> str:
    try:
        corr = event.correlation_id
        metadata = event.metadata
        return "".join((
            '{"id":', encode_basestring(event.id),
            ',"name":', _quote_cached(event.name),
            ',"timestamp":"', event.timestamp.isoformat(),
            '","source":', _quote_cached(event.source),
            ',"correlation_id":', "null" if corr is None else _quote_cached(corr),
            ',"data":', to_json(event.data, notes),
            ',"metadata":', to_json(metadata, notes) if metadata else "{}",
            "}\n",
        ))
    except (TypeError, AttributeError):  # hand-built events with odd field types
        pass
    return to_json({**_fields(event), "data": event.data, "metadata": event.metadata}, notes) + "\n"


# orjson reads an integer past 64 bits as a float; json keeps it exact. Such a line (19+ digits in a
# row, in a number or not) is parsed by json instead. Found by mapping digits to "0" and the rest to " "
# (bytes.translate: ~1.7 ms a MB, a regex took ~15).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19
_LONG_NUMBER_TEXT = re.compile(r"\d{19}")


def _has_long_number(data: bytes) -> bool:
    return _LONG_RUN in data.translate(_DIGITS_ONLY)


class MalformedLine(ValueError):
    """A line that isn't a readable event."""


def loads(line: str | bytes) -> Any:
    """Parse one JSON document (fast path via orjson; NaN literals of other writers still accepted)."""
    if _orjson is not None:
        try:
            parsed = _orjson.loads(line)
        except ValueError:
            pass
        else:
            long = _has_long_number(line) if isinstance(line, bytes) else _LONG_NUMBER_TEXT.search(line)
            if not long:
                return parsed
    try:
        return json.loads(line)
    except RecursionError:  # nested past the parser's limit: unreadable like any other bad line
        raise ValueError("nested too deeply to parse") from None


def decode_event(line: str | bytes) -> Event:
    """Parse one JSONL line; accepts minimal lines holding only name, timestamp and data."""
    try:
        raw = loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedLine(f"not JSON: {exc}") from None
    return event_from_dict(raw)


_RECORD_KEYS = frozenset({"id", "name", "timestamp", "source", "correlation_id", "data", "metadata"})
_fromisoformat = datetime.fromisoformat
_set_fields = object.__setattr__


def decode_lines(lines: list[bytes]) -> tuple[list[Event], list[tuple[int, str]]]:
    """The events in `lines` (event-log lines, stripped), and (index, reason) for each line that is not one.

    The one decoder of every read path (replay, query, attach, search): the lines are parsed by one
    C-level pass (orjson), and a line as JsonlStore writes it becomes an Event whose fields are the
    parsed object itself, its timestamp parsed; anything else goes through `event_from_dict`.
    """
    problems: list[tuple[int, str]] = []
    records: list[Any] | None = None
    if _orjson is not None:
        try:
            records = list(map(_orjson.loads, lines))
        except ValueError:
            pass  # some line is not JSON: parse them one by one below, to say which
        else:
            if _has_long_number(b"".join(lines)):  # rare: one scan of the chunk
                for index, line in enumerate(lines):
                    if _has_long_number(line):
                        try:
                            records[index] = json.loads(line)
                        except (ValueError, RecursionError):
                            pass  # json can't read it (too deep): orjson's reading stands
    if records is None:
        records = []
        for index, line in enumerate(lines):
            try:
                records.append(loads(line))
            except (ValueError, UnicodeDecodeError) as exc:
                problems.append((index, f"not JSON: {exc}"))
                records.append(_UNREADABLE)
    events: list[Event] = []
    append = events.append
    new = _new_event
    for index, raw in enumerate(records):
        if type(raw) is dict and raw.keys() == _RECORD_KEYS:
            stamp, name = raw["timestamp"], raw["name"]
            corr = raw["correlation_id"]
            if (type(stamp) is str and type(name) is str and name and type(raw["data"]) is dict
                    and type(raw["metadata"]) is dict and type(raw["source"]) is str
                    and type(raw["id"]) is str and raw["id"] and (corr is None or type(corr) is str)):
                try:
                    timestamp = _fromisoformat(stamp)
                except ValueError:
                    problems.append((index, f"bad timestamp {stamp!r}"))
                    continue
                raw["timestamp"] = timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=UTC)
                event = new(Event)
                _set_fields(event, "__dict__", raw)  # the parsed object becomes the event's fields
                append(event)
                continue
        if raw is _UNREADABLE:  # already counted above (a `null` line is not: it is read, and not an object)
            continue
        try:
            append(event_from_dict(raw))
        except MalformedLine as exc:
            problems.append((index, str(exc)))
    if problems:
        problems.sort()
    return events, problems


_new_event = object.__new__
_UNREADABLE = object()  # a line the parser refused


def event_from_dict(raw: Any) -> Event:
    if not isinstance(raw, dict):
        raise MalformedLine("not a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedLine("missing or empty 'name'")
    stamp = raw.get("timestamp")
    if not isinstance(stamp, str):
        raise MalformedLine("missing 'timestamp'")
    try:
        timestamp = datetime.fromisoformat(stamp)
    except ValueError:
        raise MalformedLine(f"bad timestamp {stamp!r}") from None
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    data = raw.get("data", {})
    if not isinstance(data, dict):
        raise MalformedLine("'data' is not an object")
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {"value": metadata}
    source = raw.get("source")
    corr = raw.get("correlation_id")
    event_id = raw.get("id")
    return Event(
        name=name,
        data=data,
        timestamp=timestamp,
        source=source if isinstance(source, str) else "unknown",
        correlation_id=corr if isinstance(corr, str) else (None if corr is None else str(corr)),
        metadata=metadata,
        id=event_id if isinstance(event_id, str) and event_id else new_event_id(),
    )


# docs/events.md's section on payload values (catalog.docs_page appends it; a test holds the page to it).
PAYLOAD_VALUES_DOC = r"""## Payload values: what handlers get, and what the log holds

**Handlers** get the payload as it was when `emit` / `emit_sync` returned: dicts (and their
subclasses: an OrderedDict stays one, a defaultdict keeps its factory), lists, tuples, sets,
bytearrays and numpy arrays are copied at any depth, cycles included, so later changes by the emitter
never reach them; other objects (dataclass instances, custom objects) are handed over as they are.
Emitting never fails on data: `emit` and `emit_sync` raise only `ValueError` for an empty or
non-string name and `EventBusError` once the bus is shutting down or shut down (the event is then
neither delivered, counted nor written).

**The log** holds one strict-JSON line per event (no `NaN` literals); each value is written as:

| value in `data` / `metadata` | in the log | read back as |
|---|---|---|
| `None`, `bool`, `str` | `null`, `true` / `false`, a string | the same; a lone surrogate is written as a `\uXXXX` escape (a high one followed by a low one reads back as the character they pair into) |
| `int`, any size | a number | the same `int`, past 64 bits too |
| `float` | a number | the same `float`, `-0.0` included |
| NaN, ±infinity | `"NaN"`, `"Infinity"`, `"-Infinity"` | those strings |
| `dict` and its subclasses | an object | `dict` |
| a key that is not a `str` | its text (`str(key)`; an Enum's value); if that text is another key of the same object, `"<text> (<type>)"`: `{1: "a", "1": "b"}` → `{"1 (int)": "a", "1": "b"}` | a `str` key |
| `list`, `tuple` (namedtuples too) | an array | `list` |
| `set`, `frozenset` | an array, sorted when its members compare | `list` |
| `bytes`, `bytearray`, `memoryview` | a string: the bytes as UTF-8, others as `\xNN` text | `str` |
| `datetime`, `date`, `time` | `isoformat()` | `str` |
| `timedelta` | seconds | `float` |
| `Decimal` | its exact text (`"1.50"`) | `str` |
| `UUID` | `"12345678-1234-5678-1234-567812345678"` | `str` |
| `Path` | a string | `str` |
| an Enum member | its value, by these rules | — |
| a dataclass instance | an object of its fields | `dict` |
| a numpy / MLX scalar or 0-d array | a number (or `true` / `false`) | `int` / `float` / `bool` |
| a numpy / MLX array of ≤ 1024 elements | nested arrays (`tolist()`) | `list` |
| a bigger array | `{"type", "shape", "dtype", "size"}` | `dict` |
| an exception | `{"type", "message", "traceback"}` | `dict` |
| a pydantic-style model | its `model_dump()` | — |
| anything else | its `repr()`; `"<unrepresentable T>"` if that raises | `str` |
| a container that holds itself | `"<circular T>"` where the cycle closes ¹ | `str` |
| nesting past 255 levels | cut at 32 levels: `"<T nested deeper than 32 levels>"` ¹ | `str` |

¹ The event is written in this degraded form and announced by `bus.event_degraded`. Data that the
fast encoder can't take whole (NaN, a non-string key, an int past 64 bits, a lone surrogate, a cycle)
is written by the exact one, which also cuts nesting at 32 levels."""  # noqa: E501 -- markdown table rows are one line each
