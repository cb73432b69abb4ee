"""Property tests of the event write path (issue 19): `emit` and `emit_sync` with generated payloads.

For any payload built from the types below (nested dicts and their subclasses, lists, tuples, sets,
frozensets, bytes, bytearrays, datetimes, Decimals, Enums, dataclasses, numpy scalars and arrays,
NaN/inf, -0.0, ints past 64 bits, lone surrogates, non-string keys, objects whose repr raises,
self-references):
- emitting never raises;
- every handler gets the data as it was at emit time, whatever the emitter changes afterwards
  (equal to a deep copy taken before the emit; objects the bus does not copy are the same objects);
- the log holds one strict-JSON line per event, and `read_events` and `query_events` read it back as
  the JSON mapping of docs/events.md ("Payload values in the log"), written out here independently.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import decimal
import enum
import json
import math
import tempfile
import uuid
from datetime import date, datetime, time, timedelta, timezone, UTC
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kbert_tui.events import Event, EventBus, EventQuery
from kbert_tui.events.store import read_events

NAME = "props.emitted"


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    label: str


class BadRepr:
    """An object whose repr raises: it must neither stop the emit nor the log."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


class Plain:
    def __repr__(self) -> str:
        return "<Plain>"


# -- generated payloads --------------------------------------------------------------------------

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(st.text(max_size=8), st.lists(st.one_of(st.characters(), surrogates), max_size=4).map("".join))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, 0.0, 1e16, 1e-7]))
big_ints = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.integers().map(lambda i: i * 2**100))
datetimes = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                            timezone(timedelta(hours=-8))])),
)
numpy_scalars = st.one_of(
    st.floats(width=32, allow_nan=True).map(np.float32),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.booleans().map(np.bool_),
)
numpy_arrays = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5).map(lambda xs: np.array(xs, dtype=np.float64)),
    st.lists(st.integers(-1000, 1000), min_size=1, max_size=5).map(lambda xs: np.array(xs).reshape(1, -1)),
    st.just(np.zeros((40, 30))),  # past the 1024 elements a line lists: summarised
)
hashable_atoms = st.one_of(
    st.none(), st.booleans(), big_ints, floats, texts, st.binary(max_size=6),
    st.sampled_from(list(Colour)), st.builds(Point, st.integers(-5, 5), st.text(max_size=3)),
    st.decimals(allow_nan=False, places=3), datetimes, st.dates(), st.times(),
    st.uuids(), numpy_scalars,
)
atoms = st.one_of(hashable_atoms, st.builds(BadRepr), st.builds(Plain), numpy_arrays,
                  st.binary(max_size=6).map(bytearray))
keys = st.one_of(texts, st.integers(-3, 3), st.sampled_from([1.5, True, None, (1, 2), Colour.RED, frozenset({1})]))


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(collections.OrderedDict),
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(lambda d: collections.defaultdict(list, d)),
        st.sets(hashable_atoms, max_size=4),
        st.frozensets(hashable_atoms, max_size=4),
    )


values = st.recursive(atoms, containers, max_leaves=12)
payloads = st.dictionaries(keys, values, max_size=5)


@st.composite
def payloads_maybe_circular(draw: st.DrawFn) -> dict[Any, Any]:
    payload = draw(payloads)
    if draw(st.booleans()) and draw(st.integers(0, 3)) == 0:  # now and then a payload that holds itself
        payload["self"] = payload
        payload["loop"] = [payload]
    return payload


# -- the reference: what the docs say a handler and the log get --------------------------------

_CAPTURED = (dict, list, tuple, set, bytearray, np.ndarray)


def expected_delivery(payload: dict[Any, Any]) -> dict[Any, Any]:
    """A deep copy of the containers the bus promises to capture; every other object is kept as itself."""
    memo: dict[int, Any] = {}

    def keep_objects(value: Any, seen: set[int]) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                keep_objects(key, seen)
                keep_objects(item, seen)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                keep_objects(item, seen)
        elif not isinstance(value, _CAPTURED):
            memo[id(value)] = value

    keep_objects(payload, set())
    return copy.deepcopy(payload, memo)


def same(got: Any, want: Any, pairs: set[tuple[int, int]] | None = None) -> bool:
    """Structural equality with types, NaN equal to NaN, arrays by value, cycles followed once."""
    pairs = set() if pairs is None else pairs
    if (id(got), id(want)) in pairs:
        return True
    if type(got) is not type(want):
        return False
    if isinstance(want, float):
        return (math.isnan(got) and math.isnan(want)) or (got == want and math.copysign(1, got) == math.copysign(1,
                                                                                                                 want))
    if isinstance(want, np.ndarray):
        return got.shape == want.shape and got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)
    if isinstance(want, (dict, list, tuple)):
        pairs.add((id(got), id(want)))
        if isinstance(want, dict):
            if isinstance(want, collections.defaultdict) and got.default_factory is not want.default_factory:
                return False
            got_items, want_items = list(got.items()), list(want.items())
            return len(got_items) == len(want_items) and all(
                gk is wk and same(gv, wv, pairs) for (gk, gv), (wk, wv) in zip(got_items, want_items, strict=True))
        return len(got) == len(want) and all(same(g, w, pairs) for g, w in zip(got, want, strict=True))
    if isinstance(want, np.generic):
        return bool(got == want) or (bool(np.isnan(got)) and bool(np.isnan(want)))
    return got is want or got == want


def change_everything(value: Any, seen: set[int] | None = None) -> None:
    """What a careless emitter does after emit: grow, shrink and overwrite every mutable container."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, dict):
        for item in list(value.values()):
            change_everything(item, seen)
        value["__changed__"] = True
    elif isinstance(value, list):
        for item in list(value):
            change_everything(item, seen)
        value.append("changed")
    elif isinstance(value, tuple):
        for item in value:
            change_everything(item, seen)
    elif isinstance(value, set):
        value.add("changed")
    elif isinstance(value, bytearray):
        value.extend(b"!")
    elif isinstance(value, np.ndarray) and value.size and value.dtype.kind in "biuf":
        value.fill(7)


def json_of(value: Any, active: tuple[int, ...] = ()) -> Any:
    """The documented JSON mapping of a payload value (docs/events.md, "Payload values in the log")."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):  # lone surrogates are written as \uXXXX escapes: a high one and a low one pair up
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, int) and not isinstance(value, enum.Enum):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if id(value) in active:
        return f"<circular {type(value).__name__}>"
    inner = (*active, id(value))
    if isinstance(value, dict):
        taken = {k for k in value if isinstance(k, str)}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                name = json_of(key)
            else:
                text = str(key.value) if isinstance(key, enum.Enum) else str(key)
                name, n = text, 1
                while name in taken:
                    n += 1
                    name = f"{text} ({type(key).__name__})" + ("" if n == 2 else f" {n - 1}")
                taken.add(name)
            out[name] = json_of(item, inner)
        return out
    if isinstance(value, (list, tuple)):
        return [json_of(item, inner) for item in value]
    if isinstance(value, (set, frozenset)):
        try:
            items = sorted(value)
        except Exception:  # members that don't compare: any order (same_json allows it)
            items = list(value)
        return [json_of(item, inner) for item in items]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, enum.Enum):
        return json_of(value.value, inner)
    if dataclasses.is_dataclass(value):
        return {f.name: json_of(getattr(value, f.name), inner) for f in dataclasses.fields(value)}
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return json_of(value.item(), inner)
    if isinstance(value, np.ndarray):
        if value.size <= 1024:
            return json_of(value.tolist(), inner)
        return {"type": "ndarray", "shape": list(value.shape), "dtype": str(value.dtype), "size": value.size}
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def same_json(got: Any, want: Any) -> bool:
    """JSON equality that tells -0.0 from 0.0 and lets a set's unorderable members come in any order."""
    if isinstance(want, float) and isinstance(got, float):
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    if isinstance(want, dict):
        return isinstance(got, dict) and list(got) == list(want) and all(same_json(got[k], want[k]) for k in want)
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return False
        if all(same_json(g, w) for g, w in zip(got, want, strict=True)):
            return True
        key = lambda item: json.dumps(item, sort_keys=True)  # noqa: E731 - an unsortable set: any order
        return sorted(map(key, got)) == sorted(map(key, want))
    return type(got) is type(want) and got == want


def strict_json(line: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-strict JSON constant {constant} in {line!r}")

    return json.loads(line, parse_constant=refuse)


# -- the properties ------------------------------------------------------------------------------


def run_emit(payload: dict[Any, Any], metadata: dict[Any, Any], how: str) -> None:
    want_data, want_meta = expected_delivery(payload), expected_delivery(metadata)
    want_json = {"data": json_of(want_data), "metadata": json_of(want_meta)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"

        async def scenario() -> list[Event]:
            bus = EventBus(enable_persistence=True, persistence_path=path)
            got: list[Event] = []
            await bus.subscribe(NAME, got.append)
            if how == "emit":
                await bus.emit(NAME, payload, metadata=metadata)
            else:
                bus.emit_sync(NAME, payload, metadata=metadata)
            change_everything(payload)
            change_everything(metadata)
            await bus.flush()
            queried = await bus.query_events(EventQuery().event_name_pattern(NAME))
            await bus.shutdown()
            return got + queried

        if how == "emit_sync without a loop":
            bus = EventBus(enable_persistence=True, persistence_path=path)
            got: list[Event] = []
            bus.subscribe_sync(NAME, got.append)
            bus.emit_sync(NAME, payload, metadata=metadata)
            change_everything(payload)
            change_everything(metadata)
            bus.close()
            delivered, from_query = got, None
        else:
            delivered, queried = (lambda events: (events[:1], events[1:]))(asyncio.run(scenario()))
            (from_query,) = queried
        (event,) = delivered
        assert same(event.data, want_data), (event.data, want_data)
        assert same(event.metadata, want_meta), (event.metadata, want_meta)
        records = [strict_json(line) for line in path.read_bytes().splitlines()]  # every line strict JSON
        (record,) = [r for r in records if r["name"] == NAME]  # beside it perhaps bus.event_degraded (a cycle)
        assert same_json(record["data"], want_json["data"]), (record["data"], want_json["data"])
        assert same_json(record["metadata"], want_json["metadata"])
        (from_log,) = [e for e in read_events(path) if e.name == NAME]
        for read in (from_log, from_query):
            if read is None:
                continue
            assert read.name == NAME and read.id == event.id and read.timestamp == event.timestamp
            assert same_json(read.data, want_json["data"]) and same_json(read.metadata, want_json["metadata"])


@given(payloads_maybe_circular(), st.dictionaries(st.text(max_size=4), values, max_size=3))
def test_emit_delivers_the_payload_as_of_emit_time_and_logs_its_json_mapping(payload, metadata):
    run_emit(payload, metadata, "emit")


@given(payloads_maybe_circular(), st.dictionaries(st.text(max_size=4), values, max_size=3))
def test_emit_sync_on_the_loop_delivers_and_logs_the_same(payload, metadata):
    run_emit(payload, metadata, "emit_sync")


@given(payloads_maybe_circular(), st.dictionaries(st.text(max_size=4), values, max_size=3))
def test_emit_sync_without_a_loop_delivers_and_logs_the_same(payload, metadata):
    run_emit(payload, metadata, "emit_sync without a loop")


def test_the_docs_state_the_mapping_these_tests_hold():
    from kbert_tui.events._codec import PAYLOAD_VALUES_DOC
    from kbert_tui.events.catalog import docs_page

    page = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    assert PAYLOAD_VALUES_DOC in page and PAYLOAD_VALUES_DOC in docs_page()  # regenerating the page keeps it


async def test_metadata_that_is_not_a_dict_is_wrapped_like_data():
    bus = EventBus()
    got: list[Event] = []
    await bus.subscribe("x", got.append)
    await bus.emit("x", [1], metadata=[("a", 1)])  # type: ignore[arg-type]
    await bus.flush()
    assert got[0].data == {"value": [1]} and got[0].metadata == {"value": [("a", 1)]}


@given(st.one_of(texts, st.text(min_size=1), st.integers(), st.none(), st.binary(max_size=3)), texts,
       st.one_of(st.none(), texts))
def test_any_name_source_and_correlation_id_are_refused_with_value_error_or_logged_as_given(name, source, corr):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        bus = EventBus(enable_persistence=True, persistence_path=path)
        try:
            bus.emit_sync(name, {"n": 1}, source=source, correlation_id=corr)
        except ValueError:
            assert not (isinstance(name, str) and name)
            return
        finally:
            bus.close()
        (event,) = list(read_events(path))
        assert (event.name, event.source, event.correlation_id) == tuple(
            None if text is None else json_of(text) for text in (name, source, corr))
