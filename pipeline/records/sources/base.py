"""What every source parser shares: streaming a file as batches of numbered lines, splitting
CSV lines into fields with a column-count check, and parsing timestamps and numbers with a
reason code for every value that does not parse.

A parser yields *parsed* frames (`pipeline.records.schema.PARSED`), one per batch, so memory is bounded
by the batch size whatever the file size.
"""

from __future__ import annotations

import csv
import io
import re
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.core.errors import PipelineError
from pipeline.records.formats import LEAP_SECOND, LEAP_SECOND_AS
from pipeline.records.schema import PARSED, UTC_TS, conform

BYTES_PER_ROW = 120


@dataclass(frozen=True)
class ParseOptions:
    """How to read a source: region for national numbers, timezone of PBX timestamps."""

    default_region: str | None = None
    #: the zone of the source's times written without an offset (None: unknown)
    timezone: str | None = None
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


#: a quoted field may span lines, but a record that never closes its quote stops being merged
#: after this many lines or bytes: its first line is then read as a (malformed) record alone
MAX_RECORD_LINES = 1000
MAX_RECORD_BYTES = 1 << 20
BOM = b"\xef\xbb\xbf"


def _decoded_lines(data: bytes) -> tuple[list[str], list[bool]]:
    """Lines of a chunk that is not valid UTF-8: each decoded alone, the invalid ones flagged
    (their text keeps the bytes as `\\x..` escapes, for the encrypted quarantine only)."""
    raw = data.split(b"\n")
    if data.endswith(b"\n"):
        raw.pop()
    texts, bad = [], []
    for line in raw:
        try:
            texts.append(line.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            texts.append(line.decode("utf-8", "backslashreplace"))
            bad.append(True)
    return texts, bad


def _lines_frame(data: bytes, first_line: int) -> pl.DataFrame:
    """Physical lines of a chunk, numbered (`source_line`, `line`, `bad_encoding`); blank lines
    included (filtered by the caller)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        texts, flags = _decoded_lines(data)
        lines = pl.Series("line", texts, dtype=pl.String)
        bad = pl.Series("bad_encoding", flags, dtype=pl.Boolean)
    else:
        lines = _split_lines(data)
        bad = pl.repeat(False, len(lines), dtype=pl.Boolean, eager=True).alias("bad_encoding")
    return pl.DataFrame(
        {
            "source_line": pl.int_range(
                first_line, first_line + len(lines), dtype=pl.Int64, eager=True
            ),
            "line": lines.str.strip_suffix("\r"),
            "bad_encoding": bad,
        }
    )


def _split_lines(data: bytes) -> pl.Series:
    """The lines of valid UTF-8 bytes, split on `\\n` (the CSV reader is the fast path)."""
    expected = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if b"\x1f" not in data and b"\n\n" not in data and not data.startswith(b"\n"):
        # The CSV reader with a separator and quote that never occur splits lines.
        frame = pl.read_csv(
            data, has_header=False, separator="\x1f", quote_char=None, schema={"line": pl.String}
        )
        if len(frame) == expected:
            return frame.get_column("line").fill_null("")
    text = data.decode("utf-8")
    lines = pl.Series("line", [text]).str.split("\n").explode()
    return lines.head(len(lines) - 1) if text.endswith("\n") else lines


def _byte_chunks(path: Path, batch_rows: int, cr_ends: bool = False) -> Iterator[bytes]:
    """The file in blocks cut after a `\n`, BOM removed; a line is never split across blocks.

    With `cr_ends` (CSV, whose readers end a line at a bare `\r` too, as old Mac exports
    write them) a bare `\r` is read as `\n`, so that two records are never merged into one."""
    chunk_bytes = max(batch_rows * BYTES_PER_ROW, 1 << 16)
    carry = b""
    first = True
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            data = carry + block
            held = b""
            if cr_ends:
                if block and data.endswith(b"\r"):  # maybe the first half of a CRLF
                    data, held = data[:-1], b"\r"
                if data.count(b"\r") != data.count(b"\r\n"):
                    data = _BARE_CR.sub(b"\n", data)
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data + held
                    continue
                data, carry = data[: cut + 1], data[cut + 1 :] + held
            else:
                carry = b""
            if first and data.startswith(BOM):
                data = data[len(BOM) :]
            first = False
            if data:
                yield data
            if not block:
                return


_BARE_CR = re.compile(rb"\r(?!\n)")


def _opens_quote(line: str, inside: bool, sep: str) -> bool:
    """Whether a quoted field is still open at the end of `line` (quotes count only at the
    start of a field; `""` inside one is an escaped quote)."""
    i = 0
    while True:
        if inside:
            j = line.find('"', i)
            if j < 0:
                return True
            if line.startswith('"', j + 1):
                i = j + 2
                continue
            inside, i = False, j + 1
        elif i == 0 and line.startswith('"'):
            inside, i = True, 1
        else:
            j = line.find(sep + '"', i)
            if j < 0:
                return False
            inside, i = True, j + 2


Row = tuple[int, str, bool]


def _merge_quoted(
    frame: pl.DataFrame, pending: list[Row], sep: str, final: bool
) -> tuple[pl.DataFrame, list[Row], bool]:
    """Join the lines of records whose quoted fields hold newlines: (records, still open, merged).

    A record is numbered by its first line. The open record at the end of a chunk is carried
    into the next one. One that never closes (bounded by MAX_RECORD_LINES/BYTES, or the end of
    the file) gives up its first line as a record alone, and the lines after it are read again.
    """
    opener = rf'(?:^|{re.escape(sep)})"(?:[^"]|"")*$'
    if not pending and not frame.get_column("line").str.contains(opener).any() and not final:
        return frame, [], False
    queue: deque[Row] = deque(pending)
    queue.extend(frame.select("source_line", "line", "bad_encoding").iter_rows())
    out: list[Row] = []
    record: list[Row] = []
    size = 0
    while queue:
        row = queue.popleft()
        if not record:
            if _opens_quote(row[1], False, sep):
                record, size = [row], len(row[1])
            else:
                out.append(row)
            continue
        record.append(row)
        size += len(row[1]) + 1
        if not _opens_quote(row[1], True, sep):
            text = "\n".join(r[1] for r in record)
            out.append((record[0][0], text, any(r[2] for r in record)))
            record = []
        elif len(record) > MAX_RECORD_LINES or size > MAX_RECORD_BYTES:
            out.append(record[0])
            queue.extendleft(reversed(record[1:]))
            record = []
        if final and not queue and record:
            out.append(record[0])
            queue.extend(record[1:])
            record = []
    if final and record:
        out.append(record[0])
        out.extend(record[1:])  # unreachable in practice: the loop re-reads them
        record = []
    merged = pl.DataFrame(
        out,
        schema={"source_line": pl.Int64, "line": pl.String, "bad_encoding": pl.Boolean},
        orient="row",
    )
    return merged, record, True


def iter_line_chunks(
    path: Path, batch_rows: int, skip_header: bool = False, quoted_sep: str | None = None
) -> Iterator[tuple[pl.DataFrame, bytes | None]]:
    """Batches of non-blank records (`source_line`, `line`, `bad_encoding`), streamed.

    `source_line` is the 1-based physical line number in the file (of a record's first line).
    Blank lines are not records; a header is the first non-blank line. With `quoted_sep`, a
    record's quoted fields may hold newlines (CSV). The chunk's bytes come along when its
    records are exactly its lines (so a CSV reader may parse them in one pass), else None.
    """
    line_no = 0
    pending: list[Row] = []
    header = skip_header
    for data in _byte_chunks(path, batch_rows, cr_ends=quoted_sep is not None):
        frame = _lines_frame(data, line_no + 1)
        line_no += len(frame)
        exact = not frame.get_column("bad_encoding").any()
        if header:
            blank = frame.get_column("line").str.strip_chars() == ""
            if blank.all():
                continue
            first = int(blank.arg_min() or 0)
            frame = frame.slice(first + 1)
            data = data.split(b"\n", first + 1)[-1]
            header = False
        if quoted_sep is not None:
            frame, pending, merged = _merge_quoted(frame, pending, quoted_sep, final=False)
            exact = exact and not merged
        records = len(frame)
        frame = frame.filter(pl.col("line").str.strip_chars() != "")
        if len(frame):
            yield frame, (data if exact and len(frame) == records else None)
    if pending:
        assert quoted_sep is not None
        empty = pl.DataFrame(schema={"source_line": pl.Int64, "line": pl.String, "bad_encoding": pl.Boolean})  # fmt: skip
        frame, _, _ = _merge_quoted(empty, pending, quoted_sep, final=True)
        yield frame.filter(pl.col("line").str.strip_chars() != ""), None


def iter_lines(path: Path, batch_rows: int, skip_header: bool = False) -> Iterator[pl.DataFrame]:
    """Batches of non-blank numbered lines (see `iter_line_chunks`)."""
    for frame, _ in iter_line_chunks(path, batch_rows, skip_header):
        yield frame


def first_line(head: bytes) -> bytes:
    """The first non-blank line of a file's first bytes, without BOM or line end."""
    if head.startswith(BOM):
        head = head[len(BOM) :]
    for line in head.split(b"\n"):
        if line.strip():
            return line.rstrip(b"\r")
    return b""


def first_record(head: bytes, sep: str = ",") -> list[str]:
    """The fields of the first CSV record in a file's first bytes (blank lines and BOM skipped;
    a quoted field may span lines)."""
    if head.startswith(BOM):
        head = head[len(BOM) :]
    text = head.decode("utf-8", "replace").lstrip("\r\n \t")
    try:
        return next(csv.reader(io.StringIO(text, newline=""), delimiter=sep), [])  # any line end
    except csv.Error:
        return []


def field_count(line: pl.Expr, sep: str = ",") -> pl.Expr:
    """Fields in a CSV line, counting separators outside double-quoted sections."""
    unquoted = (
        pl.when(line.str.contains('"', literal=True))
        .then(line.str.replace_all(r'"(?:[^"]|"")*"', ""))
        .otherwise(line)
    )
    return unquoted.str.count_matches(sep, literal=True) + 1


def split_csv(
    lines: pl.DataFrame, data: bytes | None, names: list[str], allowed: set[int], sep: str = ","
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split records into string fields; (good rows with `source_line`/`raw`, bad rows).

    Each record is checked on its own: its field count must be one of `allowed` (the header's,
    or the format's documented widths) and the reader must have found exactly those fields;
    else it is bad (`wrong_column_count`), as is a record that is not UTF-8 (`bad_encoding`).
    Neighbours are never reshaped: the reader is told the widest row, not guessing it from the
    first. Short rows are padded to `names` with nulls.
    """
    width = max(allowed)
    columns = [f"_f{i}" for i in range(width + 1)]  # one more: a longer row shows in it
    counted = lines.with_columns(field_count(pl.col("line"), sep).alias("_n"))
    fields = _read_fields(data, sep, columns) if data is not None else None
    if fields is None or len(fields) != len(counted):
        text = "\n".join(counted.get_column("line").to_list()) + "\n"
        fields = _read_fields(text.encode(), sep, columns)
    if fields is None or len(fields) != len(counted):
        fields = _python_fields(counted.get_column("line").to_list(), sep, columns)
    counted = counted.with_columns(fields)
    exact = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.lit(i) < pl.col("_n")) for i, c in enumerate(columns)]
    )
    ok = pl.col("_n").is_in(sorted(allowed)) & exact & ~pl.col("bad_encoding")
    bad = counted.filter(~ok).select(
        "source_line",
        pl.when(pl.col("bad_encoding"))
        .then(pl.lit("bad_encoding"))
        .otherwise(pl.lit("wrong_column_count"))
        .alias("parse_error"),
        pl.col("line").alias("raw"),
    )
    good = counted.filter(ok).select(
        "source_line",
        pl.col("line").alias("raw"),
        *[
            pl.col(c).str.strip_chars().replace("", None).alias(n)
            for c, n in zip(columns, names, strict=False)
        ],
    )
    return good, bad


def csv_batches(
    path: Path,
    batch_rows: int,
    names: list[str],
    allowed: set[int],
    mapping: Callable[[pl.DataFrame], pl.DataFrame],
    skip_header: bool = False,
    sep: str = ",",
) -> Iterator[pl.DataFrame]:
    """Parsed batches of a CSV source: good rows through the format's `mapping`, bad rows
    kept alongside, so every CSV format splits, maps and keeps its rejects the same way (a
    column only the mapping adds, such as a canonical file's claims, is null in bad rows)."""
    for lines, data in iter_line_chunks(path, batch_rows, skip_header, quoted_sep=sep):
        good, bad = split_csv(lines, data, names, allowed, sep)
        yield pl.concat([mapping(good), conform(bad, PARSED)], how="diagonal")


def _read_fields(data: bytes, sep: str, columns: list[str]) -> pl.DataFrame | None:
    """All fields of CSV records as strings, `columns` wide; None if they cannot be read.

    A header naming `columns` goes first, so the reader's width is the widest allowed row
    whatever the first record holds.
    """
    header = sep.join(columns).encode() + b"\n"
    try:
        return pl.read_csv(
            header + data,
            has_header=True,
            separator=sep,
            infer_schema=False,
            truncate_ragged_lines=True,
        )
    except pl.exceptions.PolarsError:
        return None


def _python_fields(records: list[str], sep: str, columns: list[str]) -> pl.DataFrame:
    """Records read one by one with the standard library (odd quoting); one that does not read
    as exactly one row gets a value in the extra column, so it is counted wrong."""
    rows = []
    for text in records:
        try:
            parsed = list(csv.reader(io.StringIO(text), delimiter=sep))
        except csv.Error:
            parsed = []
        if len(parsed) != 1:
            rows.append([None] * (len(columns) - 1) + ["?"])
        else:
            rows.append((parsed[0] + [None] * len(columns))[: len(columns)])
    return pl.DataFrame(rows, schema=columns, orient="row")


def _has_offset(fmt: str) -> bool:
    return "%z" in fmt or fmt == "%+"


def _to_utc(s: pl.Series, fmt: str, tz: str | None) -> pl.Series:
    """Values in one format as UTC; a format without an offset needs the source's zone `tz`
    (None: unknown, so nothing in it is placed in time)."""
    if _has_offset(fmt):
        return s.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
    if tz is None:
        return pl.Series(s.name, [None] * len(s), UTC_TS)
    naive = s.str.to_datetime(fmt, strict=False, time_unit="us")
    return (
        naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .cast(UTC_TS)
    )


def with_timestamps(
    df: pl.DataFrame, columns: dict[str, str], formats: list[str], tz: str | None
) -> pl.DataFrame:
    """Add `{column: out}` UTC timestamps, trying each format in turn; null where none fits.

    Formats with an offset (`%z`, `%+`) carry their own zone; the others are read in `tz`, the
    source's zone. Where the zone is unknown (None) a time written without an offset is never
    assumed UTC: it is null, and `<out>_no_offset` marks it (`no_offset`). Later formats are
    tried only on the values the earlier ones left unparsed, so the common case costs one
    parse. A leap second is read as the end of its minute (`formats.LEAP_SECOND`).
    """
    added = []
    for col, out in columns.items():
        s = df.get_column(col).str.strip_chars()
        if s.str.contains(":60", literal=True).any():
            s = s.str.replace(LEAP_SECOND, f"${{1}}:{LEAP_SECOND_AS}")
        parsed = _to_utc(s, formats[0], tz)
        for fmt in formats[1:]:
            missing = parsed.is_null() & s.is_not_null()
            if not missing.any():
                break
            parsed = parsed.scatter(missing.arg_true(), _to_utc(s.filter(missing), fmt, tz))
        naive = pl.repeat(False, len(s), dtype=pl.Boolean, eager=True)
        if tz is None and (unplaced := parsed.is_null() & s.is_not_null()).any():
            for fmt in (f for f in formats if not _has_offset(f)):
                as_naive = s.str.to_datetime(fmt, strict=False, time_unit="us")
                naive = naive | (unplaced & as_naive.is_not_null())
        added += [parsed.alias(out), naive.alias(f"{out}_no_offset")]
    return df.with_columns(added)


def no_offset(out: str) -> tuple[pl.Expr, str]:
    """The reason of a time written without an offset by a source whose zone is unknown."""
    return pl.col(f"{out}_no_offset"), "bad_timestamp:no_offset"


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
