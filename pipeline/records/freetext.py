"""Free-text fields kept in silver and gold checked for identifiers, row by row.

Sources put what they like in IDs, statuses and network names, and gold keeps them for ten
years, so before a record is kept each free-text field is:

1. cleaned of control and invisible format characters (NUL, zero-width spaces ...), counted as
   `control:<field>`;
2. searched for the record's own end users in any written form (the last nine digits of the
   number, whatever separators surround them; the e-mail or SIP address, or its user part) and
   for anything shaped like an identifier (a number written with `+`, `00` or a trunk `0`; a bare
   international number, i.e. 8 to 15 digits a calling code and its lengths allow; an e-mail
   address).

A hit in `record_id` quarantines the row (`identifier_in:record_id`): an ID cannot be kept with a
part blanked (two IDs would become one) nor replaced (it would no longer be the platform's ID).
A hit in any other field replaces the whole value by `masked`, counted as `masked:<field>`.
"""

from __future__ import annotations

from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata

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


def _shaped_values(df: pl.DataFrame, name: str) -> pl.Expr:
    """`_shaped` of a column, decided once per distinct value (statuses, customers and networks
    repeat through a batch)."""
    distinct = df.get_column(name).drop_nulls().unique()
    found = distinct.filter(distinct.to_frame().select(_shaped(pl.col(name))).to_series())
    return pl.col(name).is_in(found.implode()).fill_null(False)


def _party_patterns(prefix: str) -> list[pl.Expr]:
    """What of end user `prefix` (o or d) a text may hold, computed once per batch: the last
    digits of a number, the whole e-mail or SIP address, and its user part (null when the
    party is not such an end user, or the part too short to recognise)."""
    value, kind = pl.col(f"{prefix}_value"), pl.col(f"{prefix}_kind")
    tail = value.str.replace_all(r"[^0-9]", "").str.slice(-TAIL_DIGITS)
    user = value.str.replace(r"@.*$", "")
    address = kind.is_in(["email", "sip"])
    return [
        pl.when((kind == "msisdn") & (tail.str.len_chars() >= 7))
        .then(tail)
        .alias(f"_{prefix}_tail"),
        pl.when(address).then(value).alias(f"_{prefix}_address"),
        pl.when(address & (user.str.len_chars() >= 5)).then(user).alias(f"_{prefix}_user"),
    ]


def _own(col: pl.Expr) -> pl.Expr:
    """Whether a text holds the record's own end users in any written form (the columns of
    `_party_patterns` present)."""
    digits = col.str.replace_all(r"[^0-9]", "")
    low = col.str.to_lowercase()
    hit = pl.lit(False)
    for p in ("o", "d"):
        hit = (
            hit
            | digits.str.contains(pl.col(f"_{p}_tail"), literal=True)
            | low.str.contains(pl.col(f"_{p}_address"), literal=True)
            | low.str.contains(pl.col(f"_{p}_user"), literal=True)
        ).fill_null(False)
    return hit


def scrub(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Clean and check the free-text fields of a classified batch (with `{o,d}_value/_kind`).

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
    patterns = cleaned.select(*_party_patterns("o"), *_party_patterns("d"))
    flags = pl.concat([cleaned.select(fields), patterns], how="horizontal").select(
        (_shaped_values(cleaned, f) | _own(pl.col(f))).alias(f) for f in fields
    )
    for f in fields:
        if f in QUARANTINED:
            continue
        hits[f"masked:{f}"] = int(flags.get_column(f).sum())
        cleaned = cleaned.with_columns(
            pl.when(flags.get_column(f)).then(pl.lit(MASK)).otherwise(pl.col(f)).alias(f)
        )
    in_id = flags.get_column("record_id") if "record_id" in fields else pl.repeat(False, len(df))
    cleaned = cleaned.with_columns(pl.Series("_identifier_in_id", in_id, dtype=pl.Boolean))
    counts = {k: int(v) for k, v in hits.items() if v}
    return cleaned, counts
