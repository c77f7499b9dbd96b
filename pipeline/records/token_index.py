"""The token index of a silver part: which of its row groups hold each token.

A person search asks "every record where one of these tokens is a party". Min/max statistics
on tokens prune nothing (tokens are keyed hashes, spread over every row group), so each silver
part has a small companion object beside its month (`layout.token_index_key`): every distinct
`origin`/`destination` value of the part with the number of each row group it occurs in,
sorted by token, in row groups of its own with min/max statistics on `token`. A lookup reads
the footer and only the index row groups whose token range covers a wanted token, then reads
only those silver row groups; the others are never fetched or decompressed.

Silver is written in row groups of `ROW_GROUP` rows so that a found record costs reading a
few thousand rows, not a whole batch. The index holds tokens: it is silver-tier data, purged
with its month and checked by `verify` against the part it describes (`disagreement`).
"""

from __future__ import annotations

import bisect
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core import layout
from pipeline.core.store import ObjectStore

#: Silver rows per row group: the unit a search reads once the index has pruned.
ROW_GROUP = 4096
#: Index entries per index row group: the unit a lookup reads.
INDEX_GROUP = 2048
SCHEMA = pa.schema([("token", pa.string()), ("row_group", pa.int32())])
#: The silver part's shape, recorded in the index so a stale index is never trusted.
_GROUPS, _ROWS = b"silver_row_groups", b"silver_rows"


#: Index entries taken into sorted order at a time while the index is written.
_WRITE_SLICE = 32 * INDEX_GROUP
_ORDER = [("token", "ascending"), ("row_group", "ascending")]


def _group_entries(sides: pa.Table, group: int) -> pa.Table:
    """The distinct tokens of one silver row group (its `origin` and `destination`), in the
    index's schema."""
    values = pa.chunked_array(sides["origin"].chunks + sides["destination"].chunks)
    tokens = pc.unique(values.drop_null()).cast(pa.string())
    return pa.table({"token": tokens, "row_group": pa.array([group] * len(tokens), pa.int32())})


def _with_shape(entries: list[pa.Table], groups: int, rows: int) -> pa.Table:
    table = pa.concat_tables(entries) if entries else SCHEMA.empty_table()
    return table.cast(SCHEMA).replace_schema_metadata(
        {_GROUPS: str(groups).encode(), _ROWS: str(rows).encode()}
    )


def _entries(part: pq.ParquetFile) -> pa.Table:
    """Every distinct (token, row group) of a silver part, in row-group order."""
    pieces = [
        _group_entries(part.read_row_group(group, columns=["origin", "destination"]), group)
        for group in range(part.num_row_groups)
    ]
    return _with_shape(pieces, part.metadata.num_row_groups, part.metadata.num_rows)


def build(part: pq.ParquetFile) -> pa.Table:
    """Every distinct (token, row group) of a silver part, sorted by token."""
    entries = _entries(part)
    return entries.take(_order(entries))


def _order(entries: pa.Table) -> pa.Array:
    """The positions of `entries` in token order (found by polars: a third of Arrow's time)."""
    keys = pl.from_arrow(entries.select([name for name, _ in _ORDER]))
    assert isinstance(keys, pl.DataFrame)
    return keys.select(pl.arg_sort_by([name for name, _ in _ORDER])).to_series().to_arrow()


class Builder:
    """The index of a silver part gathered while the part is written, row group by row group
    (`add`), so the part is not read back to be indexed. Parts written side by side gather
    their indexes side by side, but put them in order one at a time (`_ORDERING`): that step
    briefly holds a part's index twice over."""

    _ORDERING = threading.Lock()

    def __init__(self) -> None:
        self._pieces: list[pa.Table] = []
        self._rows = 0

    def add(self, group: pa.Table) -> None:
        """The next row group written to the part."""
        self._pieces.append(_group_entries(group, len(self._pieces)))
        self._rows += group.num_rows

    def write(self, target: Path) -> None:
        entries = _with_shape(self._pieces, len(self._pieces), self._rows)
        self._pieces = []
        with self._ORDERING:
            _write_entries(entries, target)


def write(silver: Path, target: Path) -> None:
    """Write the index of the local silver part `silver` to `target`."""
    _write_entries(_entries(pq.ParquetFile(silver)), target)


def _write_entries(entries: pa.Table, target: Path) -> None:
    """The entries in token order, put in order a slice at a time, so a part's index is held
    once in memory, not twice."""
    order = _order(entries)
    with pq.ParquetWriter(
        target,
        entries.schema,
        compression="zstd",
        compression_level=1,
        write_statistics=["token"],
        use_dictionary=["row_group"],
    ) as out:
        for start in range(0, len(order), _WRITE_SLICE):
            out.write_table(
                entries.take(order.slice(start, _WRITE_SLICE)), row_group_size=INDEX_GROUP
            )


def staged_path(part: Path) -> Path:
    """Where the index of the local silver part `part` is staged."""
    return part.with_name(f"{part.stem}.tokens.parquet")


def indexed_row_groups(
    store: ObjectStore, silver_key: str, part: pq.ParquetFile, tokens: pa.Array
) -> list[int] | None:
    """The row groups of `part` that hold any of `tokens`, from its index; None where it has
    no index that describes it (a store written without the index): every row group can."""
    key = layout.token_index_key(silver_key)
    if not store.exists(key):
        return None
    with store.open_seekable(key) as src:
        index = pq.ParquetFile(src)
        shape = (part.metadata.num_row_groups, part.metadata.num_rows)
        if _shape(index.schema_arrow) != tuple(str(n).encode() for n in shape):
            return None  # written for another version of the part: scan it
        wanted = sorted(tokens.to_pylist())
        found: set[int] = set()
        for group in covering(index, "token", wanted):
            entries = index.read_row_group(group, use_threads=False)
            hit = pc.is_in(entries["token"], value_set=tokens)
            found.update(entries["row_group"].filter(hit).to_pylist())
    return sorted(found)


def _shape(schema: pa.Schema) -> tuple[bytes | None, bytes | None]:
    meta = schema.metadata or {}
    return meta.get(_GROUPS), meta.get(_ROWS)


def covering(file: pq.ParquetFile, column: str, wanted: list[str]) -> Iterator[int]:
    """Row groups of `file` whose min/max of `column` hold one of `wanted` (sorted); every row
    group without statistics."""
    position = file.schema_arrow.get_field_index(column)
    meta = file.metadata
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(position).statistics
        if stats is None or not stats.has_min_max:
            yield group
            continue
        first = bisect.bisect_left(wanted, stats.min)
        if first < len(wanted) and wanted[first] <= stats.max:
            yield group


def disagreement(store: ObjectStore, silver_key: str) -> str | None:
    """How the stored index of a silver part differs from the part (None: it agrees, or there
    is none)."""
    key = layout.token_index_key(silver_key)
    if not store.exists(key):
        return None
    # Whole objects, each fetched (and retried) at once: both are read through anyway.
    expected = build(pq.ParquetFile(io.BytesIO(store.get_bytes(silver_key))))
    stored = pq.read_table(io.BytesIO(store.get_bytes(key)))
    if _shape(stored.schema) != _shape(expected.schema):
        return f"{key} describes another shape of the part (row groups or rows)"
    exp, got = _frame(expected), _frame(stored)
    missing = len(exp.join(got, on=["token", "row_group"], how="anti"))
    extra = len(got.join(exp, on=["token", "row_group"], how="anti"))
    if missing or extra or len(got) != len(exp):
        return f"{key} disagrees with the part: {missing:,} entries missing, {extra:,} not in it"
    return None


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table.select(["token", "row_group"]).cast(SCHEMA))
    assert isinstance(frame, pl.DataFrame)
    return frame
