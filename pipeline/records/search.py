"""Finding named end users' records: the search the law-enforcement export and data subject
requests share.

Month by month over a period:
- a live month: only that month's silver partitions are read, and of each part only the row
  groups its token index names for the wanted tokens (every row group of a part written
  without one); of those first the token and time columns, then full rows only where a wanted
  token occurs (origin or destination). Both parties of a found record are re-identified through the month's vault;
  a party whose identifiers were erased on request (a suppressed token) is never re-identified;
- a month whose identifiers were purged: reported with its purge date and the number of gold
  records in the period that can no longer be attributed; copies kept under a legal hold are
  searched in the hold store.
Then each record's identity commitment is recomputed from its re-identified parties, and each
record's Merkle path to its file's sealed root is read from the proofs.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core import layout
from pipeline.core.errors import PipelineError
from pipeline.core.resources import Resources
from pipeline.core.store import ObjectStore
from pipeline.flows.holds import list_holds, read_held_part
from pipeline.proof.commitments import gold_form, identity_commitment, inclusion_paths
from pipeline.proof.crypto import decrypt_value
from pipeline.proof.integrity import read_entry
from pipeline.records import token_index
from pipeline.records.normalise import PERSONAL_KINDS
from pipeline.records.schema import GOLD

_SCAN = ["origin", "destination", "event_time", "channel"]
#: Parts and files read at once: the object store's latency overlaps, and both cores decode.
READERS = 3

T = TypeVar("T")
R = TypeVar("R")


def in_parallel(work: Callable[[T], R], items: list[T]) -> list[R]:
    """`work` on every item, `READERS` at a time, results in the items' order; the first error
    is raised."""
    if len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(READERS, thread_name_prefix="search") as pool:
        return list(pool.map(work, items))


class SearchError(PipelineError, RuntimeError):
    """A search that cannot be completed truthfully (named, never with identifier values)."""


#: Row groups of a part filtered together (fewer calls; memory bounded by this many)
_FILTER_GROUPS = 16


def _chunks(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    """`tables` concatenated `size` at a time."""
    while batch := list(itertools.islice(tables, size)):
        yield pa.concat_tables(batch)


def _strings(values: list[str]) -> pa.Array:
    """Python strings as an Arrow array, built by polars: pyarrow's own conversion of Python
    objects imports pandas (a quarter of a second) on first use."""
    return pl.Series(values, dtype=pl.String).to_arrow().cast(pa.string())


def _instants(*moments: dt.datetime) -> list[pa.Scalar]:
    """UTC datetimes as Arrow microsecond timestamps (built by polars, as `_strings`)."""
    series = pl.Series(moments, dtype=pl.Datetime("us", "UTC")).to_arrow()
    return [series[i] for i in range(len(moments))]


def months_between(start: dt.date, end: dt.date) -> Iterator[tuple[int, int]]:
    y, m = start.year, start.month
    while (y, m) <= (end.year, end.month):
        yield y, m
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


class RecordSearch:
    """Finds a period's records of the wanted tokens, month by month.

    `suppressed` tokens (erased on request) are never re-identified from the live vault;
    records with a party among the `excluded` tokens (restricted) are left out and counted.
    """

    def __init__(
        self,
        res: Resources,
        wanted: set[str],
        start: dt.datetime,
        end: dt.datetime,
        channels: list[str],
        suppressed: frozenset[str] = frozenset(),
        excluded: frozenset[str] = frozenset(),
    ) -> None:
        self.res, self.store = res, res.store
        self.tokens = _strings(sorted(wanted))
        self.start, self.end, self.channels = start, end, channels
        self.suppressed, self.excluded = suppressed, excluded

    def _exclude(self, found: pl.DataFrame, info: dict[str, Any]) -> pl.DataFrame:
        """Leave out records of restricted persons, saying how many."""
        if not self.excluded or not len(found):
            return found
        restricted = list(self.excluded)
        hit = pl.col("origin").is_in(restricted) | pl.col("destination").is_in(restricted)
        left_out = int(found.select(hit.fill_null(False).sum()).item())
        if left_out:
            info["restricted_excluded"] = left_out
            info["records"] -= left_out
        return found.filter(~hit.fill_null(False))

    def _in_period(self, frame: pl.DataFrame) -> pl.DataFrame:
        keep = (pl.col("event_time") >= self.start) & (pl.col("event_time") < self.end)
        if self.channels:
            keep &= pl.col("channel").is_in(self.channels)
        return frame.filter(keep)

    def months(
        self,
        months: list[tuple[int, int]],
        on_found: Callable[[pl.DataFrame], None] | None = None,
    ) -> list[tuple[pl.DataFrame, dict[str, Any]]]:
        """`month` of each month, in the months' order: every live month's silver parts are
        read `READERS` at a time, then the months' records re-identified, months at once.
        `on_found` is given each silver part's found rows as soon as they are found (from the
        reading threads: an export proves them while the rest is read and re-identified)."""
        live = [ym for ym in months if not self.store.exists(layout.purge_marker(ym))]
        keys = [
            (ym, obj.key)
            for ym in live
            for obj in self.store.list(layout.month_prefix("silver", ym))
        ]
        found: dict[tuple[int, int], list[pl.DataFrame]] = {ym: [] for ym in live}

        def read(key: str) -> list[pl.DataFrame]:
            frames = self._part_rows(key)
            if on_found is not None and frames:
                on_found(pl.concat(frames, how="vertical_relaxed"))
            return frames

        for (ym, _), frames in zip(keys, in_parallel(lambda k: read(k[1]), keys), strict=True):
            found[ym] += frames
        return in_parallel(lambda ym: self._month(ym, found.get(ym)), months)

    def month(self, y: int, m: int) -> tuple[pl.DataFrame, dict[str, Any]]:
        return self.months([(y, m)])[0]

    def _month(
        self, ym: tuple[int, int], live: list[pl.DataFrame] | None
    ) -> tuple[pl.DataFrame, dict[str, Any]]:
        """A live month's found rows re-identified, or a purged month's held records."""
        y, m = ym
        if live is not None:
            rows = pl.concat(live, how="vertical_relaxed") if live else pl.DataFrame()
            rows = self._reidentify(rows, y, m)
            info: dict[str, Any] = {"identifiers": "live", "records": len(rows)}
            return self._exclude(rows, info), info
        purged_on = json.loads(self.store.get_bytes(layout.purge_marker(ym)))["purged_as_of"]
        held = self._holds(y, m)
        info = {
            "identifiers": "purged",
            "purged_on": purged_on,
            "note": f"identifiers purged on {purged_on} under the 12-month rule",
            "records": len(held),
            "unattributable_gold_records": self._gold_count(y, m),
        }
        return self._exclude(held, info), info

    def live_rows(self, y: int, m: int) -> pl.DataFrame:
        """Matching rows of the month's silver parts, reading full rows only where needed."""
        keys = [obj.key for obj in self.store.list(layout.month_prefix("silver", (y, m)))]
        frames = [frame for part in in_parallel(self._part_rows, keys) for frame in part]
        return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()

    def _part_rows(self, key: str) -> list[pl.DataFrame]:
        with self.store.open_seekable(key) as src:
            part = pq.ParquetFile(src)
            tables = [
                chunk.filter(self._mask(chunk))  # a few row groups at once: bounded memory
                for chunk in _chunks(self._candidates(key, part), _FILTER_GROUPS)
            ]
        if not tables:
            return []
        frame = pl.from_arrow(pa.concat_tables(tables))  # converted once for the part
        assert isinstance(frame, pl.DataFrame)
        return [frame.with_columns(pl.lit("silver").alias("found_in"))] if len(frame) else []

    def _candidates(self, key: str, part: pq.ParquetFile) -> Iterator[pa.Table]:
        """The part's row groups that can hold a match, whole. Those its token index names
        hold a wanted token; without an index, each row group's token and time columns are read
        first, and full rows only where a wanted token occurs."""
        groups = token_index.indexed_row_groups(self.store, key, part, self.tokens)
        if groups is not None:
            yield from (part.read_row_group(group, use_threads=False) for group in groups)
            return
        for group in range(part.num_row_groups):
            if pc.any(self._mask(part.read_row_group(group, columns=_SCAN))).as_py():
                yield part.read_row_group(group)

    def _mask(self, table: pa.Table) -> pa.ChunkedArray:
        hit = pc.or_(
            pc.is_in(table["origin"], value_set=self.tokens),
            pc.is_in(table["destination"], value_set=self.tokens),
        )
        start, end = _instants(self.start, self.end)
        when = pc.and_(
            pc.greater_equal(table["event_time"], start), pc.less(table["event_time"], end)
        )
        mask = pc.and_(hit, when)
        if self.channels:
            mask = pc.and_(mask, pc.is_in(table["channel"], value_set=_strings(self.channels)))
        return pc.fill_null(mask, False)

    def _reidentify(self, found: pl.DataFrame, y: int, m: int) -> pl.DataFrame:
        """Both parties' identifiers from the month's vault, for the found records only."""
        if not len(found):
            return found
        needed = pl.concat([found.get_column("origin"), found.get_column("destination")])
        needed = needed.drop_nulls().unique()
        name = layout.month_key_name((y, m))
        if not self.res.keyring.has_data_key(name):
            raise SearchError(f"{y:04d}-{m:02d}: the month's key is gone but no purge is recorded")
        gcm = AESGCM(self.res.keyring.data_key(name, create=False))
        wanted = needed.to_arrow()
        ordered = sorted(needed.to_list())

        def entries(key: str) -> pl.DataFrame:
            """The part's entries of the needed tokens: of a vault in token order, only the row
            groups whose range holds one (every row group of an older vault)."""
            with self.store.open_seekable(key) as src:
                vault = pq.ParquetFile(src)
                groups = token_index.covering(vault, "token", ordered)
                tables = [
                    vault.read_row_group(
                        g, columns=["token", "identifier_encrypted"], use_threads=False
                    )
                    for g in groups
                ]
            if not tables:
                return pl.DataFrame(schema={"token": pl.String, "identifier_encrypted": pl.Binary})
            table = pa.concat_tables(tables)
            frame = pl.from_arrow(table.filter(pc.is_in(table["token"], value_set=wanted)))
            assert isinstance(frame, pl.DataFrame)
            return frame

        clear: dict[str, str] = {}
        for obj in self.store.list(layout.month_prefix("vault", (y, m))):  # months run at once
            for tok, blob in entries(obj.key).iter_rows():
                clear.setdefault(tok, decrypt_value(gcm, blob, tok.encode()).decode())
        return with_identifiers(found, clear, self.suppressed)

    def _holds(self, y: int, m: int) -> pl.DataFrame:
        """Matching records kept under legal holds for a purged month, re-identified."""
        frames = []
        silver = layout.month_prefix("silver", (y, m))
        for hold in list_holds(self.store):
            for obj in self.store.list(layout.hold_copies_of(hold.case, "records", silver)):
                rows = read_held_part(self.store, self.res.keyring, hold.case, obj.key)
                rows = self._in_period(rows).filter(
                    pl.col("origin").is_in(self.tokens.to_pylist())
                    | pl.col("destination").is_in(self.tokens.to_pylist())
                )
                if not len(rows):
                    continue
                vault_key = layout.hold_vault_copy(obj.key)
                clear: dict[str, str] = {}
                if self.store.exists(vault_key):
                    vault = read_held_part(self.store, self.res.keyring, hold.case, vault_key)
                    clear = dict(vault.select("token", "identifier").iter_rows())
                rows = rows.with_columns(pl.lit(f"hold:{hold.case}").alias("found_in"))
                frames.append(with_identifiers(rows, clear))
        if not frames:
            return pl.DataFrame()
        # Two holds may keep the same record: once is enough.
        return pl.concat(frames, how="vertical_relaxed").unique(
            ["source_sha256", "leaf_index"], keep="first", maintain_order=True
        )

    def _gold_count(self, y: int, m: int) -> int:
        """Gold records of the month in the period: kept, but no longer attributable."""
        total = 0
        for obj in self.store.list(layout.month_prefix("gold", (y, m))):
            with self.store.open_seekable(obj.key) as src:
                table = pq.read_table(src, columns=["event_time", "channel"])
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            total += len(self._in_period(frame))
        return total


def candidate_rows(store: ObjectStore, silver_key: str, tokens: list[str]) -> pl.DataFrame:
    """The rows of a silver part that can hold one of `tokens`: its row groups the token index
    names (all of them without an index); callers filter the rows exactly."""
    with store.open_seekable(silver_key) as src:
        part = pq.ParquetFile(src)
        wanted = _strings(sorted(set(tokens)))
        groups = token_index.indexed_row_groups(store, silver_key, part, wanted)
        table = part.read_row_groups(range(part.num_row_groups) if groups is None else groups)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def with_identifiers(
    rows: pl.DataFrame, clear: dict[str, str], suppressed: frozenset[str] = frozenset()
) -> pl.DataFrame:
    """Add each party's identifier: re-identified for end users, the sender as written else.

    A suppressed token (identifiers erased on request) stays without one, even where a vault
    entry is still found; any other end user without a vault entry is an error.
    """
    clear = {t: v for t, v in clear.items() if t not in suppressed}
    lookup = pl.DataFrame(
        {"token": list(clear), "identifier": list(clear.values())},
        schema={"token": pl.String, "identifier": pl.String},
    )
    for side in ("origin", "destination"):
        personal = pl.col(f"{side}_kind").is_in(PERSONAL_KINDS)
        rows = rows.join(
            lookup.rename({"identifier": f"{side}_identifier"}),
            left_on=side,
            right_on="token",
            how="left",
            maintain_order="left",
        ).with_columns(
            pl.when(personal)
            .then(pl.col(f"{side}_identifier"))
            .otherwise(pl.col(side))
            .alias(f"{side}_identifier")
        )
    erased = list(suppressed)
    missing = rows.filter(
        (
            pl.col("origin_kind").is_in(PERSONAL_KINDS)
            & pl.col("origin_identifier").is_null()
            & ~pl.col("origin").is_in(erased)
        )
        | (
            pl.col("destination_kind").is_in(PERSONAL_KINDS)
            & pl.col("destination_identifier").is_null()
            & ~pl.col("destination").is_in(erased)
        )
    )
    if len(missing):
        raise SearchError(
            f"record {missing.get_column('record_id')[0]}: a party's vault entry is missing"
        )
    return rows


def found_records(
    frames: list[pl.DataFrame], wanted: set[str], keep: tuple[str, ...] = ()
) -> pl.DataFrame:
    """Found rows in one frame: retained fields as committed, identifiers, what matched
    (and the string columns `keep` a caller added)."""
    columns = [*GOLD, "origin_identifier", "destination_identifier", "found_in", *keep]
    schema = {**GOLD, "origin_identifier": pl.String, "destination_identifier": pl.String}
    schema |= {name: pl.String for name in keep}
    if not frames:
        return pl.DataFrame(schema={**schema, "found_in": pl.String, "matched": pl.String})
    rows = pl.concat([f.select(columns) for f in frames], how="vertical_relaxed")
    o, d = pl.col("origin").is_in(list(wanted)), pl.col("destination").is_in(list(wanted))
    rows = rows.with_columns(
        pl.when(o & d)
        .then(pl.lit("both"))
        .when(o)
        .then(pl.lit("source"))
        .otherwise(pl.lit("destination"))
        .alias("matched")
    )
    return gold_form(rows).sort("event_time", "record_id")


def check_identities(res: Resources, records: pl.DataFrame) -> dict[str, int]:
    """Recompute each record's identity commitment from its re-identified parties, under its
    file's key while that key exists: the identifiers are the ones sealed with the record.
    A record with an erased party cannot be checked, and is counted as unchecked."""
    checked = unchecked = 0
    erased = pl.any_horizontal(
        pl.col(f"{s}_kind").is_in(PERSONAL_KINDS) & pl.col(f"{s}_identifier").is_null()
        for s in ("origin", "destination")
    )
    unchecked += int(records.select(erased.sum()).item()) if len(records) else 0
    records = records.filter(~erased) if len(records) else records
    for (sha,), rows in records.group_by("source_sha256"):
        name = layout.file_key_name(sha)
        if not res.keyring.has_data_key(name):
            unchecked += len(rows)
            continue
        file_key = res.keyring.data_key(name, create=False)
        sides = [
            pl.when(pl.col(f"{s}_kind").is_in(PERSONAL_KINDS)).then(
                pl.col(f"{s}_kind") + pl.lit(":") + pl.col(f"{s}_identifier")
            )
            for s in ("origin", "destination")
        ]
        recomputed = identity_commitment(pl.col("leaf_index"), *sides, file_key)
        bad = rows.filter(recomputed != pl.col("identity_commitment"))
        if len(bad):
            raise SearchError(
                f"record {bad.get_column('record_id')[0]}: re-identified parties do not match "
                "the identity sealed with the record"
            )
        checked += len(rows)
    return {"checked": checked, "unchecked": unchecked}


@dataclass
class Proofs:
    """Records' Merkle paths by (file, leaf index), and their files' signed entries."""

    paths: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)


def prove(store: ObjectStore, records: pl.DataFrame, known: Proofs | None = None) -> Proofs:
    """The paths of `records` (their `source_sha256` and `leaf_index`) not known yet, added to
    `known`: a caller may start proving the records found before it has finished with them."""
    known = known or Proofs()

    def one_file(sha: str, indices: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        seal, parse = (
            read_entry(store, layout.seal_key(sha)),
            read_entry(store, layout.parse_key(sha)),
        )
        if seal is None or parse is None:
            raise SearchError(f"file {sha[:12]}…: its seal entries are missing")
        return {"seal": seal, "parse": parse}, _file_proofs(store, sha, parse["body"], indices)

    files = []
    for (sha,), rows in records.group_by("source_sha256", maintain_order=True):
        leaves = rows.get_column("leaf_index").to_list()
        missing = [i for i in leaves if (sha, i) not in known.paths]
        if missing:
            files.append((str(sha), missing))
    for (sha, _), (entries, paths) in zip(
        files, in_parallel(lambda f: one_file(*f), files), strict=True
    ):
        known.sources[sha] = entries
        known.paths.update({(sha, p["leaf_index"]): p for p in paths})
    return known


def record_proofs(
    store: ObjectStore, records: pl.DataFrame, known: Proofs | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each record's path to its file's sealed Merkle root (in the records' order), and the
    files' signed entries; paths already `known` are not computed again."""
    known = prove(store, records, known)
    keys = list(records.select("source_sha256", "leaf_index").iter_rows())
    sources = {sha: known.sources[sha] for sha, _ in keys}
    return [known.paths[key] for key in keys], sources


def _file_proofs(
    store: ObjectStore, sha: str, body: dict[str, Any], indices: list[int]
) -> list[dict[str, Any]]:
    """One file's records' paths: up their block (committed blocks, or whole batches in entries
    written before blocks; the entry states the sizes), from that block's leaves alone, then
    over the file's block roots, computed once for every block wanted."""
    starts = list(itertools.accumulate(body["batch_leaves"], initial=0))
    wanted: dict[int, list[int]] = {}
    for index in indices:
        if not 0 <= index < starts[-1]:
            raise SearchError(f"file {sha[:12]}…: leaf {index} is beyond its sealed leaves")
        wanted.setdefault(bisect.bisect_right(starts, index) - 1, []).append(index)
    file_paths = inclusion_paths(body["batch_roots"], list(wanted))
    proofs: list[dict[str, Any]] = []
    with store.open_seekable(layout.proof_key(sha)) as src:
        leaves_file = _LeafReader(pq.ParquetFile(src))
        for block, found in sorted(wanted.items()):
            lo = starts[block]
            paths = inclusion_paths(
                leaves_file.read(lo, starts[block + 1]), [i - lo for i in found]
            )
            proofs += [
                {
                    "source_sha256": sha,
                    "leaf_index": i,
                    "batch": block,
                    "batch_path": paths[i - lo],
                    "file_path": file_paths[block],
                }
                for i in found
            ]
    return proofs


class _LeafReader:
    """Leaves of a file's proofs object by range, reading only the row groups that hold them
    (a few committed blocks each where the ingest wrote blocks), the last one kept: blocks are
    asked for in order."""

    def __init__(self, leaves_file: pq.ParquetFile) -> None:
        self.file = leaves_file
        meta = leaves_file.metadata
        sizes = (meta.row_group(g).num_rows for g in range(leaves_file.num_row_groups))
        self.starts = list(itertools.accumulate(sizes, initial=0))
        self._last: tuple[int, pa.ChunkedArray] | None = None

    def _group(self, group: int) -> pa.ChunkedArray:
        if self._last is None or self._last[0] != group:
            table = self.file.read_row_group(group, columns=["leaf"], use_threads=False)
            self._last = (group, table.column("leaf"))
        return self._last[1]

    def read(self, lo: int, hi: int) -> list[str]:
        """Leaves [lo, hi), hex."""
        first = bisect.bisect_right(self.starts, lo) - 1
        leaves: list[str] = []
        for group in range(first, len(self.starts) - 1):
            start, end = self.starts[group], self.starts[group + 1]
            if start >= hi:
                break
            taken = self._group(group).slice(max(lo - start, 0), min(hi, end) - max(lo, start))
            leaves += [value.hex() for value in taken.to_pylist()]
        return leaves
