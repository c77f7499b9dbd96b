"""Re-deliveries: a record ID is unique per source across files, not only within one file.

The same CDRs sent again (re-exported, with other line ends, in another file) have another
digest, so the file-level check cannot see them. Each ingested file leaves a compact index of
the record IDs it kept, per source and month of the communication
(`index/record_ids/<source>/<YYYY-MM>/<sha256>.parquet`: two 64-bit xxHash values per ID, 16
bytes, sorted). A later file's record whose ID is already kept for its source in its month is
quarantined `duplicate_record_id`, the note naming the earlier file by digest. Memory is a few
months' index of one source (the months a file spans), never the whole history.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import polars_hash as plh
import pyarrow.parquet as pq

from pipeline.core import layout, staging
from pipeline.core.store import ObjectStore, private_file

_SEED = 0x5EED


def fingerprints(ids: pl.Series) -> pl.DataFrame:
    """Stable 128-bit fingerprints of record IDs (`h1`, `h2`): the same on every version."""
    frame = ids.alias("id").to_frame()
    return frame.select(
        plh.col("id").nchash.xxhash64().alias("h1"),
        plh.col("id").nchash.xxhash64(seed=_SEED).alias("h2"),
    )


@dataclass
class _MonthIndex:
    """One month's index of one source: sorted fingerprints and the file each came from."""

    h1: np.ndarray
    h2: np.ndarray
    file: np.ndarray
    digests: list[str]


class PriorIds:
    """Which kept record IDs of one source earlier files already hold, month by month.

    The indexes of the last `MONTHS_CACHED` months a file touched stay loaded (a file's records
    usually span a few adjacent months, batch after batch); older ones are dropped.
    """

    MONTHS_CACHED = 3

    def __init__(self, store: ObjectStore, source: str, sha256: str) -> None:
        self._store, self._source, self._sha = store, source, sha256
        self._cache: OrderedDict[int, _MonthIndex] = OrderedDict()

    def _load(self, month: int) -> _MonthIndex:
        if month in self._cache:
            self._cache.move_to_end(month)
            return self._cache[month]
        y, m = divmod(month, 12)
        prefix = layout.record_id_index_prefix(self._source, (y, m + 1))
        read = _read_before(self._store.uri(prefix))
        listed = {}
        for obj in self._store.list(prefix):
            digest = layout.sha_of_record_id_index(obj.key)
            if digest is not None and digest != self._sha:
                listed[digest] = obj.key
        for gone in set(read) - set(listed):  # an index removed since (a purge, an erasure)
            del read[gone]
        h1s, h2s, digests = [], [], []
        for digest, key in sorted(listed.items()):
            pair = read.get(digest)
            if pair is None:
                if not self._store.exists(layout.parse_key(digest)):
                    continue  # an ingest that never committed (yet)
                frame = pl.read_parquet(io.BytesIO(self._store.get_bytes(key)))
                pair = (frame.get_column("h1").to_numpy(), frame.get_column("h2").to_numpy())
                if len(frame) <= KEPT_IDS:  # a big file's index is read again, not held
                    read[digest] = pair
            h1s.append(pair[0])
            h2s.append(pair[1])
            digests.append(digest)
        h1 = np.concatenate(h1s) if h1s else np.empty(0, np.uint64)
        h2 = np.concatenate(h2s) if h2s else np.empty(0, np.uint64)
        files = np.repeat(np.arange(len(digests), dtype=np.int32), [len(h) for h in h1s])
        order = np.lexsort((h2, h1))  # by h1, then h2
        loaded = _MonthIndex(h1[order], h2[order], files[order], digests)
        self._cache[month] = loaded
        if len(self._cache) > self.MONTHS_CACHED:
            self._cache.popitem(last=False)
        return loaded

    def earlier(self, ids: pl.Series, months: pl.Series) -> list[str | None]:
        """For each record, the digest of an earlier file of this source that kept its ID in
        the same month, or None."""
        out: list[str | None] = [None] * len(ids)
        if not len(ids):
            return out
        prints = fingerprints(ids).with_columns(
            months.alias("m"), pl.int_range(pl.len()).alias("i")
        )
        for month in sorted(prints.get_column("m").unique().to_list()):
            index = self._load(int(month))
            if len(index.h1):
                _match(index, prints.filter(pl.col("m") == month), out)
        return out


#: committed files' indexes already read in this process, per store prefix (a source's
#: month): the next file of a batch reads only the indexes written since. An index is
#: immutable once its file committed; one no longer listed is dropped.
_READ: OrderedDict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = OrderedDict()
#: how many source-months' indexes stay read, and the biggest file index held (16 bytes an id)
PREFIXES_KEPT = 6
KEPT_IDS = 250_000


def _read_before(prefix_uri: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    read = _READ.setdefault(prefix_uri, {})
    _READ.move_to_end(prefix_uri)
    while len(_READ) > PREFIXES_KEPT:
        _READ.popitem(last=False)
    return read


def _match(index: _MonthIndex, batch: pl.DataFrame, out: list[str | None]) -> None:
    """Set `out[row]` to the earlier file's digest for each record of `batch` in `index`."""
    h1, h2 = batch.get_column("h1").to_numpy(), batch.get_column("h2").to_numpy()
    rows = batch.get_column("i").to_numpy()
    pos = np.searchsorted(index.h1, h1)
    hit = (pos < len(index.h1)) & (index.h1[np.minimum(pos, len(index.h1) - 1)] == h1)
    for k in np.flatnonzero(hit):  # candidates on the first half; confirm on the second
        j = int(pos[k])
        while j < len(index.h1) and index.h1[j] == h1[k]:
            if index.h2[j] == h2[k]:
                out[int(rows[k])] = index.digests[int(index.file[j])]
                break
            j += 1


def index_rows(kept: pl.DataFrame) -> pl.DataFrame:
    """One batch's kept records as index rows (`year`, `month`, `h1`, `h2`): 24 bytes each."""
    return pl.concat(
        [kept.select("year", "month"), fingerprints(kept.get_column("record_id"))],
        how="horizontal",
    )


class IndexSpool:
    """A file's record-ID index, spooled to local files a month each as the batches come, so
    memory does not grow with the file; sorted and handed over a month at a time at the end."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=staging.prefix("ingest"))
        self._writers: dict[tuple[int, int], pq.ParquetWriter] = {}
        self._sorted: dict[tuple[int, int], Path] = {}

    def _path(self, ym: tuple[int, int]) -> Path:
        return Path(self._tmp.name) / f"{ym[0]:04d}-{ym[1]:02d}.parquet"

    def add(self, kept: pl.DataFrame) -> None:
        """Spool one batch's kept records."""
        for (year, month), part in index_rows(kept).partition_by(["year", "month"], as_dict=True).items():  # fmt: skip
            ym = (int(year), int(month))  # type: ignore[call-overload]
            table = part.select("h1", "h2").to_arrow()
            if ym not in self._writers:
                self._writers[ym] = pq.ParquetWriter(private_file(self._path(ym)), table.schema)
            self._writers[ym].write_table(table)

    def sort(self) -> dict[tuple[int, int], Path]:
        """Sort each month's fingerprints into a local Parquet file (once; removed with the
        spool), a month at a time, so the index is never held in memory whole."""
        for ym in sorted(self._writers):
            if ym not in self._sorted:
                self._writers[ym].close()
                path = private_file(self._path(ym).with_suffix(".sorted.parquet"))
                frame = pl.read_parquet(self._path(ym)).sort("h1", "h2")
                frame.write_parquet(path, compression="zstd")
                self._sorted[ym] = path
        return self._sorted

    def parts(self) -> Iterator[tuple[tuple[int, int], Path]]:
        """((year, month), the local file of the month's sorted fingerprints), month by month."""
        yield from sorted(self.sort().items())

    def close(self) -> None:
        for writer in self._writers.values():
            with contextlib.suppress(Exception):  # already closed by `parts`
                writer.close()
        self._tmp.cleanup()
