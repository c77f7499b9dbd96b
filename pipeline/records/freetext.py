"""Free-text fields kept in silver and gold checked for identifiers, row by row.

Sources put what they like in IDs, statuses and network names, and gold keeps them for ten
years, so before a record is kept each free-text column (every column the canonical schema
declares `free_text`: `schema.FREE_TEXT_COLUMNS`) is:

1. cleaned of control and invisible format characters (NUL, zero-width spaces ...), counted as
   `control:<field>`;
2. read as a person would (`fold_lookalikes`: full-width and other scripts' digits as digits,
   a full-width `＠` as `@`) and searched for the record's own end users in any written form
   (the last nine digits of the number, whatever separators surround them; the e-mail or SIP
   address, or its user part) and for anything the identifier detector
   (`pipeline.records.detector`) reads as a possible phone number or address.

A hit replaces the whole value, counted as `masked:<field>`: by `masked` in most fields, and in
`record_id` by `masked-` and 24 letters keyed by the file's data key (`masked_record_id`), so
the record is kept, two IDs never become one, a repeat within the file is still found, and
nothing links the ID to its person once that key is destroyed at the identifier purge.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)

from pipeline.core.layout import DIGIT_LETTERS, HEX_DIGITS
from pipeline.records.detector import identifying
from pipeline.records.normalise import fold_lookalikes
from pipeline.records.schema import FREE_TEXT_COLUMNS

MASK = "masked"
#: how a masked record ID starts; the rest is letters only, so it never reads as a number
MASKED_ID_PREFIX = "masked-"
CONTROL = r"[\p{Cc}\p{Cf}]"
#: How much of a number is enough to recognise it in any written form.
TAIL_DIGITS = 9


def letters_only(hex_digits: pl.Expr) -> pl.Expr:
    """Hex digits written as letters (`0-9` as `g-p`): a digest that never holds a digit run."""
    return hex_digits.str.replace_many(list(HEX_DIGITS), list(DIGIT_LETTERS))


def masked_record_id(record_id: pl.Expr, file_key: bytes) -> pl.Expr:
    """The stand-in for a record ID that holds an identifier: unique per ID within the file,
    and meaningless without the file's data key."""
    mac = record_id.chash.hmac_sha256(key=file_key.hex())  # type: ignore[attr-defined]
    return pl.lit(MASKED_ID_PREFIX) + letters_only(mac.str.slice(0, 24))


def as_read(col: pl.Expr) -> pl.Expr:
    """A source's text as the tiers keep it when nothing in it is masked: control and invisible
    characters removed, look-alike characters read as what they look like."""
    return _folded(col.str.replace_all(CONTROL, ""))


def _folded(col: pl.Expr) -> pl.Expr:
    return col.map_batches(fold_lookalikes, return_dtype=pl.String)


def kept_forms(original: pl.Expr, kept: pl.Expr, field: str, file_key: bytes) -> pl.Expr:
    """Whether `kept` is what ingest keeps of `original` in a free-text field: the text as
    read, or (where the text held an identifier) its mask: `masked`, or in `record_id` the
    stand-in keyed by the file's key. The normal-course changes `verify --deep` accepts."""
    read = as_read(original)
    mask = masked_record_id(read, file_key) if field == "record_id" else pl.lit(MASK)
    return (kept == read) | (original.is_not_null() & (kept == mask))


def _identifying_values(df: pl.DataFrame, fields: list[str], region: str | None) -> pl.Series:
    """The distinct values of `fields` the detector flags, each decided once however many rows
    and fields hold it (statuses, customers and networks repeat)."""
    distinct = pl.concat(
        [pl.Series("v", [], pl.String)]
        + [df.get_column(f).drop_nulls().unique().alias("v") for f in fields]
    ).unique()
    return distinct.filter(distinct.to_frame().select(identifying(pl.col("v"), region)).to_series())


def party_patterns(prefix: str) -> list[pl.Expr]:
    """What of an end user a free text may hold, computed once per distinct address
    (`transform.AddressBook`): the last digits of a number (`tail`), and of an e-mail or SIP
    address its user part, or the whole address where the user part is too short to recognise
    (`name`: a text holding the address holds its user part). Null for anyone else. Reads
    and writes `{prefix}_value`, `_kind`, `_tail`, `_name`."""
    value, kind = pl.col(f"{prefix}_value"), pl.col(f"{prefix}_kind")
    tail = value.str.replace_all(r"[^0-9]", "").str.slice(-TAIL_DIGITS)
    user = value.str.replace(r"@.*$", "")
    address = kind.is_in(["email", "sip"])
    return [
        pl.when((kind == "msisdn") & (tail.str.len_chars() >= 7))
        .then(tail)
        .alias(f"{prefix}_tail"),
        pl.when(address)
        .then(pl.when(user.str.len_chars() >= 5).then(user).otherwise(value))
        .alias(f"{prefix}_name"),
    ]


#: a text with at least as many digits as the shortest `tail`
_SEVEN_DIGITS = r"(?:[0-9][^0-9]*){7}"
_PARTIES = ("o", "d")


def _could_hold_own(field: str) -> pl.Expr:
    """Rows whose `field` is long enough to hold one of the row's own end users: seven digits
    where a party has a `tail`, five characters where one has a `name`. Only these are
    searched (`_own`): a shorter text cannot hold them."""
    col = pl.col(field)
    tail = pl.any_horizontal(pl.col(f"{p}_tail").is_not_null() for p in _PARTIES)
    name = pl.any_horizontal(pl.col(f"{p}_name").is_not_null() for p in _PARTIES)
    digits = col.str.contains(_SEVEN_DIGITS) & tail
    return (digits | ((col.str.len_chars() >= 5) & name)).fill_null(False)


def _own(col: pl.Expr) -> pl.Expr:
    """Whether a text holds the record's own end users in any written form (`party_patterns`
    of both parties, as columns `{o,d}_tail` and `{o,d}_name`)."""
    digits = col.str.replace_all(r"[^0-9]", "")
    low = col.str.to_lowercase()
    hit = pl.lit(False)
    for p in _PARTIES:
        hit = (
            hit
            | digits.str.contains(pl.col(f"{p}_tail"), literal=True)
            | low.str.contains(pl.col(f"{p}_name"), literal=True)
        ).fill_null(False)
    return hit


def _own_values(df: pl.DataFrame, field: str) -> pl.Series:
    """`_own` of a column, searched only in the rows that could hold it (`_could_hold_own`)."""
    patterns = [f"{p}_{w}" for p in _PARTIES for w in ("tail", "name")]
    frame = df.select(field, *patterns)
    could = frame.select(_could_hold_own(field)).to_series()
    hits = np.zeros(len(df), dtype=bool)
    if could.any():
        found = frame.filter(could).select(_own(pl.col(field))).to_series().to_numpy()
        hits[np.flatnonzero(could.to_numpy())] = found
    return pl.Series(field, hits)


def scrub(
    df: pl.DataFrame, file_key: bytes, region: str | None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Clean and check the free-text fields of a classified batch (with `{o,d}_tail/_name`,
    the parties' `party_patterns`); `region` is the deployment's (whose national numbers the
    detector reads).

    Returns the batch with every hit masked (`record_id` by `masked_record_id` under
    `file_key`) and every other value as read (`fold_lookalikes`: the suites then see what the
    detector saw), and the counts of values cleaned or masked per field.
    """
    fields = [f for f in FREE_TEXT_COLUMNS if f in df.columns]
    hits = df.select(
        pl.col(f).str.contains(CONTROL).fill_null(False).sum().alias(f"control:{f}") for f in fields
    ).row(0, named=True)
    # Searched as a reader sees them: a number in full-width or Arabic-Indic digits is a number.
    # A field with no control character anywhere in the batch has none to remove.
    seen = df.with_columns(
        as_read(pl.col(f)) if hits[f"control:{f}"] else _folded(pl.col(f)) for f in fields
    )
    found = _identifying_values(seen, fields, region).implode()
    flags = seen.select(pl.col(f).is_in(found).fill_null(False) for f in fields).with_columns(
        pl.col(f) | _own_values(seen, f) for f in fields
    )
    masked = []
    for f in fields:
        hits[f"masked:{f}"] = int(flags.get_column(f).sum())
        if hits[f"masked:{f}"]:  # only a field with a hit is rewritten
            mask = masked_record_id(pl.col(f), file_key) if f == "record_id" else pl.lit(MASK)
            masked.append(pl.when(flags.get_column(f)).then(mask).otherwise(pl.col(f)).alias(f))
    if masked:
        seen = seen.with_columns(masked)
    return seen, {k: int(v) for k, v in hits.items() if v}
