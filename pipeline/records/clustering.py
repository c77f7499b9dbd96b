"""Silver parts clustered by end user, vault parts sorted by token: what a person search reads
of a part lies side by side.

A person search (`pipeline.records.search`) reads, of each silver part, the row groups its token
index names. Written in file order, a person's few records of a part fall in as many row groups
as records, and every one is read whole for one row. Clustered, they share one row group: a
search reads a row group per person and part instead of one per record.

Rows are ordered by a hash of their first end-user party (`cluster_key`: the origin where it is
an end user, else the destination), stably, so one person's records keep their file order. The
order is only a layout: every record keeps its `leaf_index`, which is what the proofs use.

Memory stays bounded by `BUFFER_ROWS` however big the file: the parts of a file are held in
memory together up to that many rows; beyond it the biggest part is spilled to a local spill
file. Each row is hashed once, when it arrives. A spill is not sorted: its rows are grouped by
the first bits of their hash (a stable partition, so each range keeps file order), and each
group is one record batch of an Arrow IPC file; a range (a spool) is the list of its batches in
the spill files. Each range is sorted once, when its part is written. A spool bigger than
`SORT_ROWS` is split again by the next bits of the hash first. A range holding more rows than
that alone (one party in very many records) is sorted `SORT_ROWS` rows at a time; a spool of one
key alone is not split or sorted at all, since its rows were spooled in file order.

Spills are not compressed: lz4 cost about 5 CPU-seconds per million rows, and a spill lives only
until its part is written. The price is local scratch space: about 400 bytes a row of silver
while the file is being ingested. Columns that hold one value on every row of a file (its
source, name and digest: `constant`) are not spooled or sorted at all: each part keeps the value
once and writes it back into every row group, after checking every batch really holds it alone.

Vault parts go the same way in token order (`BY_TOKEN`), written with min/max statistics on
`token`: re-identifying a found record reads the vault row groups whose range holds its parties'
tokens, not the whole vault of its month.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.prefetch import prefetch
from pipeline.core.store import private_file
from pipeline.records.normalise import PERSONAL_KINDS

#: Rows of all of a file's parts held in memory before the biggest is spilled to disk.
BUFFER_ROWS = 65_536
#: Rows sorted in memory at once: a spool bigger than this is split by the next bits first.
#: Each range is copied several times on its way to Parquet (read, sorted, re-batched, queued
#: for the writer), so this, not the file, sets the memory of writing a part.
SORT_ROWS = 32_768
#: Spools per split (the hash's next 7 bits), and how deep splits go: a part of up to 128 times
#: SORT_ROWS rows (4 M) is sorted after one split.
_BITS, _LEVELS = 7, 3
_HASH = "__cluster"
#: bytes gathered before a local spill or part file is written to (one system call)
WRITE_BUFFER = 1 << 20
_SEED = 0x5EED


def cluster_key() -> pl.Expr:
    """The party a record is clustered by: the origin where it is an end user, else the
    destination."""
    personal = pl.col("origin_kind").is_in(PERSONAL_KINDS).fill_null(False)
    return pl.when(personal).then(pl.col("origin")).otherwise(pl.col("destination"))


def _party_hash(table: pa.Table) -> pa.Array:
    keys = pl.from_arrow(table.select(["origin", "origin_kind", "destination"]))
    assert isinstance(keys, pl.DataFrame)
    return keys.select(cluster_key().hash(seed=_SEED)).to_series().to_arrow()


#: base64url in the order strings compare, so that a token's digits keep its order
_ALPHABET = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_RANK = np.zeros(256, np.uint64)
_RANK[[ord(c) for c in _ALPHABET]] = np.arange(64, dtype=np.uint64)
_DIGITS = 10  # 60 bits of a token's 22 random characters (`tokenise.TOKEN_PATTERN`)
#: a token's kind by its first letter, in the order strings compare (email < msisdn < sip)
_KIND = np.full(256, 3, np.uint64)
_KIND[[ord("e"), ord("m"), ord("s")]] = [0, 1, 2]


def _token_rank(table: pa.Table) -> pa.Array:
    """Each token's kind (2 bits), then the first digits of its random part, as a number in
    the order the tokens compare as text (tokens are uniform in their digits, so the spools'
    ranges are even). A value not shaped like a token is still written, only not in range
    order. Tokens of one kind but two key versions interleave (`then` orders each range by the
    whole token)."""
    tokens = pc.fill_null(table.column("token").combine_chunks(), "").cast(pa.string())
    tail = pc.utf8_rpad(pc.utf8_slice_codeunits(tokens, -22, -22 + _DIGITS), _DIGITS, "-")
    digits = _fixed_width(tail, _DIGITS)
    first = _fixed_width(pc.utf8_rpad(pc.utf8_slice_codeunits(tokens, 0, 1), 1, "-"), 1)
    if digits is None or first is None:
        return pa.array(np.zeros(len(tokens), np.uint64))
    shifts = np.arange(64 - 8, 64 - 8 - 6 * _DIGITS, -6, dtype=np.uint64)
    ranks = np.bitwise_or.reduce(_RANK[digits] << shifts, axis=1)
    return pa.array((_KIND[first[:, 0]] << np.uint64(62)) | ranks)


def _fixed_width(strings: pa.Array, width: int) -> np.ndarray | None:
    """The bytes of strings that are all `width` bytes long, one row each; None otherwise."""
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ]
    if len(strings) == 0 or not np.all(np.diff(offsets) == width):
        return None
    data = np.frombuffer(strings.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(-1, width)


@dataclass(frozen=True)
class Order:
    """A layout: rows ordered by `key` (a uint64 per row, spooled by its top bits), then by the
    columns `then`; stable, so rows equal in both keep their file order."""

    key: Callable[[pa.Table], pa.Array]
    then: tuple[str, ...] = ()

    def sort(self, table: pa.Table) -> pa.Table:
        return table.sort_by([(_HASH, "ascending"), *((c, "ascending") for c in self.then)])


#: silver: a party's records side by side, in file order
BY_PARTY = Order(_party_hash)
#: the vault: in token order
BY_TOKEN = Order(_token_rank, ("token",))


def _spool_of(table: pa.Table, level: int) -> np.ndarray:
    """Which spool of a split at `level` each row goes to: the hash's bits after the first."""
    keys = table.column(_HASH).to_numpy()
    shift, mask = np.uint64(64 - _BITS * (level + 1)), np.uint64((1 << _BITS) - 1)
    return ((keys >> shift) & mask).astype(np.uint8)


@dataclass(frozen=True)
class _Batches:
    """Record batches of one spill file: one range's rows, in file order."""

    path: Path
    indices: tuple[int, ...]


def _sized(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """`tables` gathered into tables of at least `rows` rows (the last one may be smaller)."""
    pending: list[pa.Table] = []
    for table in tables:
        pending.append(table)
        if sum(t.num_rows for t in pending) >= rows:
            yield pa.concat_tables(pending)
            pending = []
    if pending:
        yield pa.concat_tables(pending)


def _read_batches(spooled: list[_Batches]) -> Iterator[pa.Table]:
    """A spool's rows, in the order they were spilled: each spill file opened, its batches of
    the range read (the file's footer says where they lie), and closed again."""
    for where in spooled:
        with pa.OSFile(str(where.path), "rb") as source:
            reader = pa.ipc.open_file(source)
            yield pa.Table.from_batches([reader.get_batch(i) for i in where.indices])


class _Part:
    """One part: rows buffered in memory, and spill files once spilled."""

    def __init__(self, folder: Path, order: Order) -> None:
        self.folder, self.order = folder, order
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.spilled = False
        self._files = itertools.count()
        #: rows in each spool, by its hash prefix, and where they lie
        self.spools: dict[tuple[int, ...], int] = {}
        self.batches: dict[tuple[int, ...], list[_Batches]] = {}
        #: the lowest and highest key in each spool: one key alone needs no sorting
        self.keys: dict[tuple[int, ...], tuple[int, int]] = {}
        #: spools not read yet, by spill file: a file is removed once all of its are read
        self.readers: dict[Path, int] = {}
        self.constants = _Constants()

    def spill(self) -> None:
        """Move the buffered rows to a spill file, by the first bits of their hash."""
        if not self.buffer:
            return
        table = pa.concat_tables(self.buffer)
        self.buffer, self.buffered, self.spilled = [], 0, True
        self.split(table, ())

    def split(self, table: pa.Table, prefix: tuple[int, ...]) -> None:
        """Append `table`'s rows to the spools under `prefix`, by the hash's next bits: grouped
        by a stable partition (no sort), each group one record batch of a new spill file."""
        which = _spool_of(table, len(prefix))
        order = np.argsort(which, kind="stable")  # a radix sort: one byte a key
        bounds = np.searchsorted(which[order], np.arange((1 << _BITS) + 1))
        grouped = table.take(order)
        keys = grouped.column(_HASH).to_numpy()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.folder / f"spill-{next(self._files)}.arrow"
        private_file(path)
        options = pa.ipc.IpcWriteOptions(compression=None)  # see the module's docstring
        written = 0
        # Buffered: the writer writes each column's buffers apart, a system call each.
        with (
            pa.OSFile(str(path), "wb") as raw,
            pa.BufferedOutputStream(raw, WRITE_BUFFER) as sink,
            pa.ipc.new_file(sink, table.schema, options=options) as out,
        ):
            for index in range(1 << _BITS):
                lo, hi = int(bounds[index]), int(bounds[index + 1])
                if hi == lo:
                    continue
                batches = grouped.slice(lo, hi - lo).to_batches()
                for batch in batches:
                    out.write_batch(batch)
                spool = (*prefix, index)
                indices = tuple(range(written, written + len(batches)))
                written += len(batches)
                self.batches.setdefault(spool, []).append(_Batches(path, indices))
                self.readers[path] = self.readers.get(path, 0) + 1
                self.spools[spool] = self.spools.get(spool, 0) + hi - lo
                low, high = keys[lo:hi].min(), keys[lo:hi].max()
                was = self.keys.get(spool, (low, high))
                self.keys[spool] = (min(was[0], low), max(was[1], high))

    def read(self, prefix: tuple[int, ...]) -> Iterator[pa.Table]:
        """The rows of the spool `prefix`, in the order they were spilled; a spill file is
        removed once the last of its spools is read, so scratch space shrinks as a part is
        written."""
        spooled = self.batches.pop(prefix)
        yield from _read_batches(spooled)
        for where in spooled:
            self.readers[where.path] -= 1
            if not self.readers[where.path]:
                del self.readers[where.path]
                where.path.unlink()


class Clusterer:
    """The parts of one file's tier, gathered as its batches arrive and written out in `order`
    (`write`), with at most `budget` rows of them in memory. The columns named in `constant`
    must hold one value on every row of a part: they are kept once, not spooled."""

    def __init__(
        self,
        folder: Path,
        order: Order = BY_PARTY,
        budget: int | None = None,
        constant: tuple[str, ...] = (),
    ) -> None:
        self.folder, self.order = folder, order
        self.budget = budget or BUFFER_ROWS
        self.constant = constant
        self._parts: dict[str, _Part] = {}
        self._folders = itertools.count()  # a written part's folder name is never reused

    def add(self, key: str, table: pa.Table) -> None:
        """Gather rows of the part `key`; spill the biggest buffered part when over budget."""
        if key not in self._parts:
            folder = self.folder / f"cluster-{next(self._folders)}"  # made on its first spill
            self._parts[key] = _Part(folder, self.order)
        part = self._parts[key]
        table = part.constants.take_from(table, self.constant)
        part.buffer.append(table.append_column(_HASH, self.order.key(table)))
        part.buffered += table.num_rows
        while sum(p.buffered for p in self._parts.values()) > self.budget:
            max(self._parts.values(), key=lambda p: p.buffered).spill()

    def pending(self) -> list[str]:
        """The parts not written yet."""
        return list(self._parts)

    def write(
        self,
        key: str,
        writer: pq.ParquetWriter,
        row_group: int,
        on_group: Callable[[pa.Table], None] | None = None,
    ) -> None:
        """Every row of the part `key`, in order, in row groups of `row_group` rows; each row
        group is also given to `on_group` as it is written. The next range is read and sorted
        in the background while this one is encoded."""
        part = self._parts.pop(key)
        out = _Rebatcher(writer, row_group, part.constants, on_group)
        for table in prefetch(self._ordered(part)):
            out.write(table)
        out.close()

    def _ordered(self, part: _Part) -> Iterator[pa.Table]:
        """The part's rows in order, a sorted range at a time."""
        if not part.spilled:
            if part.buffer:
                yield self.order.sort(pa.concat_tables(part.buffer))
            return
        part.spill()
        for index in range(1 << _BITS):
            yield from self._drain(part, (index,))

    def _drain(self, part: _Part, prefix: tuple[int, ...]) -> Iterator[pa.Table]:
        """A spool's rows, sorted: split again by the next bits while it is too big to sort."""
        rows = part.spools.pop(prefix, 0)
        if not rows:
            return
        low, high = part.keys.pop(prefix)
        # One key alone (a party in very many records): its rows are already in file order.
        one_key = low == high and not part.order.then
        if len(prefix) < _LEVELS and rows > SORT_ROWS and not one_key:
            for chunk in _sized(part.read(prefix), SORT_ROWS):
                part.split(chunk, prefix)
            for index in range(1 << _BITS):
                yield from self._drain(part, (*prefix, index))
            return
        for chunk in _sized(part.read(prefix), SORT_ROWS):  # one range: SORT_ROWS at a time
            yield chunk if one_key else part.order.sort(chunk)


class _Constants:
    """The columns of a part that hold one value on every row: where each sits in the part's
    schema and its value, taken from the first batch and checked on every later one."""

    def __init__(self) -> None:
        self.columns: dict[str, tuple[int, pa.Field, pa.Array]] = {}  # name → index, field, value
        self._filled: dict[str, pa.Array] = {}  # the value repeated, sliced for each write

    def take_from(self, table: pa.Table, names: tuple[str, ...]) -> pa.Table:
        """`table` without the constant columns, once checked that each holds its one value."""
        present = [n for n in names if n in table.column_names]
        for name in present:
            column = table.column(name)
            if not len(column):  # nothing to take its value from, nothing to check
                continue
            if name not in self.columns:
                index = table.schema.get_field_index(name)
                field = table.schema.field(name)
                value = pa.array([column[0].as_py()], field.type)  # a copy: no batch kept
                self.columns[name] = (index, field, value)
            value = self.columns[name][2]
            if not _holds_only(column, value):
                raise ValueError(f"column {name} does not hold one value in every row of a part")
        return table.drop_columns(present) if present else table

    def put_back(self, table: pa.Table) -> pa.Table:
        """`table` with the constant columns in their places again."""
        for name, (index, field, value) in sorted(self.columns.items(), key=lambda c: c[1][0]):
            filled = self._filled.get(name)
            if filled is None or len(filled) < table.num_rows:
                filled = self._filled[name] = value.take(np.zeros(table.num_rows, np.int32))
            table = table.add_column(index, field, filled.slice(0, table.num_rows))
        return table


def _holds_only(column: pa.ChunkedArray, value: pa.Array) -> bool:
    """Whether every row of `column` is `value` (null on every row where `value` is null)."""
    if value.null_count:
        return column.null_count == len(column)
    return column.null_count == 0 and pc.all(pc.equal(column, value[0])).as_py() is not False


class _Rebatcher:
    """Writes sorted tables as full row groups, carrying the rest over to the next table."""

    def __init__(
        self,
        writer: pq.ParquetWriter,
        row_group: int,
        constants: _Constants,
        on_group: Callable[[pa.Table], None] | None,
    ) -> None:
        self.writer, self.row_group = writer, row_group
        self.constants, self.on_group = constants, on_group
        self.carry: pa.Table | None = None

    def write(self, table: pa.Table) -> None:
        table = table.drop_columns([_HASH])
        if self.carry is not None:
            table = pa.concat_tables([self.carry, table])
        full = table.num_rows - table.num_rows % self.row_group
        if full:
            self._write(table.slice(0, full))
        self.carry = table.slice(full) if full < table.num_rows else None

    def _write(self, table: pa.Table) -> None:
        """Write `table` as row groups of `row_group` rows (the last one may be shorter)."""
        table = self.constants.put_back(table)
        if self.on_group is not None:
            for start in range(0, table.num_rows, self.row_group):
                self.on_group(table.slice(start, self.row_group))
        self.writer.write_table(table, row_group_size=self.row_group)

    def close(self) -> None:
        if self.carry is not None:
            self._write(self.carry)
            self.carry = None
