"""The canonical schema itself as a source: CSV with a header, or Parquet.

Addresses in it are as the source wrote them (numbers in any form, e-mail addresses); they are
normalised and tokenised like every other source's. Every column a file may carry has one rule
(`as_parsed`): a canonical source column is read; a column the pipeline derives (source, line,
kinds, countries, domains, commitment, leaf index) is the file's claim, compared with the value
recomputed and never stored; anything else is ignored, which is how content columns stay out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipeline.records.schema import (
    CANONICAL_SOURCE_COLUMNS,
    DERIVED_COLUMNS,
    PARSED,
    claimed,
    conform,
)
from pipeline.records.sources.base import (
    FileFormatError,
    ParseOptions,
    Source,
    bad_value,
    csv_batches,
    first_error,
    first_record,
    no_offset,
    number,
    with_timestamps,
)

REQUIRED = {"record_id", "event_time", "origin", "destination"}
ISO_TIME = ["%+", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]


#: the field separators a canonical CSV may use: `,`, or `;` and tab as spreadsheets in many
#: locales export (the first whose header names the required columns)
SEPARATORS = (",", ";", "\t")


def _columns(head: bytes, sep: str = ",") -> list[str]:
    """The header's column names: the first non-blank line, read as CSV."""
    return [c.strip() for c in first_record(head, sep)]


def separator(head: bytes) -> str | None:
    """The separator a canonical CSV's header is written with, or None if it is not one."""
    return next((s for s in SEPARATORS if set(_columns(head, s)) >= REQUIRED), None)


def foreign_separator(head: bytes) -> str | None:
    """A separator canonical CSV is not read with that the header is written with (`|`, `:`,
    `^`, `~`, a space): the file is then refused naming it, rather than as unrecognised."""
    return next((s for s in "|:^~ " if set(_columns(head, s)) >= REQUIRED), None)


def as_parsed(names: list[str]) -> list[str]:
    """A file's column names as the parser reads them: a canonical source column as it is, a
    derived column as the file's claim (`claimed:<name>`), anything else a placeholder never
    read, so that no name a file writes (`source_line`, `raw`) collides with one the parser
    adds."""
    return [
        n if n in _READ else claimed(n) if n in DERIVED_COLUMNS else f"_ignored:{i}"
        for i, n in enumerate(names)
    ]


_READ = frozenset(CANONICAL_SOURCE_COLUMNS)


def _header(path: Path) -> tuple[list[str], str]:
    """The header of a file, as the parser reads it (`as_parsed`), and its separator; a file
    whose header names a column twice cannot be read unambiguously, so it is quarantined
    whole."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    sep = separator(head) or ","
    names = _columns(head, sep)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FileFormatError(
            "duplicate_column", "the header names more than once: " + ", ".join(repeated)
        )
    if not set(names) >= REQUIRED:
        raise FileFormatError("missing_columns", ", ".join(sorted(REQUIRED - set(names))))
    return as_parsed(names), sep


def _map(df: pl.DataFrame, opts: ParseOptions) -> pl.DataFrame:
    """String columns named as the canonical schema → a parsed frame, followed by the file's
    claims of derived columns (as written: the transform compares and drops them)."""
    missing = [c for c in CANONICAL_SOURCE_COLUMNS if c not in df.columns]
    df = df.with_columns([pl.lit(None, pl.String).alias(c) for c in missing])
    df = with_timestamps(df, {"event_time": "_event", "end_time": "_end"}, ISO_TIME, opts.timezone)
    event_time, end_time = pl.col("_event"), pl.col("_end")
    duration = number("duration_s", pl.Float64())
    units = number("units", pl.Int64())
    price = number("price", pl.Float64())
    out = df.select(
        "source_line",
        "raw",
        "record_id",
        event_time.alias("event_time"),
        end_time.alias("end_time"),
        "channel",  # read as kept (lower-cased, vocabulary) by `normal_course`
        "channel_detail",
        "direction",
        "customer_id",
        pl.col("origin").alias("origin_raw"),
        pl.col("destination").alias("destination_raw"),
        "origin_network",
        "destination_network",
        "route_id",
        duration.alias("duration_s"),
        units.alias("units"),
        "status",
        "error_code",
        price.alias("price"),
        "currency",
        first_error(
            [
                no_offset("_event"),
                (bad_value("event_time", event_time), "bad_timestamp:event_time"),
                no_offset("_end"),
                (bad_value("end_time", end_time), "bad_timestamp:end_time"),
                (bad_value("duration_s", duration), "bad_number:duration_s"),
                (bad_value("units", units), "bad_number:units"),
                (bad_value("price", price), "bad_number:price"),
            ]
        ).alias("parse_error"),
    )
    claims = df.select(c for c in df.columns if c.startswith(claimed("")))
    return pl.concat([conform(out, PARSED), claims], how="horizontal")


class CanonicalCsvSource(Source):
    name = "canonical_csv"

    def sniff(self, head: bytes) -> bool:
        return separator(head) is not None

    def parse(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        names, sep = _header(path)
        yield from csv_batches(
            path, opts.batch_rows, names, {len(names)}, lambda good: _map(good, opts), True, sep
        )


class CanonicalParquetSource(Source):
    name = "canonical_parquet"

    def sniff(self, head: bytes) -> bool:
        return head.startswith(b"PAR1")

    def parse(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise FileFormatError("bad_parquet", type(exc).__name__) from None
        names = set(pf.schema_arrow.names)
        if not names >= REQUIRED:
            raise FileFormatError("missing_columns", ", ".join(sorted(REQUIRED - names)))
        wanted = [c for c in pf.schema_arrow.names if c in _READ or c in DERIVED_COLUMNS]
        line = 0
        for batch in pf.iter_batches(batch_size=opts.batch_rows, columns=wanted):
            df = pl.from_arrow(batch)
            assert isinstance(df, pl.DataFrame)
            df = df.with_columns(pl.all().cast(pl.String))
            raw = [json.dumps(r, default=str) for r in df.iter_rows(named=True)]
            df = df.rename(dict(zip(wanted, as_parsed(wanted), strict=True))).with_columns(
                pl.int_range(line + 1, line + 1 + len(df), dtype=pl.Int64).alias("source_line"),
                pl.Series("raw", raw, dtype=pl.String),
            )
            line += len(df)
            yield _map(df, opts)

    def records(self, path: Path, opts: ParseOptions) -> int | None:
        return pq.ParquetFile(path).metadata.num_rows
