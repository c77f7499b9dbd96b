"""Free-text fields kept in silver and gold checked for identifiers, row by row.

Sources put what they like in IDs, statuses and network names, and gold keeps them for ten
years, so before a record is kept each free-text field is:

1. cleaned of control and invisible format characters (NUL, zero-width spaces ...), counted as
   `control:<field>`;
2. read as a person would (`fold_lookalikes`: full-width and other scripts' digits as digits,
   a full-width `＠` as `@`) and searched for the record's own end users in any written form
   (the last nine digits of the number, whatever separators surround them; the e-mail or SIP
   address, or its user part) and for anything shaped like an identifier (a number written
   with `+`, `00` or a trunk `0`; a bare international number, i.e. 8 to 15 digits a calling
   code and its lengths allow; an e-mail address).

A hit in `record_id` quarantines the row (`identifier_in:record_id`): an ID cannot be kept with a
part blanked (two IDs would become one) nor replaced (it would no longer be the platform's ID).
A hit in any other field replaces the whole value by `masked`, counted as `masked:<field>`.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata

from pipeline.records.normalise import fold_lookalikes

#: Fields a source fills with text of its own and the tiers keep as written.
FREE_TEXT = (
    "record_id", "customer_id", "route_id", "status", "error_code", "origin_network",
    "destination_network",
)  # fmt: skip
#: Fields whose hit quarantines the row instead of masking the value.
QUARANTINED = ("record_id",)
MASK = "masked"
CONTROL = r"[\p{Cc}\p{Cf}]"
SHAPES = (
    r"(?:\+|\b00)[1-9][0-9 ()./-]{5,18}[0-9]",  # international, with + or 00
    r"\b0[1-9][0-9]{1,4}[ -]?[0-9]{6,8}\b",  # national, with a trunk 0
    r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}",  # e-mail address
)
#: How much of a number is enough to recognise it in any written form.
TAIL_DIGITS = 9


@cache
def bare_number() -> str:
    """A regex matching a digit run that is a possible international number without `+`:
    a calling code followed by a national number of one of its region's lengths."""
    alternatives = set()
    for cc, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for code in regions:
            meta = (
                PhoneMetadata.metadata_for_nongeo_region(cc)
                if code == "001"
                else PhoneMetadata.metadata_for_region(code)
            )
            if meta is None or meta.general_desc is None:
                continue
            for n in meta.general_desc.possible_length:
                if 8 <= len(str(cc)) + n <= 15:
                    alternatives.add(f"{cc}[0-9]{{{n}}}")
    return "^(?:" + "|".join(sorted(alternatives)) + ")$"


def _shaped(col: pl.Expr) -> pl.Expr:
    """Whether a text holds anything shaped like a phone number or an e-mail address."""
    shaped = pl.lit(False)
    for pattern in SHAPES:
        shaped = shaped | col.str.contains(pattern)
    runs = col.str.extract_all(r"[0-9]+")
    bare = runs.list.eval(pl.element().str.contains(bare_number())).list.any()
    return (shaped | bare).fill_null(False)


def _shaped_values(df: pl.DataFrame, fields: list[str]) -> pl.Series:
    """The distinct values of `fields` that are `_shaped`, each decided once however many rows
    and fields hold it (statuses, customers and networks repeat), and the patterns compiled
    once a batch rather than once a field."""
    distinct = pl.concat(
        [pl.Series("v", [], pl.String)]
        + [df.get_column(f).drop_nulls().unique().alias("v") for f in fields]
    ).unique()
    return distinct.filter(distinct.to_frame().select(_shaped(pl.col("v"))).to_series())


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


def scrub(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Clean and check the free-text fields of a classified batch (with `{o,d}_tail/_name`,
    the parties' `party_patterns`).

    Returns the batch, with `_identifier_in_id` marking rows whose record ID carries an
    identifier, and the counts of values cleaned or masked per field.
    """
    fields = [f for f in FREE_TEXT if f in df.columns]
    cleaned = df.with_columns(pl.col(f).str.replace_all(CONTROL, "") for f in fields)
    counts: dict[str, int] = {}
    hits = cleaned.select(
        *(
            (pl.col(f) != df.get_column(f)).fill_null(False).sum().alias(f"control:{f}")
            for f in fields
        ),
    ).row(0, named=True)
    # Searched as a reader sees them: a number in full-width or Arabic-Indic digits is a number.
    seen = cleaned.with_columns(
        pl.col(f).map_batches(fold_lookalikes, return_dtype=pl.String) for f in fields
    )
    shaped = _shaped_values(seen, fields).implode()
    flags = seen.select(pl.col(f).is_in(shaped).fill_null(False) for f in fields).with_columns(
        pl.col(f) | _own_values(seen, f) for f in fields
    )
    for f in fields:
        if f in QUARANTINED:
            continue
        hits[f"masked:{f}"] = int(flags.get_column(f).sum())
        cleaned = cleaned.with_columns(
            pl.when(flags.get_column(f)).then(pl.lit(MASK)).otherwise(pl.col(f)).alias(f)
        )
    in_id = flags.get_column("record_id") if "record_id" in fields else np.zeros(len(df), bool)
    cleaned = cleaned.with_columns(pl.Series("_identifier_in_id", in_id, dtype=pl.Boolean))
    counts = {k: int(v) for k, v in hits.items() if v}
    return cleaned, counts
