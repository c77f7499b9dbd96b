"""What every source parser shares: streaming a file as batches of numbered lines, splitting
CSV lines into fields with a column-count check, and parsing timestamps and numbers with a
reason code for every value that does not parse.

A parser yields *parsed* frames (`pipeline.schema.PARSED`), one per batch, so memory is bounded
by the batch size whatever the file size.
"""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.errors import PipelineError
from pipeline.schema import UTC_TS

BYTES_PER_ROW = 120


@dataclass(frozen=True)
class ParseOptions:
    """How to read a source: region for national numbers, timezone of PBX timestamps."""

    default_region: str | None = None
    timezone: str = "UTC"
    batch_rows: int = 1_000_000


class Source(ABC):
    """A source format: recognises its files and maps them to parsed frames."""

    name: str
    #: numbers written without "+" are international (messaging APIs), not national
    international: bool = False
    #: alphanumeric sender IDs exist here (messaging); on a PBX a name-like value is a user
    alphanumeric: bool = True
    #: records without an ID of their own get `<source>-<sha256 prefix>-<line>`
    derived_ids: bool = False

    @abstractmethod
    def sniff(self, head: bytes) -> bool:
        """Whether the first bytes of a file look like this format."""

    @abstractmethod
    def parse(self, path: Path, opts: ParseOptions) -> Iterator[pl.DataFrame]:
        """Parsed frames, one per batch; rows that cannot be read carry `parse_error`."""

    def records(self, path: Path, opts: ParseOptions) -> int | None:
        """Records in the original when a parser can count them without parsing (else None)."""
        return None


class FileFormatError(PipelineError):
    """A whole file that cannot be read as its format: quarantined whole."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _lines_frame(data: bytes, first_line: int) -> pl.DataFrame:
    """Physical lines of a chunk, numbered; blank lines included (filtered by the caller)."""
    expected = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    lines: pl.Series | None = None
    if b"\x1f" not in data and b"\n\n" not in data and not data.startswith(b"\n"):
        # Fast path: the CSV reader with a separator and quote that never occur splits lines.
        frame = pl.read_csv(
            data,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            schema={"line": pl.String},
            encoding="utf8-lossy",
        )
        if len(frame) == expected:
            lines = frame.get_column("line").fill_null("")
    if lines is None:
        text = data.decode("utf-8", errors="replace")
        lines = pl.Series("line", [text]).str.split("\n").explode()
        if text.endswith("\n"):
            lines = lines.head(len(lines) - 1)
    return pl.DataFrame(
        {
            "source_line": pl.int_range(
                first_line, first_line + len(lines), dtype=pl.Int64, eager=True
            ),
            "line": lines.str.strip_suffix("\r"),
        }
    )


def iter_line_chunks(
    path: Path, batch_rows: int, skip_header: bool = False
) -> Iterator[tuple[pl.DataFrame, bytes]]:
    """Batches of non-blank lines (`source_line`, `line`) with the chunk's bytes, streamed.

    `source_line` is the 1-based physical line number in the file. Blank lines are not records.
    The bytes (header removed) let a CSV reader parse the chunk in one pass.
    """
    chunk_bytes = max(batch_rows * BYTES_PER_ROW, 1 << 16)
    line_no = 0
    carry = b""
    first = True
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            data = carry + block
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                data, carry = data[: cut + 1], data[cut + 1 :]
            else:
                carry = b""
            if not data:
                break
            if first and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            frame = _lines_frame(data, line_no + 1)
            line_no += len(frame)
            if first and skip_header:
                frame = frame.slice(1)
                data = data[data.find(b"\n") + 1 :]
            first = False
            frame = frame.filter(pl.col("line").str.strip_chars() != "")
            if len(frame):
                yield frame, data
            if not block:
                break


def iter_lines(path: Path, batch_rows: int, skip_header: bool = False) -> Iterator[pl.DataFrame]:
    """Batches of non-blank numbered lines (see `iter_line_chunks`)."""
    for frame, _ in iter_line_chunks(path, batch_rows, skip_header):
        yield frame


def field_count(line: pl.Expr, sep: str = ",") -> pl.Expr:
    """Fields in a CSV line, counting separators outside double-quoted sections."""
    unquoted = (
        pl.when(line.str.contains('"', literal=True))
        .then(line.str.replace_all(r'"(?:[^"]|"")*"', ""))
        .otherwise(line)
    )
    return unquoted.str.count_matches(sep, literal=True) + 1


def split_csv(
    lines: pl.DataFrame, data: bytes, names: list[str], allowed: set[int], sep: str = ","
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a chunk into string fields; (good rows with `source_line`/`raw`, bad lines).

    A line whose field count is not in `allowed` is bad (`wrong_column_count`). Short rows are
    padded to `names` with nulls. The chunk is parsed in one pass when its rows line up with its
    lines (no quoted newlines), else the good lines are parsed again on their own.
    """
    width = max(allowed)
    columns = [f"_f{i}" for i in range(width)]
    counted = lines.with_columns(field_count(pl.col("line"), sep).alias("_n"))
    ok = pl.col("_n").is_in(sorted(allowed))
    fields = _read_fields(data, sep, columns)
    if fields is not None and len(fields) == len(counted):
        good = counted.with_columns(fields).filter(ok)
    else:
        good_lines = counted.filter(ok)
        text = good_lines.get_column("line").str.join("\n").item() + "\n"
        fields = _read_fields(text.encode(), sep, columns)
        if fields is None or len(fields) != len(good_lines):
            # Odd quoting: the standard library reads it exactly, row by row.
            rows = [
                (r + [None] * width)[:width]
                for r in csv.reader(good_lines.get_column("line").to_list(), delimiter=sep)
            ]
            fields = pl.DataFrame(rows, schema=columns, orient="row")
        good = good_lines.with_columns(fields)
    bad = counted.filter(~ok).select(
        "source_line",
        pl.lit("wrong_column_count").alias("parse_error"),
        pl.col("line").alias("raw"),
    )
    good = good.select(
        "source_line",
        pl.col("line").alias("raw"),
        *[
            pl.col(c).str.strip_chars().replace("", None).alias(n)
            for c, n in zip(columns, names, strict=False)
        ],
    )
    return good, bad


def _read_fields(data: bytes, sep: str, columns: list[str]) -> pl.DataFrame | None:
    """All fields of a CSV chunk as strings, padded to `columns`; None if it cannot be read."""
    try:
        fields = pl.read_csv(
            data,
            has_header=False,
            separator=sep,
            infer_schema=False,
            truncate_ragged_lines=True,
            encoding="utf8-lossy",
        )
    except pl.exceptions.PolarsError:
        return None
    fields = fields.select(fields.columns[: len(columns)])
    fields.columns = columns[: fields.width]
    missing = [pl.lit(None, pl.String).alias(c) for c in columns[fields.width :]]
    return fields.with_columns(missing) if missing else fields


def _to_utc(s: pl.Series, fmt: str, tz: str) -> pl.Series:
    if "%z" in fmt or fmt == "%+":
        return s.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
    naive = s.str.to_datetime(fmt, strict=False, time_unit="us")
    return (
        naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .cast(UTC_TS)
    )


def with_timestamps(
    df: pl.DataFrame, columns: dict[str, str], formats: list[str], tz: str = "UTC"
) -> pl.DataFrame:
    """Add `{column: out}` UTC timestamps, trying each format in turn; null where none fits.

    Formats with an offset (`%z`, `%+`) carry their own zone; the others are read in `tz` (the
    PBX's zone). Later formats are tried only on the values the earlier ones left unparsed, so
    the common case costs one parse.
    """
    added = []
    for col, out in columns.items():
        s = df.get_column(col).str.strip_chars()
        parsed = _to_utc(s, formats[0], tz)
        for fmt in formats[1:]:
            missing = parsed.is_null() & s.is_not_null()
            if not missing.any():
                break
            parsed = parsed.scatter(missing.arg_true(), _to_utc(s.filter(missing), fmt, tz))
        added.append(parsed.alias(out))
    return df.with_columns(added)


def number(col: str, dtype: pl.DataType) -> pl.Expr:
    """A string column as a number; null where it is empty or not a number."""
    return pl.col(col).str.strip_chars().cast(pl.Float64, strict=False).cast(dtype, strict=False)


def first_error(checks: list[tuple[pl.Expr, str]]) -> pl.Expr:
    """The reason code of the first failing check of a row, or null."""
    expr = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for cond, reason in checks[1:]:
        expr = expr.when(cond).then(pl.lit(reason))
    return expr.otherwise(pl.lit(None, pl.String))


def bad_value(col: str, parsed: pl.Expr) -> pl.Expr:
    """True where a value was written but did not parse."""
    return pl.col(col).is_not_null() & parsed.is_null()
