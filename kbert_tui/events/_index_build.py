"""Turning log bytes into index columns: one plain reference, and an Arrow fast path held to it.

A block of whole lines (bytes ending in a newline) becomes one row per non-blank line: where the line
starts and how long it is, the event's name id, its time (µs since the epoch), `data.step`,
`data.epoch` and a hash of its correlation id. A line the readers would skip (not JSON, not an event)
is still a row, with name id 0, so row counts and "unreadable" counts agree with `read_events`.

`index_reference` decides what every line means by the readers' own decoder (`decode_lines`), one line
at a time: it is the definition. `index_block` parses the whole block with Arrow's JSON reader (C++,
several threads, the GIL released) when the block is plain — every line an object with a string name,
a timestamp with a zone, an object `data` and integer steps — and falls back to the reference for any
block that is not, so both give the same columns for any input (tests/test_props_index.py).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ._codec import decode_lines

__all__ = ["COLUMNS", "Columns", "NO_VALUE", "NameTable", "correlation_hash", "index_block", "index_reference"]

NO_VALUE = np.iinfo(np.int64).min  # time/step not given (or not an integer that fits)
NO_EPOCH = np.iinfo(np.int32).min
# column name → dtype, in the on-disk order (each column is its own little-endian file)
COLUMNS: dict[str, np.dtype[Any]] = {
    "offset": np.dtype("<u8"),  # where the line starts in its file
    "length": np.dtype("<u4"),  # its bytes, the newline included
    "name": np.dtype("<u4"),  # 1 + the name's position in the names table; 0 for a line readers skip
    "time": np.dtype("<i8"),  # µs since 1970-01-01 UTC
    "step": np.dtype("<i8"),  # data.step when an integer, else NO_VALUE
    "epoch": np.dtype("<i4"),  # data.epoch when an integer that fits, else NO_EPOCH
    "corr": np.dtype("<u8"),  # correlation_hash(correlation id); 0 for none
}
_EPOCH0 = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_I64 = (int(np.iinfo(np.int64).min) + 1, int(np.iinfo(np.int64).max))
_I32 = (int(np.iinfo(np.int32).min) + 1, int(np.iinfo(np.int32).max))


def correlation_hash(correlation_id: str | None) -> int:
    """The index's 64-bit key for a correlation id (0 means none; a hash of 0 becomes 1)."""
    if correlation_id is None:
        return 0
    digest = hashlib.blake2b(correlation_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class NameTable:
    """Event names ↔ the small ids the index stores (1-based: 0 is "not an event")."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.names: list[str] = list(names or [])
        self._ids = {name: i + 1 for i, name in enumerate(self.names)}

    def id(self, name: str) -> int:
        found = self._ids.get(name)
        if found is None:
            self.names.append(name)
            found = self._ids[name] = len(self.names)
        return found

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class Columns:
    """Index rows for a block: one numpy array per column of COLUMNS, all the same length."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["offset"])

    @classmethod
    def empty(cls) -> Columns:
        return cls({key: np.empty(0, dtype) for key, dtype in COLUMNS.items()})

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls({key: np.concatenate([p.arrays[key] for p in parts]) for key in COLUMNS})


_WHITESPACE = np.array([9, 10, 11, 12, 13, 32], np.uint8)


def _line_spans(block: bytes, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and lengths (newline included) of the non-blank lines of `block` (a last line
    without a newline counts: the end of a file its writer never finished)."""
    raw = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(raw == 10) + 1
    if len(block) and block[-1:] != b"\n":
        ends = np.append(ends, len(block))
    starts = np.concatenate(([0], ends[:-1])).astype(np.int64) if len(ends) else ends.astype(np.int64)
    lengths = ends - starts
    maybe_blank = np.flatnonzero(np.isin(raw[starts], _WHITESPACE)) if len(starts) else starts
    if len(maybe_blank):  # a line that starts with whitespace may be nothing else: readers skip those
        keep = np.ones(len(starts), bool)
        for row in maybe_blank.tolist():
            keep[row] = bool(block[starts[row]:ends[row]].strip())
        starts, lengths = starts[keep], lengths[keep]
    return starts.astype(np.uint64) + np.uint64(base), lengths.astype(np.uint32)


def index_reference(block: bytes, base: int, names: NameTable) -> Columns:
    """The definition: each non-blank line of `block` (whole lines) decoded by the readers' decoder."""
    offsets, lengths = _line_spans(block, base)
    count = len(offsets)
    name = np.zeros(count, np.uint32)
    when = np.full(count, NO_VALUE, np.int64)
    step = np.full(count, NO_VALUE, np.int64)
    epoch = np.full(count, NO_EPOCH, np.int32)
    corr = np.zeros(count, np.uint64)
    for row, (start, length) in enumerate(zip((offsets - np.uint64(base)).tolist(), lengths.tolist(), strict=False)):
        events, _ = decode_lines([block[start:start + length].strip()])
        if not events:
            continue
        event = events[0]
        name[row] = names.id(event.name)
        when[row] = (event.timestamp - _EPOCH0) // _US
        step[row] = _integer(event.data.get("step"), _I64, NO_VALUE)
        epoch[row] = _integer(event.data.get("epoch"), _I32, NO_EPOCH)
        corr[row] = correlation_hash(event.correlation_id)
    return Columns({"offset": offsets, "length": lengths, "name": name, "time": when, "step": step,
                    "epoch": epoch, "corr": corr})


def _integer(value: Any, bounds: tuple[int, int], missing: int) -> int:
    if type(value) is int and bounds[0] <= value <= bounds[1]:
        return value
    return missing


# -- the Arrow fast path ---------------------------------------------------------------------------

_arrow: Any = None


def _arrow_modules() -> Any:
    global _arrow
    if _arrow is None:
        try:
            import pyarrow as pa  # type: ignore[import-untyped]
            import pyarrow.compute as pc  # type: ignore[import-untyped]
            import pyarrow.json as pj  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover - pyarrow is a dependency; the reference still works
            _arrow = False
        else:
            schema = pa.schema([("name", pa.string()), ("timestamp", pa.string()), ("correlation_id", pa.string()),
                                ("data", pa.struct([("step", pa.int64()), ("epoch", pa.int64())]))])
            options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
            _arrow = (pa, pc, pj, options)
    return _arrow


# Where Arrow and the readers' decoder may read a line differently, the block goes to the reference:
# escapes of surrogates (orjson refuses a lone one), a byte order mark, a carriage return (a blank-looking
# line), non-UTF-8 bytes (checked by decoding below).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _risky(block: bytes) -> bool:
    # one-byte probes first (memchr): the longer needles are searched for only where their first byte is
    return b"\r" in block or (b"\xef" in block and b"\xef\xbb\xbf" in block) \
        or (b"\\" in block and _SURROGATE.search(block) is not None)


def index_block(block: bytes, base: int, names: NameTable, lengths: list[int] | None = None) -> Columns:
    """`index_reference(block, base, names)`, faster: Arrow reads a plain block in C++. `lengths`: the
    lengths of the block's lines when the caller knows them (a writer's own lines: none blank, each
    ending in its newline), which spares a scan for newlines."""
    arrow = _arrow_modules()
    if not arrow or not block or _risky(block):
        return index_reference(block, base, names)
    pa, pc, pj, options = arrow
    try:
        table = pj.read_json(io.BytesIO(block), parse_options=options,
                             read_options=pj.ReadOptions(use_threads=lengths is None,  # a writer's: one core
                                                         block_size=max(1 << 20, len(block) // 2 + 1)))
    except (pa.ArrowInvalid, UnicodeDecodeError, ValueError):
        return index_reference(block, base, names)
    if lengths is not None:
        sizes = np.array(lengths, np.uint32)
        offsets = np.cumsum(sizes, dtype=np.uint64) - sizes + np.uint64(base)
        if table.num_rows != len(sizes):
            return index_reference(block, base, names)
    else:
        offsets, sizes = _line_spans(block, base)
        lines = np.count_nonzero(np.frombuffer(block, np.uint8) == 10) + (block[-1:] != b"\n")
        if table.num_rows != len(offsets) or len(offsets) != lines:  # a blank line: Arrow's rows would not line up
            return index_reference(block, base, names)
    name_col = table.column("name")
    data = table.column("data")
    stamps = table.column("timestamp")
    if (name_col.null_count or stamps.null_count or data.null_count
            or pc.any(pc.equal(pc.utf8_length(name_col), 0)).as_py()):
        return index_reference(block, base, names)  # a line readers skip, or `data` missing or null
    if not _stamps_agree(stamps):
        return index_reference(block, base, names)
    try:
        times = pc.cast(stamps, pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return index_reference(block, base, names)  # a date that does not exist (2026-02-30)
    encoded = name_col.combine_chunks().dictionary_encode()
    ids = np.array([names.id(text) for text in encoded.dictionary.to_pylist()], np.uint32)
    name = ids[encoded.indices.to_numpy(zero_copy_only=False)] if len(ids) else np.zeros(0, np.uint32)
    corr_col = table.column("correlation_id").combine_chunks().dictionary_encode()
    hashes = np.array([correlation_hash(text) for text in corr_col.dictionary.to_pylist()] + [0], np.uint64)
    corr_idx = corr_col.indices.fill_null(len(hashes) - 1).to_numpy(zero_copy_only=False)
    data = data.combine_chunks()
    step = data.field("step").fill_null(NO_VALUE).to_numpy(zero_copy_only=False).astype(np.int64)
    raw_epoch = data.field("epoch").fill_null(NO_EPOCH).to_numpy(zero_copy_only=False).astype(np.int64)
    epoch = np.where((raw_epoch >= _I32[0]) & (raw_epoch <= _I32[1]), raw_epoch, NO_EPOCH).astype(np.int32)
    when = times.combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
    return Columns({"offset": offsets, "length": sizes, "name": name, "time": when.astype(np.int64),
                    "step": step, "epoch": epoch, "corr": hashes[corr_idx]})


def _stamps_agree(stamps: Any) -> bool:
    """Every timestamp in the one spelling both parsers read alike: `YYYY-MM-DDThh:mm:ss[.f{1,6}]` and a zone
    (Arrow parses ISO 8601 more widely than `datetime.fromisoformat`; anything else goes to the reference)."""
    _, pc, _, _ = _arrow_modules()
    return bool(pc.all(pc.match_substring_regex(stamps, _STRICT_STAMP)).as_py())


_STRICT_STAMP = r"^\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
