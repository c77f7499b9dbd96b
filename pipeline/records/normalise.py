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

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata

PERSONAL_KINDS = ("msisdn", "email", "sip")
KINDS = ("msisdn", "email", "sip", "alphanumeric", "shortcode", "unknown")
E164 = r"^\+[1-9]\d{6,14}$"
EMAIL = r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$"
#: a domain name as gold keeps it (the domain part of `EMAIL`); an IPv4 literal, though it
#: matches, is not kept: a SIP host given as an address may be the end user's own device
DOMAIN = r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$"
IPV4 = r"^[0-9.]+$"
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


def numbering_plan() -> str:
    """The numbering plans numbers are judged by: `phonenumbers`' version (its metadata)."""
    return str(phonenumbers.__version__)


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


def routing_domain(kind: pl.Expr, value: pl.Expr) -> pl.Expr:
    """The domain of an e-mail or SIP party, from its normalised address: the part after the
    last `@`, lower-cased, without a `:port`; never the local part. Null for other kinds, for a
    SIP user without a host, and for a host that is not a domain name (an IP address)."""
    host = value.str.extract(r"@([^@]*)$", 1).str.replace(r":\d+$", "").str.to_lowercase()
    return (
        pl.when(
            kind.is_in(["email", "sip"])
            & host.str.contains(DOMAIN).fill_null(False)
            & ~host.str.contains(IPV4).fill_null(False)
        )
        .then(host)
        .otherwise(None)
    )


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
    fold: bool = True,
) -> pl.DataFrame:
    """For each `column: prefix`, add `{prefix}_value`, `_kind`, `_cc`, `_bad` and `_ambiguous`.

    `fold=False` reads values without `fold_lookalikes`, as ingestion did before it folded (only
    to find the tokens of records ingested then).

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
        _stages(col, prefix, reg, international, alphanumeric, fold)
        for col, prefix in columns.items()
    ]
    for stage in zip(*(stages for stages, _ in plans), strict=True):
        df = df.with_columns([e for exprs in stage for e in exprs])
    return df.drop([name for _, temps in plans for name in temps])


def fold_lookalikes(values: pl.Series) -> pl.Series:
    """Values as a reader sees them: NFKC (a full-width `３` is `3`, `＠` is `@`, `²` is `2`),
    every other script's decimal digit as its ASCII digit (`٣` is `3`), dashes as `-`, and
    invisible format characters (zero-width spaces and joiners, direction marks) dropped. Only
    values with a character outside ASCII are touched: they are rare, so they are folded one by
    one."""
    wide = (values.str.len_bytes() != values.str.len_chars()).fill_null(False)
    if not wide.any():
        return values
    at = wide.arg_true()
    return values.clone().scatter(at, [_folded(v) for v in values.gather(at).to_list()])


def _folded(value: str) -> str:
    return "".join(
        _READ_AS.get(ch)
        or (str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii() else ch)
        for ch in unicodedata.normalize("NFKC", value)
        if unicodedata.category(ch) != "Cf"
    )


#: Dashes a number is written with (en dash, minus sign ...) read as the ASCII hyphen.
_READ_AS = {chr(c): "-" for c in (0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2212)}


def _read(col: pl.Expr, fold: bool) -> pl.Expr:
    return col.map_batches(fold_lookalikes, return_dtype=pl.String) if fold else col


def _stages(
    col: str, prefix: str, reg: Region | None, international: bool, alphanumeric: bool, fold: bool
) -> tuple[list[list[pl.Expr]], list[str]]:
    """The expression stages for one address column, and the temporary columns they add.

    Each stage reads only columns made by the stages before it, in this order: unwrap a display
    name (`"Ali" <+92…>`); find the scheme and a withheld caller; strip the scheme; split a SIP
    user from its host; see the value's shape; write a number in E.164 and spot short codes and
    ambiguous digit runs; decide the kind and calling code; take the value; judge it.
    """
    t = {k: f"_{prefix}_{k}" for k in ("s", "body", "user", "scheme", "phone", "digits", "plus",
                                        "e164", "sip", "at", "alpha", "withheld", "short",
                                        "ambiguous")}  # fmt: skip
    c = {k: pl.col(v) for k, v in t.items()}
    stages = [
        _unwrapped(_as_a_person_reads(_read(pl.col(col), fold).str.strip_chars()), t),
        _scheme(c, t),
        _body(c, t),
        _user(c, t),
        _shape(c, t),
        _numbers(c, t, reg, international, alphanumeric),
        [pl.col(t["sip"] + "2").alias(t["sip"])],
        _kind(c, prefix),
        [_value(c, prefix).alias(f"{prefix}_value")],
        [_bad(prefix).alias(f"{prefix}_bad"), c["ambiguous"].alias(f"{prefix}_ambiguous")],
    ]
    return stages, [*t.values(), t["sip"] + "2"]


Cols = dict[str, pl.Expr]
Names = dict[str, str]


def _as_a_person_reads(s: pl.Expr) -> pl.Expr:
    """Two ways numbers are written that a person reads past: a spreadsheet's `.0`/`.00` after
    a number stored as a float (`923001234567.0`), and a trunk `(0)` after the calling code
    (`+92 (0) 300 1234567`, `+44 (0)20 7946 0000`), which `phonenumbers` drops too. Read as
    written, each gave another person's number (+9230012345670, +9203001234567)."""
    return s.str.replace(r"^(\+?[0-9]+)\.0+$", "${1}").str.replace(
        r"^((?:\+|00)\s*[1-9][0-9]{0,2})\s*\(0\)", "${1}"
    )


def _unwrapped(s: pl.Expr, t: Names) -> list[pl.Expr]:
    """`Display Name <address>` → `address`."""
    return [pl.coalesce(s.str.extract(r"<([^<>]*)>\s*$", 1).str.strip_chars(), s).alias(t["s"])]


def _scheme(c: Cols, t: Names) -> list[pl.Expr]:
    low = c["s"].str.to_lowercase()
    return [
        low.str.extract(r"^(tel|sips?|mailto):", 1).alias(t["scheme"]),
        (c["s"].is_null() | low.is_in(WITHHELD)).alias(t["withheld"]),
    ]


def _body(c: Cols, t: Names) -> list[pl.Expr]:
    """The address without its scheme and URI parameters."""
    body = (
        pl.when(c["scheme"].is_not_null())
        .then(c["s"].str.replace(r"^[A-Za-z]+:", "").str.replace(r";.*$", ""))
        .otherwise(c["s"])
    )
    return [
        body.alias(t["body"]),
        c["scheme"].is_in(["sip", "sips"]).fill_null(False).alias(t["sip"]),
    ]


def _user(c: Cols, t: Names) -> list[pl.Expr]:
    return [
        pl.when(c["sip"])
        .then(c["body"].str.replace(r"@.*$", ""))
        .otherwise(c["body"])
        .alias(t["user"]),
        c["body"].str.contains("@", literal=True).fill_null(False).alias(t["at"]),
    ]


def _shape(c: Cols, t: Names) -> list[pl.Expr]:
    """Written as a number, its digits and plus sign; shaped like a business sender id."""
    return [
        c["user"].str.contains(r"^\+?[\d\s\-.()/]+$").fill_null(False).alias(t["phone"]),
        c["user"].str.replace_all(r"\D", "").alias(t["digits"]),
        c["user"].str.starts_with("+").fill_null(False).alias(t["plus"]),
        (
            c["s"].str.contains(r"^[A-Za-z0-9][A-Za-z0-9 .&_'-]{0,10}$")
            & c["s"].str.contains(r"[A-Za-z]")
        ).alias(t["alpha"]),
    ]


def _numbers(
    c: Cols, t: Names, reg: Region | None, international: bool, alphanumeric: bool
) -> list[pl.Expr]:
    digits = c["digits"]
    user_sip = c["sip"] if alphanumeric else (c["sip"] | (~c["phone"] & ~c["at"] & ~c["withheld"]))
    return [
        pl.when(c["phone"]).then(_e164(digits, c["plus"], reg, international)).alias(t["e164"]),
        (
            c["phone"] & ~c["plus"] & (digits.str.len_chars() <= 6) & ~digits.str.starts_with("0")
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
    ]


def _kind(c: Cols, prefix: str) -> list[pl.Expr]:
    """The party's kind, and the calling code of a number (not of a short code)."""
    main, _ = calling_codes()
    cc = pl.coalesce(
        *(c["e164"].str.slice(1, k).replace_strict(main, default=None) for k in (1, 2, 3))
    )
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
    return [
        kind.alias(f"{prefix}_kind"),
        pl.when(c["phone"] & ~c["short"]).then(cc).alias(f"{prefix}_cc"),
    ]


def _value(c: Cols, prefix: str) -> pl.Expr:
    """The normalised value: E.164, a short code's digits, a lower-cased address, or as sent."""
    k = pl.col(f"{prefix}_kind")
    return (
        pl.when(k == "unknown")
        .then(None)
        .when(k == "shortcode")
        .then(c["digits"])
        .when(k == "msisdn")
        .then(c["e164"])
        .when(k.is_in(["sip", "email"]))
        .then(c["body"].str.to_lowercase())
        .otherwise(c["s"])
    )


def _bad(prefix: str) -> pl.Expr:
    """No kind, a number that is not E.164 with a known calling code, or a malformed address."""
    k, v = pl.col(f"{prefix}_kind"), pl.col(f"{prefix}_value")
    return k.is_null() | (
        pl.when(k == "msisdn")
        .then(~v.str.contains(E164).fill_null(False) | pl.col(f"{prefix}_cc").is_null())
        .when(k == "email")
        .then(~v.str.contains(EMAIL).fill_null(False))
        .otherwise(False)
    )


TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
         "voicemail", "fixed_line", "mobile")  # fmt: skip


#: A plan's test of a national number: its pattern (ASCII, see `_ascii`) and possible lengths
#: (empty: any length).
Rule = tuple[str, tuple[int, ...]]


def _rule(desc: object) -> Rule | None:
    """One number description's test, None where it has no pattern."""
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return None
    return _ascii(pattern), tuple(n for n in getattr(desc, "possible_length", ()) if n > 0)


def _ascii(pattern: str) -> str:
    """A metadata pattern with `\\d` as `[0-9]`: national numbers hold ASCII digits only (other
    scripts' digits are folded first), and the Unicode class makes every batch's compile of the
    pattern several times dearer."""
    return pattern.replace("\\d", "[0-9]")


@cache
def _plan(region_code: str) -> tuple[Rule, list[Rule]] | None:
    """A region's general description and its number types' (phonenumbers'
    `is_valid_number_for_region`: the general one and one of the types must match); None
    where the region cannot hold a valid number."""
    meta = PhoneMetadata.metadata_for_region(region_code)
    general = _rule(meta.general_desc)
    types = [r for t in TYPES if (r := _rule(getattr(meta, t))) is not None]
    return (general, types) if general is not None and types else None


@cache
def _claims(code: str) -> list[tuple[str, str | None]]:
    """The regions of a calling code, in phonenumbers' order, each with its leading digits (a
    pattern the national number starts with; None: decided by validity instead)."""
    regions = [r for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[int(code)] if r != "001"]
    return [
        (r, _ascii(lead) if (lead := PhoneMetadata.metadata_for_region(r).leading_digits) else None)
        for r in regions
    ]


# --- the rules as polars expressions over a column of national numbers (`_nsn`) -----------------


def _matches(nsn: pl.Expr, rule: Rule) -> pl.Expr:
    pattern, lengths = rule
    full = nsn.str.contains(f"^(?:{pattern})$")
    return full & nsn.str.len_chars().is_in(list(lengths)) if lengths else full


@cache
def _valid_for(region_code: str) -> pl.Expr:
    """Whether `_nsn` is a valid number of a region (`_plan`)."""
    plan = _plan(region_code)
    if plan is None:
        return pl.lit(False)
    general, types = plan
    nsn = pl.col("_nsn")
    return _matches(nsn, general) & pl.any_horizontal([_matches(nsn, t) for t in types])


@cache
def _region_of(code: str) -> pl.Expr:
    """The region a number of a calling code belongs to, if valid (`_valid_for`): the first
    of the code's regions whose leading digits start the national number, or (without leading
    digits) for which it is valid; null where none (phonenumbers' `region_code_for_number`,
    over whole columns)."""
    claims = _claims(code)
    if not claims:
        return pl.lit(None, pl.String)
    if len(claims) == 1:
        return pl.lit(claims[0][0])
    chain = None
    for r, lead in claims:
        rule = pl.col("_nsn").str.contains(f"^(?:{lead})") if lead else _valid_for(r)
        chain = (pl.when(rule) if chain is None else chain.when(rule)).then(pl.lit(r))
    assert chain is not None
    return chain.otherwise(None)


# --- the same rules in Python, patterns compiled once a process (`CountryResolver`) --------------


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(f"(?:{pattern})")


def _fits(nsn: str, rule: Rule) -> bool:
    pattern, lengths = rule
    return (not lengths or len(nsn) in lengths) and _compiled(pattern).fullmatch(nsn) is not None


def _valid(region_code: str, nsn: str) -> bool:
    plan = _plan(region_code)
    return plan is not None and _fits(nsn, plan[0]) and any(_fits(nsn, t) for t in plan[1])


def _country(code: str, nsn: str) -> str | None:
    """The country of one national number of a calling code: its region (`_region_of`), if the
    number is valid there."""
    claims = _claims(code)
    if len(claims) == 1:
        region: str | None = claims[0][0]
    else:
        region = next(
            (r for r, lead in claims if (_compiled(lead).match(nsn) if lead else _valid(r, nsn))),
            None,
        )
    return region if region is not None and _valid(region, nsn) else None


_MAPPING = {"_v": pl.String, "_c": pl.String}


def _resolved_in_python(numbers: pl.DataFrame) -> pl.DataFrame:
    """`_v` (a number) → `_c` (its country, or null), by `_country`."""
    found = {v: _country(str(code), nsn) for v, code, nsn in numbers.select("_v", "_code", "_nsn").iter_rows()}  # fmt: skip
    return pl.DataFrame({"_v": list(found), "_c": list(found.values())}, schema=_MAPPING)


def _resolved_in_polars(numbers: pl.DataFrame) -> pl.DataFrame:
    """`_v` → `_c` as `_resolved_in_python`, one calling code at a time. Each number is then
    checked against its own region's plan only: a calling code shared by many regions (+1,
    +44, +7) does not test every number against each."""
    resolved = [pl.DataFrame(schema=_MAPPING)]
    for (code,), part in numbers.partition_by("_code", as_dict=True).items():
        found = part.with_columns(_region_of(str(code)).cast(pl.String).alias("_found"))
        for (region,), same in found.partition_by("_found", as_dict=True).items():
            if region is not None:
                valid = _valid_for(str(region))
                country = pl.when(valid).then(pl.lit(region, pl.String)).alias("_c")
                resolved.append(same.select("_v", country))
    return pl.concat(resolved)


#: distinct numbers a batch resolves in Python (`_country`, each pattern compiled once a
#: process); more go through polars, which compiles every region's patterns on each call
#: (about 16 ms a batch however few its numbers)
PYTHON_NUMBERS = 1024


class CountryResolver:
    """The country of each number, decided by the whole number and nothing else.

    Each distinct number is checked against the numbering metadata (the patterns and lengths
    `phonenumbers` ships) in polars expressions, one calling code at a time: the region is the
    one phonenumbers' `region_code_for_number` gives, and a number that is not valid for it (or
    for any region) gets no country and is flagged invalid. Numbers never share an answer by
    prefix, so a number's country does not depend on what else is in the file.
    """

    def country(self, df: pl.DataFrame, value: str, cc: str, out: str) -> pl.DataFrame:
        """Add `out` (the country of msisdn values, null for other kinds and invalid numbers)
        and `{out}_invalid` (a number no region's numbering plan allows)."""
        main, _ = calling_codes()
        code_of = {r: c for c, r in main.items() if r}
        numbers = (
            df.filter(pl.col(cc).is_not_null() & (pl.col(cc) != ""))
            .select(pl.col(value).alias("_v"), pl.col(cc).replace_strict(code_of).alias("_code"))
            .unique("_v")
            .with_columns(pl.col("_v").str.slice(pl.col("_code").str.len_chars() + 1).alias("_nsn"))
        )
        if len(numbers) <= PYTHON_NUMBERS:  # a few numbers: no polars compile of every pattern
            mapping = _resolved_in_python(numbers)
        else:
            mapping = _resolved_in_polars(numbers)
        number = pl.col(cc).is_not_null() & (pl.col(cc) != "")
        return (
            df.join(mapping, left_on=value, right_on="_v", how="left", maintain_order="left")
            .with_columns(
                pl.when(number).then(pl.col("_c")).alias(out),
                (number & pl.col("_c").is_null()).alias(f"{out}_invalid"),
            )
            .drop("_c")
        )
