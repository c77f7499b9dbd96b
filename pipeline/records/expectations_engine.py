"""The expectation suites evaluated by polars, batch by batch, with Great Expectations' results.

The JSON suites in `pipeline/expectations/` stay the one definition of the rules. `compile_suite` turns each
expectation configuration into polars expressions; `SuiteTally.add` evaluates them on every batch
as the ingest transforms it, and `SuiteTally.results` merges the batches into the result fields
GX's own engine reports for the whole file (element, unexpected and missing counts and percents,
success), so the Data Docs page of a file of 10 M rows reads like one GX validated whole.

Supported (anything else is refused when the suite loads, never skipped):
- `expect_table_columns_to_match_ordered_list`;
- `expect_column_values_to_not_be_null`, `expect_column_values_to_be_null`;
- `expect_column_values_to_be_unique`, `expect_compound_columns_to_be_unique` (over the file);
- `expect_column_values_to_be_between` (numbers, or ISO timestamps for a temporal column);
- `expect_column_values_to_be_in_set`;
- `expect_column_values_to_match_regex`, `expect_column_values_to_not_match_regex`;
each with `mostly`, and a `row_condition` of the forms `col == "v"`, `col != "v"` or
`col in ["v", ...]` (`condition_parser` "pandas"), as the suites write them.

Failing rows are named by `record_id` only (`unexpected_index_column_names`), never by value.
Uniqueness holds across the whole file: each value's 128-bit fingerprint is spilled to a local
bucket file, and the buckets are counted one at a time at the end, so memory stays bounded by one
batch and one bucket whatever the file size.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

#: record ids listed per failed expectation (GX's SUMMARY format lists 20 values)
PARTIAL = 20
#: rows are identified by this column in results; its values are record ids, never identifiers
INDEX_COLUMN = "record_id"
#: spill buckets for the file-wide uniqueness count (memory: one bucket, 1/BUCKETS of the file)
BUCKETS = 32
#: a batch with at most this many distinct values in a regex-checked column is searched with
#: Python's `re` (compiled once), a bigger one with polars' engine (compiled each call)
PYTHON_REGEX_DISTINCT = 4096
#: a pattern up to this long is matched on every row by polars; a longer one (the identifier
#: detector's, tens of kilobytes) once per distinct value (`_per_distinct`). Matching each row
#: of a column whose values are all distinct (`identity_commitment`) costs a third of finding
#: its distinct values first.
SHORT_PATTERN = 512
#: fingerprints kept in memory per uniqueness check before they are spilled (4 MiB)
MEMORY_PAIRS = 1 << 18

_COMMON = frozenset({"row_condition", "condition_parser", "mostly"})
#: each supported expectation type, and the kwargs it may carry
SUPPORTED: dict[str, frozenset[str]] = {
    "expect_table_columns_to_match_ordered_list": frozenset({"column_list"}),
    "expect_column_values_to_not_be_null": _COMMON | {"column"},
    "expect_column_values_to_be_null": _COMMON | {"column"},
    "expect_column_values_to_be_unique": _COMMON | {"column"},
    "expect_compound_columns_to_be_unique": _COMMON | {"column_list", "ignore_row_if"},
    "expect_column_values_to_be_between": _COMMON
    | {"column", "min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": _COMMON | {"column", "value_set"},
    "expect_column_values_to_match_regex": _COMMON | {"column", "regex"},
    "expect_column_values_to_not_match_regex": _COMMON | {"column", "regex"},
}
#: null-count expectations: no "missing" values, every row in the domain counts
_NULL_CHECKS = frozenset({"expect_column_values_to_not_be_null", "expect_column_values_to_be_null"})
_UNIQUE = frozenset({"expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"})

_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
_TEXT = r'"((?:[^"\\]|\\.)*)"'
_EQ = re.compile(rf"^\s*{_NAME}\s*(==|!=)\s*{_TEXT}\s*$")
_IN = re.compile(rf"^\s*{_NAME}\s+in\s+\[(.*)\]\s*$")


class SuiteError(ValueError):
    """A suite the evaluator cannot run exactly as GX would: refused when it loads."""


def row_condition(text: str) -> tuple[pl.Expr, tuple[str, ...]]:
    """A pandas `row_condition` as a polars filter (null compares false, as in pandas)."""
    if m := _EQ.match(text):
        col, op, value = m.group(1), m.group(2), _unquote(m.group(3))
        expr = pl.col(col) == value if op == "==" else pl.col(col) != value
        return expr.fill_null(op == "!="), (col,)
    if m := _IN.match(text):
        values = [_unquote(v) for v in re.findall(_TEXT, m.group(2))]
        rest = re.sub(_TEXT, "", m.group(2)).replace(",", "").strip()
        if not rest:
            return pl.col(m.group(1)).is_in(values).fill_null(False), (m.group(1),)
    raise SuiteError(f'row condition {text!r}: only `col == "v"`, `!=` or `in [...]`')


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@functools.lru_cache(maxsize=64)
def python_regex(pattern: str) -> str:
    """The pattern rewritten so polars' engine matches what Python's `re.search` (GX's pandas
    engine) matches: `$` also before a final newline, `\\s` also the separators \\x1c-\\x1f,
    `\\Z` the end of the text. Refused if polars' engine cannot compile it (e.g. lookarounds).
    Cached: the identifier detector's pattern (tens of kilobytes, read a character at a time)
    is used by nine expectations of each suite, and took half a second a process."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(r"\s\x1c-\x1f" if in_class else r"[\s\x1c-\x1f]")
            elif nxt == "S" and not in_class:
                out.append(r"[^\s\x1c-\x1f]")
            elif nxt == "Z" and not in_class:
                out.append(r"\z")
            elif nxt == "S":
                raise SuiteError(f"regex {pattern!r}: \\S inside a class is not supported")
            else:
                out.append(ch + nxt)
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            out.append(ch)
            if pattern[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                out.append(r"\]")
                i += 1
        elif ch == "]" and in_class:
            in_class = False
            out.append(ch)
        elif ch == "$" and not in_class:
            out.append(r"(?:\n?\z)")
        else:
            out.append(ch)
        i += 1
    translated = "".join(out)
    try:
        pl.Series([""]).str.contains(translated)
    except pl.exceptions.PolarsError as exc:
        raise SuiteError(f"regex {pattern!r} cannot be evaluated by polars: {exc}") from None
    return translated


@dataclass
class Check:
    """One expectation of a suite, compiled: what it reads and how a row fails it."""

    index: int
    config: dict[str, Any]
    domain: pl.Expr  # rows the expectation considers (its row condition)
    reads: tuple[str, ...]
    conditioned: bool = False
    #: for column-map checks: a row in the domain whose value is present but wrong
    bad: pl.Expr | None = None
    #: for uniqueness: the value(s) fingerprinted over the file
    key: tuple[str, ...] = ()
    #: its three counts as expressions, built once (`_counts`)
    counted: list[pl.Expr] | None = field(default=None, repr=False, compare=False)

    @property
    def type(self) -> str:
        return str(self.config["type"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.config["kwargs"])


@dataclass
class CompiledSuite:
    name: str
    checks: list[Check]
    columns: list[str] | None = None  # the ordered column list, when the suite has one


def compile_suite(suite: dict[str, Any]) -> CompiledSuite:
    """Each expectation as polars expressions; an expectation GX would read differently, or one
    the evaluator does not know, is refused here with its name."""
    name = suite["name"]
    out = CompiledSuite(name, [])
    for index, config in enumerate(suite["expectations"]):
        kind, kwargs = config["type"], config["kwargs"]
        if kind not in SUPPORTED:
            raise SuiteError(
                f"suite {name}: {kind} is not supported by the batch evaluator "
                f"(supported: {', '.join(sorted(SUPPORTED))})"
            )
        if unknown := set(kwargs) - SUPPORTED[kind]:
            raise SuiteError(f"suite {name}: {kind} with {sorted(unknown)} is not supported")
        if kwargs.get("condition_parser", "pandas") != "pandas":
            raise SuiteError(f"suite {name}: {kind}: only the pandas condition parser")
        if kind == "expect_table_columns_to_match_ordered_list":
            out.columns = list(kwargs["column_list"])
            out.checks.append(Check(index, config, pl.lit(True), ()))
            continue
        domain, reads = pl.lit(True), ()
        if kwargs.get("row_condition"):
            domain, reads = row_condition(kwargs["row_condition"])
        check = Check(index, config, domain, reads, bool(kwargs.get("row_condition")))
        out.checks.append(_compile(check, name))
    return out


def _compile(check: Check, suite: str) -> Check:
    kind, kwargs = check.type, check.kwargs
    if kind == "expect_compound_columns_to_be_unique":
        if kwargs.get("ignore_row_if", "all_values_are_missing") != "all_values_are_missing":
            raise SuiteError(f"suite {suite}: {kind}: only ignore_row_if all_values_are_missing")
        check.key = tuple(kwargs["column_list"])
        check.reads = (*check.reads, *check.key)
        return check
    column = kwargs["column"]
    check.reads = (*check.reads, column)
    col = pl.col(column)
    if kind == "expect_column_values_to_not_be_null":
        check.bad = col.is_null()
    elif kind == "expect_column_values_to_be_null":
        check.bad = col.is_not_null()
    elif kind == "expect_column_values_to_be_unique":
        check.key = (column,)
    elif kind == "expect_column_values_to_be_in_set":
        check.bad = ~col.is_in(list(kwargs["value_set"]))
    elif kind in ("expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex"):
        pattern = kwargs["regex"]
        if len(pattern) <= SHORT_PATTERN:  # cheap to compile and to match: every row at once
            found = col.str.contains(python_regex(pattern))
        else:
            found = col.map_batches(_per_distinct(python_regex(pattern), pattern), pl.Boolean)
        check.bad = ~found if kind == "expect_column_values_to_match_regex" else found
    elif kind == "expect_column_values_to_be_between":
        check.bad = ~_between(col, kwargs)
    return check


def _per_distinct(regex: str, original: str) -> Any:
    """`str.contains(regex)` with each distinct value matched once: statuses, customers and
    countries repeat on every row, and a long pattern (the identifier detector's) costs
    microseconds a value. Null where the value is null, as `str.contains` gives.

    A batch of few distinct values is searched with Python's `re` (the suite's own pattern,
    compiled once a process): polars compiles its pattern on every call, which for the
    identifier detector's (tens of kilobytes) costs more than a small file's whole search."""

    def contains(values: pl.Series) -> pl.Series:
        distinct = values.unique()
        if len(distinct) <= PYTHON_REGEX_DISTINCT:
            search = _compiled(original).search
            hits = pl.Series([v for v in distinct.drop_nulls().to_list() if search(v)], dtype=pl.String)  # fmt: skip
        else:
            hits = distinct.filter(distinct.str.contains(regex).fill_null(False))
        return pl.select(
            pl.when(values.is_null()).then(None).otherwise(values.is_in(hits.implode()))
        ).to_series()

    return contains


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _bound(value: Any) -> Any:
    """A bound as polars compares it: ISO text becomes an aware datetime (UTC if no offset)."""
    import datetime as dt

    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return value


def _between(col: pl.Expr, kwargs: dict[str, Any]) -> pl.Expr:
    ok = pl.lit(True)
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None:
        ok = ok & (col > _bound(low) if kwargs.get("strict_min") else col >= _bound(low))
    if high is not None:
        ok = ok & (col < _bound(high) if kwargs.get("strict_max") else col <= _bound(high))
    return ok


@dataclass
class Tally:
    """One expectation's counts so far over the file's batches."""

    element: int = 0
    missing: int = 0
    unexpected: int = 0
    ids: list[Any] = field(default_factory=list)
    error: str | None = None
    observed: list[str] | None = None


class Repeats:
    """Rows whose value repeats anywhere in the file, counted as GX does (every occurrence).

    Each value's 128-bit fingerprint (two seeded 64-bit hashes) is kept in memory up to
    `MEMORY_PAIRS` fingerprints (16 bytes each); past that, every fingerprint goes to one of
    BUCKETS local files by its top bits, and `count` reads one bucket at a time, so memory is
    bounded by a bucket (1/BUCKETS of the file's values) instead of the file. A small file
    never touches the disk.
    """

    def __init__(self, folder: Callable[[], Path]) -> None:
        self._folder = folder
        self._files: list[Path] = []
        self._held: list[np.ndarray] = []
        self._held_pairs = 0
        #: integers seen so far, while every batch of an integer key has come in increasing
        #: order after all before it (a file's `leaf_index`): each batch's first and last value
        #: and which values between them it holds (`_held_values`; None when it holds them all)
        self._runs: list[tuple[int, int, np.ndarray | None]] | None = []
        self._run_bytes = 0

    def add(self, keys: pl.DataFrame) -> None:
        if self._runs is not None and self._increasing(keys):
            return
        self._fingerprint(keys)

    def _increasing(self, keys: pl.DataFrame) -> bool:
        """Whether the batch is one integer key in strictly increasing order, all after every
        value seen so far, so it repeats nothing: kept as a run (`_runs`). On the first batch
        that is not, the runs kept so far are fingerprinted, and counting goes on as for any
        key."""
        column = keys.get_column(keys.columns[0])
        if len(keys.columns) == 1 and column.dtype in _RUN_TYPES and not column.null_count():
            values = column.to_numpy().astype(np.int64)
            first, last = int(values[0]), int(values[-1])
            if (not self._runs or first > self._runs[-1][1]) and bool((np.diff(values) > 0).all()):  # fmt: skip
                held = None if last - first == len(values) - 1 else _held_values(values - first)
                size = 0 if held is None else held.nbytes
                if self._run_bytes + size <= MEMORY_PAIRS * 16:  # no more than fingerprints
                    self._runs.append((first, last, held))
                    self._run_bytes += size
                    return True
        runs, self._runs = self._runs or [], None
        for first, last, held in runs:
            offsets = np.arange(last - first + 1, dtype=np.int64) if held is None else held
            if offsets.dtype == np.uint8:  # a bitmap
                offsets = np.flatnonzero(np.unpackbits(offsets, count=last - first + 1))
            for start in range(0, len(offsets), MEMORY_PAIRS):
                chunk = pl.Series(keys.columns[0], offsets[start : start + MEMORY_PAIRS] + first)
                self._fingerprint(chunk.cast(column.dtype).to_frame())
        return False

    def _fingerprint(self, keys: pl.DataFrame) -> None:
        hashed = keys.select(
            pl.struct(pl.all()).hash(seed=0).alias("hi"),
            pl.struct(pl.all()).hash(seed=0x5EED).alias("lo"),
        )
        pairs = np.stack([hashed.get_column("hi").to_numpy(), hashed.get_column("lo").to_numpy()], axis=1)  # fmt: skip
        self._held.append(pairs)
        self._held_pairs += len(pairs)
        if self._held_pairs > MEMORY_PAIRS:
            self._spill()

    def _spill(self) -> None:
        """Append the fingerprints held in memory to the bucket files."""
        if not self._files:
            folder = self._folder()
            self._files = [folder / f"{b:02d}.bin" for b in range(BUCKETS)]
        pairs = np.concatenate(self._held) if self._held else np.empty((0, 2), np.uint64)
        self._held, self._held_pairs = [], 0
        bucket = ((pairs[:, 0] >> np.uint64(59)) % np.uint64(BUCKETS)).astype(np.uint8)
        order = np.argsort(bucket, kind="stable")  # a radix sort: one byte a key
        bounds = np.searchsorted(bucket[order], np.arange(BUCKETS + 1))
        pairs = pairs[order]
        for b in range(BUCKETS):
            if bounds[b + 1] > bounds[b]:
                with open(self._files[b], "ab") as f:
                    pairs[bounds[b] : bounds[b + 1]].tofile(f)

    def count(self) -> int:
        if not self._files:  # all in memory
            return _duplicated(np.concatenate(self._held)) if self._held else 0
        self._spill()
        return sum(
            _duplicated(np.fromfile(path, dtype=np.uint64).reshape(-1, 2))
            for path in self._files
            if path.exists()
        )


#: integer types whose every value an int64 holds (a UInt64 beyond it would wrap around)
_RUN_TYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)


def _held_values(offsets: np.ndarray) -> np.ndarray:
    """A gapped run's values, as offsets from its first: a packed bitmap of the run's length
    (uint8) where that is smaller than the offsets themselves (int64), else the offsets."""
    span = int(offsets[-1]) + 1
    if span // 8 >= offsets.nbytes:
        return offsets
    bits = np.zeros(span, dtype=bool)
    bits[offsets] = True
    return np.packbits(bits)


def _duplicated(pairs: np.ndarray) -> int:
    """How many of the fingerprints occur more than once (every occurrence counted)."""
    frame = pl.DataFrame({"hi": pairs[:, 0], "lo": pairs[:, 1]})
    return int(frame.select(pl.struct("hi", "lo").is_duplicated().sum()).item())


class SuiteTally:
    """A compiled suite evaluated over one file's batches; `results` gives the merged verdict.

    A tally is fed from one thread (the tier writer that owns its tier).
    """

    def __init__(self, suite: CompiledSuite, index_column: str | None = INDEX_COLUMN) -> None:
        self.suite = suite
        self.rows = 0
        self._index = index_column
        self._tallies = {c.index: Tally() for c in suite.checks}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._repeats: dict[int, Repeats] = {}

    def _spill(self, check: Check) -> Repeats:
        if check.index not in self._repeats:

            def folder() -> Path:
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="cdr-unique-")
                path = Path(self._tmp.name) / str(check.index)
                path.mkdir()
                return path

            self._repeats[check.index] = Repeats(folder)
        return self._repeats[check.index]

    def add(self, frame: pl.DataFrame) -> None:
        """Evaluate every expectation on one batch (all counts in one parallel polars pass)."""
        self.rows += len(frame)
        present = set(frame.columns)
        aggs: list[pl.Expr] = []
        live: list[Check] = []
        for check in self.suite.checks:
            tally = self._tallies[check.index]
            if check.type == "expect_table_columns_to_match_ordered_list":
                tally.observed = tally.observed or list(frame.columns)
                continue
            if missing := [c for c in check.reads if c not in present]:
                tally.error = f"column(s) {', '.join(missing)} not in the data"
                continue
            live.append(check)
            aggs += _counts(check)
        if not live:
            return
        counts = frame.select(aggs).row(0)
        for n, check in enumerate(live):
            tally = self._tallies[check.index]
            element, missing, unexpected = counts[3 * n : 3 * n + 3]
            tally.element += element
            tally.missing += missing
            if check.key:
                self._unique(check, frame)
                continue
            tally.unexpected += unexpected
            if unexpected and self._index in present and len(tally.ids) < PARTIAL:
                assert check.bad is not None
                rows = frame.filter(check.domain & _present(check) & check.bad)
                tally.ids += rows.get_column(self._index).head(PARTIAL - len(tally.ids)).to_list()

    def _unique(self, check: Check, frame: pl.DataFrame) -> None:
        keys = frame.filter(check.domain & _present(check)).select(check.key)
        if len(keys):
            self._spill(check).add(keys)

    def results(self) -> list[tuple[dict[str, Any], bool, dict[str, Any], str | None]]:
        """(expectation config, success, GX result fields, exception message) per expectation,
        in suite order, over every batch added."""
        out = []
        for check in self.suite.checks:
            tally = self._tallies[check.index]
            if check.key and check.index in self._repeats:
                tally.unexpected = self._repeats[check.index].count()
            out.append((check.config, *_result(check, tally, self._index), tally.error))
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp, self._repeats = None, {}
        return out


def _present(check: Check) -> pl.Expr:
    """Rows with a value to judge: GX leaves out nulls (for compound keys: all-null rows)."""
    if check.type in _NULL_CHECKS:
        return pl.lit(True)
    if check.type == "expect_compound_columns_to_be_unique":
        return ~pl.all_horizontal(pl.col(c).is_null() for c in check.key)
    return pl.col(check.kwargs["column"]).is_not_null()


def _counts(check: Check) -> list[pl.Expr]:
    """Element, missing and unexpected counts of one check on a batch (three sums), built
    once a suite: building expressions costs more than evaluating them on a small batch."""
    if check.counted is None:
        check.counted = _count_exprs(check)
    return check.counted


def _count_exprs(check: Check) -> list[pl.Expr]:
    d = check.domain
    n = check.index
    missing = pl.lit(0) if check.type in _NULL_CHECKS else (d & ~_present(check))
    bad = (d & _present(check) & check.bad) if check.bad is not None else pl.lit(0)
    return [
        (d.cast(pl.Int64).sum() if check.conditioned else pl.len()).alias(f"e{n}"),
        missing.cast(pl.Int64).sum().alias(f"m{n}"),
        bad.cast(pl.Int64).sum().alias(f"u{n}"),
    ]


def _pct(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


def _result(check: Check, t: Tally, index: str | None) -> tuple[bool, dict[str, Any]]:
    """GX's success rule and SUMMARY result fields, record ids in place of values."""
    if check.type == "expect_table_columns_to_match_ordered_list":
        expected = check.kwargs["column_list"]
        observed = t.observed or []
        result: dict[str, Any] = {"observed_value": observed}
        if observed != expected:
            result["details"] = {"mismatched": _mismatched(expected, observed)}
        return observed == expected, result
    if t.error:
        return False, {}
    considered = t.element - t.missing
    mostly = check.kwargs.get("mostly", 1.0)
    success = considered == 0 or (considered - t.unexpected) / considered >= mostly
    ids = [{index: i} for i in t.ids] if index else []
    result = {
        "element_count": t.element,
        "unexpected_count": t.unexpected,
        "unexpected_percent": _pct(t.unexpected, considered),
        "partial_unexpected_list": [],
        "partial_unexpected_counts": [],
    }
    if index:
        result["unexpected_index_column_names"] = [index]
        result["partial_unexpected_index_list"] = ids
    if check.type not in _NULL_CHECKS:
        result.update(
            missing_count=t.missing,
            missing_percent=_pct(t.missing, t.element),
            unexpected_percent_total=_pct(t.unexpected, t.element),
            unexpected_percent_nonmissing=_pct(t.unexpected, considered),
        )
    return success, result


def _mismatched(expected: list[str], observed: list[str]) -> list[dict[str, Any]]:
    out = []
    for i in range(max(len(expected), len(observed))):
        e = expected[i] if i < len(expected) else None
        o = observed[i] if i < len(observed) else None
        if e != o:
            out.append({"Expected Column Position": i, "Expected": e, "Found": o})
    return out
