"""Writing one file's output to the tiers: silver, gold, vault and quarantine.

Batches are appended as Parquet row groups to local temporary files, one per tier and month, so
memory stays bounded by one batch. Nothing reaches the store until the whole file has been read;
then each part is uploaded under a key derived from the file's digest (`part-<sha256>.parquet`),
so a rerun overwrites the same keys instead of adding rows. Identifiers are encrypted here, before
anything is written: vault entries under the month's data key (once per distinct token), raw
quarantined rows under the file's data key.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.core import layout, staging
from pipeline.core.store import ObjectStore, private_file
from pipeline.proof.commitments import COMMIT_BLOCK
from pipeline.proof.crypto import decrypt_value, encrypt_values
from pipeline.records import token_index
from pipeline.records.clustering import BY_PARTY, BY_TOKEN, WRITE_BUFFER, Clusterer
from pipeline.records.fingerprints import Fingerprints
from pipeline.records.schema import (
    GOLD,
    PROOFS,
    QUARANTINE_ROWS,
    SILVER,
    VAULT,
    VAULT_ENTRY,
    require_kinds,
)

# Min/max statistics where they let readers skip row groups (time ranges, ids, files, the vault's
# tokens, which it holds in order); none on silver's tokens or on encrypted values, whose min/max
# prune nothing and cost a pass over every value.
STATISTICS = (
    "event_time", "end_time", "record_id", "source_sha256", "source_line", "duration_s", "token",
)  # fmt: skip
#: Vault entries per row group: what re-identifying a party reads of its month's vault.
VAULT_GROUP = 4096
#: Leaves per row group of the proofs: whole committed blocks (each batch's blocks and row
#: groups both start at the batch's first leaf), so a record's proof reads one row group, and
#: the footer stays small however many blocks the file has.
PROOF_GROUP = 4 * COMMIT_BLOCK

# Dictionary encoding where values repeat (kinds, countries, statuses), not on unique values.
DICTIONARY = (
    "source", "source_file", "source_sha256", "channel", "direction", "customer_id",
    "origin_kind", "destination_kind", "origin_country", "destination_country", "origin_domain",
    "destination_domain", "origin_network",
    "destination_network", "route_id", "status", "error_code", "currency", "reason", "kind",
)  # fmt: skip


#: silver's columns that hold one value in every row of a file: not spooled (`Clusterer`)
_ONE_VALUE = ("source", "source_file", "source_sha256")


def _row_group(key: str) -> int | None:
    """Rows per row group where readers pick row groups out: silver for a person search
    (pipeline.records.token_index) and the vault to re-identify its results, proofs a few
    committed blocks each, so a record's proof reads its block's row group alone. Elsewhere the
    writer's default."""
    if key.startswith(layout.SILVER):
        return token_index.ROW_GROUP
    if key.startswith(layout.VAULT):
        return VAULT_GROUP
    if key.startswith(layout.PROOFS):
        return PROOF_GROUP
    return None


def part_writer(path: Path | IO[bytes], schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer with the tiers' encoding: zstd, statistics and dictionaries only where
    they pay."""
    options = {
        "compression": "zstd",
        "compression_level": 1,
        "write_statistics": [c for c in STATISTICS if c in schema.names],
        "use_dictionary": [c for c in DICTIONARY if c in schema.names],
    }
    if isinstance(path, Path):
        return _BufferedWriter(path, schema, **options)
    return pq.ParquetWriter(path, schema, **options)


class _BufferedWriter(pq.ParquetWriter):
    """A Parquet writer to a local file through a buffer, closed with the writer: unbuffered,
    every page and column chunk is its own system call (tens of thousands for a big part)."""

    def __init__(self, path: Path, schema: pa.Schema, **options: object) -> None:
        self._sink = pa.BufferedOutputStream(pa.OSFile(str(path), "wb"), WRITE_BUFFER)
        super().__init__(self._sink, schema, **options)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._sink.close()


def _arrow_schema(schema: dict[str, pl.DataType]) -> pa.Schema:
    """The Parquet schema of a tier; refused if a column has no declared kind (closed world).
    Converted once a process per schema (a tier's schema is a constant)."""
    require_kinds(schema)
    key = tuple((name, repr(dtype)) for name, dtype in schema.items())
    if key not in _ARROW_SCHEMAS:
        _ARROW_SCHEMAS[key] = pl.DataFrame(schema=schema).to_arrow().schema
    return _ARROW_SCHEMAS[key]


_ARROW_SCHEMAS: dict[tuple[tuple[str, str], ...], pa.Schema] = {}


class TierWriter:
    """Collects one file's output in local Parquet files, then publishes them to the store."""

    def __init__(
        self,
        sha256: str,
        month_key: Callable[[int, int], bytes],
        file_key: bytes,
        source: str,
        source_file: str,
        check: Callable[[str, pl.DataFrame], None] | None = None,
    ) -> None:
        self.sha256 = sha256
        #: sees every batch of every tier as it is written (the expectations' batch evaluator)
        self._check = check
        self._month_key = month_key
        self._file_gcm = AESGCM(file_key)
        self._month_gcm: dict[tuple[int, int], AESGCM] = {}
        self._source = source
        self._source_file = source_file
        self._tmp = tempfile.TemporaryDirectory(prefix=staging.prefix("ingest"))
        self._writers: dict[str, pq.ParquetWriter] = {}
        #: silver clustered by end user, the vault in token order (`clustering`)
        self._ordered = {
            layout.SILVER: Clusterer(
                Path(self._tmp.name) / "silver", BY_PARTY, constant=_ONE_VALUE
            ),
            layout.VAULT: Clusterer(Path(self._tmp.name) / "vault", BY_TOKEN),
        }
        self._schemas: dict[str, pa.Schema] = {}
        self._paths: dict[str, Path] = {}
        self._seen_tokens: dict[tuple[int, int], Fingerprints] = {}
        self.rows: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tier-writer")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    def _open(self, key: str, schema: pa.Schema) -> pq.ParquetWriter:
        """A local Parquet file for the part `key`, registered to be published under it."""
        with self._lock:
            path = private_file(Path(self._tmp.name) / f"{len(self._paths)}.parquet")
            self._paths[key] = path
        return part_writer(path, schema)

    def _append(self, key: str, table: pa.Table, schema: pa.Schema) -> None:
        table = table.cast(schema)
        ordered = next((c for tier, c in self._ordered.items() if key.startswith(tier)), None)
        if ordered is not None:  # written in its order once the whole file is read
            ordered.add(key, table)
            self._schemas[key] = schema
        else:
            if key not in self._writers:
                self._writers[key] = self._open(key, schema)
            self._writers[key].write_table(table, row_group_size=_row_group(key))
        self.rows[key] = self.rows.get(key, 0) + table.num_rows

    def _by_month(self, tier: str, df: pl.DataFrame, schema: dict[str, pl.DataType]) -> None:
        arrow = _arrow_schema(schema)
        if self._check:
            self._check(tier, df.select(list(schema)))
        for (year, month), part in df.partition_by(["year", "month"], as_dict=True).items():
            key = layout.partition(tier, (int(year), int(month)), self.sha256)  # type: ignore[call-overload]
            self._append(key, part.select(list(schema)).to_arrow(), arrow)

    def add(
        self,
        silver: pl.DataFrame,
        gold: pl.DataFrame,
        vault: pl.DataFrame,
        quarantine: pl.DataFrame,
    ) -> None:
        """Queue a batch for writing; it is written while the next batch is being parsed.

        Two writer threads (silver and vault; gold and quarantine) encode Parquet side by side,
        each tier's files touched by one thread only. At most one batch waits, so memory stays
        bounded by two batches.
        """
        self._wait()
        self._pending = [
            self._pool.submit(self._write_silver, silver, vault),
            self._pool.submit(self._write_gold, gold, quarantine),
        ]

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # re-raises a write error in the caller

    def _write_silver(self, silver: pl.DataFrame, vault: pl.DataFrame) -> None:
        if len(silver):
            self._by_month("silver", silver, SILVER)
        if len(vault):
            self._vault(vault)

    def _write_gold(self, gold: pl.DataFrame, quarantine: pl.DataFrame) -> None:
        if len(gold):
            self._by_month("gold", gold, GOLD)
        if len(quarantine):
            self._quarantine(quarantine)

    def add_leaves(self, leaves: pl.Series) -> None:
        """Append a batch's Merkle leaves (hex) to the file's proofs object, as 32-byte values,
        in row groups of whole committed blocks (`PROOF_GROUP`)."""
        table = leaves.str.decode("hex").alias("leaf").to_frame().to_arrow()
        self._append(layout.proof_key(self.sha256), table, _arrow_schema(PROOFS))

    def _vault(self, vault: pl.DataFrame) -> None:
        arrow = _arrow_schema(VAULT)
        for (year, month), part in vault.partition_by(["year", "month"], as_dict=True).items():
            ym = (int(year), int(month))  # type: ignore[call-overload]
            seen = self._seen_tokens.setdefault(ym, Fingerprints())
            part = part.filter(pl.Series(seen.add_new(part.get_column("token"))))
            if not len(part):
                continue
            if self._check:
                self._check("vault", part.select(VAULT_ENTRY))
            tokens = part.get_column("token")
            if ym not in self._month_gcm:
                self._month_gcm[ym] = AESGCM(self._month_key(*ym))
            encrypted = encrypt_values(
                self._month_gcm[ym],
                [v.encode() for v in part.get_column("identifier").to_list()],
                [t.encode() for t in tokens.to_list()],
            )
            table = part.select("token", "kind").with_columns(
                pl.Series("identifier_encrypted", encrypted, dtype=pl.Binary)
            )
            self._append(layout.partition("vault", ym, self.sha256), table.to_arrow(), arrow)

    def _quarantine(self, rows: pl.DataFrame) -> None:
        enc = encrypt_values(
            self._file_gcm,
            [(raw or "").encode() for raw in rows.get_column("raw").to_list()],
            [f"{self.sha256}:{line}".encode() for line in rows.get_column("source_line").to_list()],
        )
        table = rows.select(
            pl.lit(self._source).alias("source"),
            pl.lit(self._source_file).alias("source_file"),
            pl.lit(self.sha256).alias("source_sha256"),
            "source_line",
            "reason",
        ).with_columns(
            pl.Series("raw_encrypted", enc, dtype=pl.Binary),
            rows.get_column("note")
            if "note" in rows.columns
            else pl.lit(None, pl.String).alias("note"),
        )
        arrow = _arrow_schema(QUARANTINE_ROWS)
        self._append(layout.quarantine_rows_key(self.sha256), table.to_arrow(), arrow)

    def staged(self) -> dict[str, Path]:
        """Finish writing; the local file of every part, by the key it will be published under."""
        self._wait()
        # The ordered parts are written two at a time, biggest first, on the writer threads:
        # sorting and encoding one part does not wait for another.
        parts = [(key, ordered) for ordered in self._ordered.values() for key in ordered.pending()]
        parts.sort(key=lambda part: -self.rows[part[0]])
        list(self._pool.map(lambda part: self._write_ordered(*part), parts))
        for writer in self._writers.values():
            writer.close()
        self._seen_tokens.clear()  # nothing more will be written
        return dict(self._paths)

    def _write_ordered(self, key: str, ordered: Clusterer) -> None:
        """Write an ordered part; a silver part's token index is gathered as it is written."""
        rows = _row_group(key)
        assert rows is not None  # every ordered tier has its row group size
        index = token_index.Builder() if key.startswith(layout.SILVER) else None
        with self._open(key, self._schemas[key]) as writer:
            ordered.write(key, writer, rows, index.add if index else None)
        if index is not None:
            with self._lock:
                path = token_index.staged_path(self._paths[key])
                self._paths[layout.token_index_key(key)] = path
            index.write(path)

    def vault_entries(self, rows: int) -> Iterator[pa.Table]:
        """The staged vault read back and decrypted, `rows` entries at a time, in memory only:
        what the identifiers suite validates is what was written."""
        self.staged()
        for key, path in sorted(self._paths.items()):
            ym = layout.month_of(key)
            if not key.startswith(layout.VAULT) or ym is None:
                continue
            gcm = self._month_gcm[ym]
            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
                tokens = batch.column("token").to_pylist()
                blobs = batch.column("identifier_encrypted").to_pylist()
                clear = [decrypt_value(gcm, b, t.encode()).decode() for t, b in zip(tokens, blobs, strict=True)]  # fmt: skip
                n = batch.num_rows
                yield pa.table(
                    {
                        "year": pa.array([ym[0]] * n, pa.int32()),
                        "month": pa.array([ym[1]] * n, pa.int32()),
                        "token": batch.column("token"),
                        "kind": batch.column("kind"),
                        "identifier": pa.array(clear, pa.string()),
                    }
                )

    def publish(self, store: ObjectStore) -> list[str]:
        """Upload every staged part; returns the keys written."""
        self.staged()
        keys = sorted(self._paths)
        for key in keys:
            store.put_file(key, self._paths[key])
        return keys

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the error, if any, was raised to the caller
            self._wait()
        self._pool.shutdown()
        for writer in self._writers.values():
            with contextlib.suppress(Exception):  # already closed by publish
                writer.close()
        self._tmp.cleanup()
