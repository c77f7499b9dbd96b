"""Normalise addresses so the same person written many ways is one value, then classify them.

Numbers go to E.164 (`+923001234567`) from every common written form: `+92 300 1234567`,
`0300-1234567` (with a default region), `00923001234567`, `923001234567` (how messaging APIs
write them), `tel:+92-300-1234567`, `"Name" <number>` caller IDs, `sip:+92...@host`. E-mail
addresses are trimmed and lower-cased. Everything is polars expressions over whole batches;
`phonenumbers` is consulted only for what a vectorised rule cannot decide (which country shares a
calling code such as +1 or +44), once per distinct number.

Kinds: msisdn, email, sip (end users: personal, tokenised), alphanumeric and shortcode
(business identifiers: kept literally), unknown (withheld caller ID: no value). A value with 7
or more digits that is not written as a number or an address (`3001234567x`) has no kind: it is
flagged `_ambiguous` (and `_bad`), never kept as a literal sender ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata

PERSONAL_KINDS = ("msisdn", "email", "sip")
KINDS = ("msisdn", "email", "sip", "alphanumeric", "shortcode", "unknown")
E164 = r"^\+[1-9]\d{6,14}$"
EMAIL = r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$"
WITHHELD = ["", "anonymous", "unknown", "restricted", "private", "withheld", "unavailable"]
NANP = "1"
#: A value with this many digits is possibly a number: a number if it parses as one, else
#: quarantined (`ambiguous_identifier`), never kept as a literal sender ID.
AMBIGUOUS_DIGITS = 7


@dataclass(frozen=True)
class Region:
    """What national numbers of a region need: calling code, trunk prefix, lengths."""

    code: str
    calling_code: str
    trunk: str | None
    lengths: tuple[int, ...]


@cache
def region(code: str) -> Region:
    meta = PhoneMetadata.metadata_for_region(code.upper())
    if meta is None:
        raise ValueError(f"unknown region {code!r}: use an ISO 3166 country code such as PK")
    cc = str(phonenumbers.country_code_for_region(code.upper()))
    return Region(code.upper(), cc, meta.national_prefix, tuple(meta.general_desc.possible_length))


@cache
def calling_codes() -> tuple[dict[str, str], frozenset[str]]:
    """Calling code → main region, and the codes that several regions share."""
    main: dict[str, str] = {}
    shared: set[str] = set()
    for cc, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        main[str(cc)] = regions[0] if regions[0] != "001" else ""
        if len(regions) > 1:
            shared.add(str(cc))
    return main, frozenset(shared)


def _e164(digits: pl.Expr, plus: pl.Expr, reg: Region | None, international: bool) -> pl.Expr:
    """E.164 candidate from the digits of a phone-like value (null when it cannot be decided)."""
    n = digits.str.len_chars()
    expr = (
        pl.when(plus)
        .then(pl.lit("+") + digits)
        .when(digits.str.starts_with("00"))
        .then(pl.lit("+") + digits.str.slice(2))
    )
    if reg is not None and reg.calling_code == NANP:
        expr = expr.when(digits.str.starts_with("011")).then(pl.lit("+") + digits.str.slice(3))
    if international:
        return expr.otherwise(pl.lit("+") + digits)
    if reg is None:  # a national-format number without a region: never a guessed country
        return expr.otherwise(None)
    cc, lengths = reg.calling_code, list(reg.lengths)
    if reg.trunk:
        t = reg.trunk
        expr = expr.when(digits.str.starts_with(t) & (n - len(t)).is_in(lengths)).then(
            pl.lit("+" + cc) + digits.str.slice(len(t))
        )
    return (
        expr.when(digits.str.starts_with(cc) & (n - len(cc)).is_in(lengths))
        .then(pl.lit("+") + digits)
        .when(n.is_in(lengths))
        .then(pl.lit("+" + cc) + digits)
        .otherwise(None)
    )


def normalise_addresses(
    df: pl.DataFrame,
    columns: dict[str, str],
    default_region: str | None,
    international: bool,
    alphanumeric: bool = True,
) -> pl.DataFrame:
    """For each `column: prefix`, add `{prefix}_value`, `_kind`, `_cc`, `_bad` and `_ambiguous`.

    `international` says the source writes numbers in international form without `+`
    (messaging APIs); otherwise digits without `+`/`00` are read as national numbers of
    `default_region`. Where a source has no alphanumeric sender IDs (a PBX), a name-like value
    is a user name (`alphanumeric=False`): kind sip, tokenised, never kept literally.

    Intermediate columns are materialised stage by stage: each is computed once, where one
    nested expression would recompute shared parts in every branch. All columns go through a
    stage together, so polars runs them in parallel.
    """
    reg = region(default_region) if default_region else None
    plans = [
        _stages(col, prefix, reg, international, alphanumeric) for col, prefix in columns.items()
    ]
    for stage in zip(*(stages for stages, _ in plans), strict=True):
        df = df.with_columns([e for exprs in stage for e in exprs])
    return df.drop([name for _, temps in plans for name in temps])


def _stages(
    col: str, prefix: str, reg: Region | None, international: bool, alphanumeric: bool
) -> tuple[list[list[pl.Expr]], list[str]]:
    """The expression stages for one address column, and the temporary columns they add."""
    t = {k: f"_{prefix}_{k}" for k in ("s", "body", "user", "scheme", "phone", "digits", "plus",
                                        "e164", "sip", "at", "alpha", "withheld", "short",
                                        "ambiguous")}  # fmt: skip
    c = {k: pl.col(v) for k, v in t.items()}
    s = pl.col(col).str.strip_chars()
    low = c["s"].str.to_lowercase()
    body = (
        pl.when(c["scheme"].is_not_null())
        .then(c["s"].str.replace(r"^[A-Za-z]+:", "").str.replace(r";.*$", ""))
        .otherwise(c["s"])
    )
    digits = c["digits"]
    main, _ = calling_codes()
    e164 = c["e164"]
    cc = pl.coalesce(*(e164.str.slice(1, k).replace_strict(main, default=None) for k in (1, 2, 3)))
    kind = (
        pl.when(c["withheld"])
        .then(pl.lit("unknown"))
        .when(c["ambiguous"])
        .then(None)
        .when(c["phone"] & c["short"])
        .then(pl.lit("shortcode"))
        .when(c["phone"])
        .then(pl.lit("msisdn"))
        .when(c["sip"])
        .then(pl.lit("sip"))
        .when(c["at"])
        .then(pl.lit("email"))
        .when(c["alpha"])
        .then(pl.lit("alphanumeric"))
        .otherwise(None)
    )
    k = pl.col(f"{prefix}_kind")
    value = (
        pl.when(k == "unknown")
        .then(None)
        .when(k == "shortcode")
        .then(digits)
        .when(k == "msisdn")
        .then(e164)
        .when(k.is_in(["sip", "email"]))
        .then(c["body"].str.to_lowercase())
        .otherwise(c["s"])
    )
    v = pl.col(f"{prefix}_value")
    ambiguous = c["ambiguous"].alias(f"{prefix}_ambiguous")
    bad = k.is_null() | (
        pl.when(k == "msisdn")
        .then(~v.str.contains(E164).fill_null(False) | pl.col(f"{prefix}_cc").is_null())
        .when(k == "email")
        .then(~v.str.contains(EMAIL).fill_null(False))
        .otherwise(False)
    )
    user_sip = c["sip"] if alphanumeric else (c["sip"] | (~c["phone"] & ~c["at"] & ~c["withheld"]))
    stages = [
        [pl.coalesce(s.str.extract(r"<([^<>]*)>\s*$", 1).str.strip_chars(), s).alias(t["s"])],
        [
            low.str.extract(r"^(tel|sips?|mailto):", 1).alias(t["scheme"]),
            (c["s"].is_null() | low.is_in(WITHHELD)).alias(t["withheld"]),
        ],
        [
            body.alias(t["body"]),
            c["scheme"].is_in(["sip", "sips"]).fill_null(False).alias(t["sip"]),
        ],
        [
            pl.when(c["sip"])
            .then(c["body"].str.replace(r"@.*$", ""))
            .otherwise(c["body"])
            .alias(t["user"]),
            c["body"].str.contains("@", literal=True).fill_null(False).alias(t["at"]),
        ],
        [
            c["user"].str.contains(r"^\+?[\d\s\-.()/]+$").fill_null(False).alias(t["phone"]),
            c["user"].str.replace_all(r"\D", "").alias(t["digits"]),
            c["user"].str.starts_with("+").fill_null(False).alias(t["plus"]),
            (
                c["s"].str.contains(r"^[A-Za-z0-9][A-Za-z0-9 .&_'-]{0,10}$")
                & c["s"].str.contains(r"[A-Za-z]")
            ).alias(t["alpha"]),
        ],
        [
            pl.when(c["phone"]).then(_e164(digits, c["plus"], reg, international)).alias(t["e164"]),
            (
                c["phone"]
                & ~c["plus"]
                & (digits.str.len_chars() <= 6)
                & ~digits.str.starts_with("0")
            ).alias(t["short"]),
            user_sip.alias(t["sip"] + "2"),
            # 7 or more digits in a value that is not written as a number, an address or a SIP
            # URI (`3001234567x`): possibly a number, so never a literal sender ID.
            (
                ~c["phone"]
                & ~c["at"]
                & ~c["sip"]
                & ~c["withheld"]
                & (c["s"].str.count_matches(r"\d") >= AMBIGUOUS_DIGITS)
            )
            .fill_null(False)
            .alias(t["ambiguous"]),
        ],
        [pl.col(t["sip"] + "2").alias(t["sip"])],
        [
            kind.alias(f"{prefix}_kind"),
            pl.when(c["phone"] & ~c["short"]).then(cc).alias(f"{prefix}_cc"),
        ],
        [value.alias(f"{prefix}_value")],
        [bad.alias(f"{prefix}_bad"), ambiguous],
    ]
    return stages, [*t.values(), t["sip"] + "2"]


class CountryResolver:
    """Country of numbers whose calling code several regions share (+1, +7, +44 ...).

    Vectorised rules give the main region; for shared codes the region is fixed by the leading
    digits of the national number (the area code in North America, the range elsewhere), so
    `phonenumbers` decides once per distinct prefix (`prefix_digits` long) and the answer is
    joined back to every number with that prefix.
    """

    NANP_PREFIX = 3  # an area code (NPA) belongs to exactly one country or territory
    PREFIX = 6

    def __init__(self) -> None:
        self._cache: dict[str, str | None] = {}

    def _lookup(self, prefix: str, example: str) -> str | None:
        if prefix not in self._cache:
            try:
                parsed = phonenumbers.parse(example, None)
                self._cache[prefix] = phonenumbers.region_code_for_number(parsed)
            except phonenumbers.NumberParseException:
                self._cache[prefix] = None
        return self._cache[prefix]

    def country(self, df: pl.DataFrame, value: str, cc: str, out: str) -> pl.DataFrame:
        """Add column `out`: the country of msisdn values (null for other kinds)."""
        main, shared = calling_codes()
        code_of = {main[c]: c for c in shared}
        df = df.with_columns(pl.col(cc).alias(out))
        ambiguous = df.filter(pl.col(cc).is_in(list(code_of)))
        if not len(ambiguous):
            return df
        width = pl.col(cc).replace_strict(code_of, return_dtype=pl.String).str.len_chars() + 1
        digits = pl.when(pl.col(cc) == "US").then(self.NANP_PREFIX).otherwise(self.PREFIX)
        prefix = pl.col(value).str.slice(0, width + digits)
        examples = (
            ambiguous.select(prefix.alias("_p"), pl.col(value).alias("_n"))
            .unique("_p", keep="first")
            .iter_rows()
        )
        mapping = pl.DataFrame(
            [(p, self._lookup(p, n)) for p, n in examples],
            schema={"_p": pl.String, "_c": pl.String},
            orient="row",
        )
        return (
            df.with_columns(pl.when(pl.col(cc).is_in(list(code_of))).then(prefix).alias("_p"))
            .join(mapping, on="_p", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_c", out).alias(out))
            .drop("_c", "_p")
        )
