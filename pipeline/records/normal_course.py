"""The normal-course changes (docs/design.md, "Normal-course changes") to the fields a record keeps as
its source wrote them, defined once.

Ingest makes them (`transform`); `verify --deep` applies the same definition to the original it
re-reads with the reference readers, so it flags exactly what differs beyond them. A change
made at ingest and missing here shows as a false alarm in the deep-verify tests, and one made
here but not at ingest as a missed difference.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from pipeline.records.freetext import kept_forms
from pipeline.records.schema import CHANNELS, CURRENCIES, DIRECTIONS, FREE_TEXT_COLUMNS, OTHER


def _lower(raw: pl.Expr) -> pl.Expr:
    return raw.str.to_lowercase()


def _code(raw: pl.Expr) -> pl.Expr:
    return raw.str.strip_chars().str.to_uppercase()


#: enumerated column → how a value is read (`SMS` is `sms`, `pkr ` is `PKR`) and its vocabulary
VOCABULARIES: dict[str, tuple[Callable[[pl.Expr], pl.Expr], tuple[str, ...]]] = {
    "channel": (_lower, CHANNELS),
    "direction": (_lower, DIRECTIONS),
    "currency": (_code, CURRENCIES),
}


def outside(column: str, raw: pl.Expr) -> pl.Expr:
    """Whether a value written in an enumerated column is outside its vocabulary."""
    read, vocabulary = VOCABULARIES[column]
    return raw.is_not_null() & ~read(raw).is_in(vocabulary)


def enumerated(column: str, raw: pl.Expr) -> pl.Expr:
    """An enumerated column as kept: the value as read, or `other` outside the vocabulary."""
    read, _ = VOCABULARIES[column]
    return pl.when(outside(column, raw)).then(pl.lit(OTHER)).otherwise(read(raw))


def channel_detail(raw_channel: pl.Expr, detail: pl.Expr) -> pl.Expr:
    """`channel_detail` before its free-text changes: an unknown channel's text, lower-cased,
    else the detail the source wrote (free text: masked if it holds an identifier)."""
    return pl.when(outside("channel", raw_channel)).then(_lower(raw_channel)).otherwise(detail)


def closed(df: pl.DataFrame) -> pl.DataFrame:
    """The enumerated columns of `df` as kept, with `channel_detail` taking an unknown
    channel's text (all computed from the values as written)."""
    return df.with_columns(
        channel_detail(pl.col("channel"), pl.col("channel_detail")).alias("channel_detail"),
        *[enumerated(c, pl.col(c)).alias(c) for c in VOCABULARIES],
    )


def matches(field: str, original: pl.Expr, kept: pl.Expr, file_key: bytes) -> pl.Expr:
    """Whether `kept` is what ingest keeps of `original` (after `closed`) in `field`: free text
    as read or masked (`freetext.kept_forms`), anything else equal (both null included)."""
    same = (original.is_null() & kept.is_null()) | (original == kept).fill_null(False)
    if field in FREE_TEXT_COLUMNS:
        return same | kept_forms(original, kept, field, file_key).fill_null(False)
    return same
