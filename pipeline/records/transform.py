"""Parsed rows → silver, gold, vault entries and quarantined rows, one batch at a time.

Order matters and is the point of this module: addresses are normalised and classified, country
is derived from the number (the domain from an e-mail or SIP address), and only then is the
identifier replaced by its token. Rows that fail
any check leave with a reason code that names the field, never its value.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pipeline.core.layout import derived_record_id
from pipeline.proof.commitments import ENCODING, identity_commitment, leaves_of
from pipeline.records import normal_course
from pipeline.records.fingerprints import Fingerprints
from pipeline.records.freetext import party_patterns, scrub
from pipeline.records.normalise import (
    PERSONAL_KINDS,
    CountryResolver,
    normalise_addresses,
    routing_domain,
)
from pipeline.records.schema import (
    GOLD,
    OTHER,
    SILVER,
    claimed,
    conform,
)
from pipeline.records.sources.base import first_error
from pipeline.records.tokenise import token_expr

# What the tiers accept (the same bounds as the expectations suites): a row outside them is
# quarantined with `out_of_range:<field>`, never the whole file refused.
EARLIEST = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
MAX_DURATION_S = 7 * 86_400
FUTURE_TOLERANCE_DAYS = 1


def _out_of_range(col: str) -> pl.Expr:
    return pl.col(col).is_not_null() & ((pl.col(col) < EARLIEST) | (pl.col(col) >= LATEST))


@dataclass(frozen=True)
class FileContext:
    """What is known of the file a batch comes from."""

    source: str
    source_file: str
    sha256: str
    as_of: dt.date
    default_region: str | None
    international: bool
    alphanumeric: bool
    derived_ids: bool
    token_key: str
    token_version: str
    #: the retention policy's identifier purge date of a month (year, month): the one rule
    #: ingest, bronze locks and retention share (`RetentionPolicy.identifier_purge`)
    identifier_purge: Callable[[int, int], dt.date]
    #: months ("YYYY-MM") whose identifiers were already purged: never re-created
    purged_months: frozenset[str] = frozenset()
    #: the file's data key: keys the identity commitments (pipeline.proof.commitments)
    commit_key: bytes = b""
    #: days after `as_of` a record may be dated (clocks differ): later is `future_timestamp`
    future_tolerance_days: int = FUTURE_TOLERANCE_DAYS

    @property
    def future_cutoff(self) -> dt.datetime:
        """The first instant a record may not be dated: the end of `as_of` plus the tolerance."""
        day = self.as_of + dt.timedelta(days=1 + self.future_tolerance_days)
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)

    #: the record encoding its leaves are committed with (stated in the parse entry)
    commitment_encoding: int = ENCODING
    #: tokens whose identifiers were erased on request: their vault entries are never re-created
    suppressed: frozenset[str] = frozenset()
    #: the deployment's region: whose national numbers the identifier detector reads in free
    #: text (the suites read the same), whatever region this file's addresses are read in
    detector_region: str | None = None


@dataclass
class Transformed:
    """One batch split by destination. `silver` and `gold` carry `year`/`month` columns."""

    silver: pl.DataFrame
    gold: pl.DataFrame
    vault: pl.DataFrame  # year, month, token, kind, identifier (clear: encrypted by the writer)
    quarantine: pl.DataFrame  # source_line, reason, raw (clear: encrypted by the writer)
    leaves: pl.Series  # the kept records' Merkle leaves (hex), in leaf_index order
    commit_seconds: float = 0.0  # time spent on the commitments (reported, never asserted)
    #: free-text values cleaned of control characters or masked, per `control:`/`masked:` field
    scrubbed: dict[str, int] = field(default_factory=dict)


#: (record IDs, month indexes) → the digest of an earlier file that kept each ID, or None
Prior = Callable[[pl.Series, pl.Series], list[str | None]]


def _month_index(ts: Any) -> Any:
    return ts.dt.year().cast(pl.Int64) * 12 + ts.dt.month().cast(pl.Int64) - 1


@dataclass
class Prepared:
    """A batch classified and checked row by row, before anything that depends on the batches
    before it (its place in the file's tree, its repeats): `prepare` of batch n + 1 can run
    while batch n is being finished."""

    frame: pl.DataFrame
    scrubbed: dict[str, int]

    def __len__(self) -> int:
        return len(self.frame)


def prepare(parsed: pl.DataFrame, ctx: FileContext, book: AddressBook) -> Prepared:
    """Classify both parties (normalise, country, token), clean free text, derive missing
    record ids and give each row its first reason to be rejected. `book` is the file's: one
    caller at a time, batches in file order."""
    df, others = _closed_vocabularies(_classify(parsed, ctx, book))
    df, scrubbed = scrub(df, ctx.commit_key, ctx.detector_region)
    df = _with_record_ids(df, ctx).with_columns(_rejection(ctx).alias("_reason"))
    df, claims = _claims_checked(df)
    return Prepared(df, scrubbed | others | claims)


def transform(
    parsed: pl.DataFrame,
    ctx: FileContext,
    book: AddressBook,
    leaf_offset: int = 0,
    seen_ids: Fingerprints | None = None,
    prior: Prior | None = None,
) -> Transformed:
    """Split a parsed batch (`prepare`, then `finish`)."""
    return finish(prepare(parsed, ctx, book), ctx, leaf_offset, seen_ids, prior)


def finish(
    prepared: Prepared,
    ctx: FileContext,
    leaf_offset: int = 0,
    seen_ids: Fingerprints | None = None,
    prior: Prior | None = None,
) -> Transformed:
    """Split a prepared batch; kept records are numbered from `leaf_offset` in the file's tree.

    `seen_ids` holds the record IDs kept from the file's earlier batches: a record ID is unique
    per file, so a repeat in a later batch is quarantined like one within the batch. `prior`
    names the earlier file of the same source that already kept a record's ID in its month
    (pipeline.records.redelivery): such a record is a re-delivery, quarantined too.

    The steps, in order, after those of `prepare`: mark repeats in the file and re-deliveries; split off the quarantine; route the kept rows (token or
    literal, gold only when expired); commit each record; cut silver, gold and the vault.
    """
    df = _repeats_in_file(prepared.frame, seen_ids)
    df = _redelivered(df, prior)
    quarantine = df.filter(pl.col("_reason").is_not_null()).select(
        "source_line", pl.col("_reason").alias("reason"), "raw", "note"
    )
    good = _routed(df.filter(pl.col("_reason").is_null()).drop("raw", "note"), ctx)
    gold_rows = good.with_columns(
        pl.when(_PERSONAL_O).then(None).otherwise(pl.col("origin")).alias("origin"),
        pl.when(_PERSONAL_D).then(None).otherwise(pl.col("destination")).alias("destination"),
    )
    started = time.perf_counter()
    committed, leaves = _commitments(gold_rows, ctx, leaf_offset)
    commit_seconds = time.perf_counter() - started
    good = pl.concat([good, committed], how="horizontal")
    gold_rows = pl.concat([gold_rows, committed], how="horizontal")
    live = good.filter(~pl.col("_expired"))
    return Transformed(
        pl.concat([conform(live, SILVER), live.select(_PARTS)], how="horizontal"),
        pl.concat([conform(gold_rows, GOLD), gold_rows.select(_PARTS)], how="horizontal"),
        _vault(live, ctx),
        quarantine,
        leaves,
        commit_seconds,
        prepared.scrubbed,
    )


_PERSONAL_O = pl.col("o_kind").is_in(PERSONAL_KINDS)
_PERSONAL_D = pl.col("d_kind").is_in(PERSONAL_KINDS)
_PARTS = ["year", "month"]


def _with_record_ids(df: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    """Sources without record ids (some PBX formats) get one derived from the file and line."""
    if not ctx.derived_ids:
        return df
    derived = pl.col("source_line").map_batches(
        lambda lines: pl.Series([derived_record_id(ctx.sha256, n) for n in lines.to_list()]),
        return_dtype=pl.String,
    )
    return df.with_columns(pl.coalesce("record_id", derived).alias("record_id"))


def _rejection(ctx: FileContext) -> pl.Expr:
    """A row's first reason to be quarantined (the reader's own, else the first check failed),
    null for a row that is kept."""
    return pl.coalesce(
        pl.col("parse_error"),
        first_error(
            [
                (pl.col("record_id").is_null(), "missing_id"),
                (pl.col("event_time").is_null(), "missing_timestamp"),
                (_out_of_range("event_time"), "out_of_range:event_time"),
                (pl.col("event_time") >= ctx.future_cutoff, "future_timestamp"),
                (_out_of_range("end_time"), "out_of_range:end_time"),
                (pl.col("destination_raw").is_null(), "missing_destination"),
                (pl.col("o_ambiguous"), "ambiguous_identifier:origin"),
                (pl.col("d_ambiguous"), "ambiguous_identifier:destination"),
                (pl.col("o_bad"), "unparseable_number:origin"),
                (pl.col("d_bad"), "unparseable_number:destination"),
                (pl.col("o_country_invalid"), "invalid_number:origin"),
                (pl.col("d_country_invalid"), "invalid_number:destination"),
                (pl.col("d_kind") == "unknown", "missing_destination"),
                (pl.col("channel").is_null(), "bad_value:channel"),
                (pl.col("direction").is_null(), "bad_value:direction"),
                (
                    pl.col("duration_s").is_not_null() & (pl.col("duration_s") < 0),
                    "bad_value:duration_s",
                ),
                (pl.col("duration_s") > MAX_DURATION_S, "out_of_range:duration_s"),
            ]
        ),
    )


def _repeats_in_file(df: pl.DataFrame, seen_ids: Fingerprints | None) -> pl.DataFrame:
    """A record id kept earlier in this batch, or in an earlier batch of the file, is a
    `duplicate_record_id`: the first is kept, every repeat quarantined."""
    dup = pl.col("_reason").is_null() & ~pl.col("record_id").is_first_distinct().over("_reason")
    df = df.with_columns(
        pl.when(dup).then(pl.lit("duplicate_record_id")).otherwise("_reason").alias("_reason")
    )
    if seen_ids is None:
        return df
    kept = df.get_column("_reason").is_null()
    fresh = seen_ids.add_new(df.get_column("record_id").filter(kept))
    repeat = np.zeros(len(df), dtype=bool)
    repeat[np.flatnonzero(kept.to_numpy())[~fresh]] = True
    return df.with_columns(
        pl.when(pl.Series(repeat))
        .then(pl.lit("duplicate_record_id"))
        .otherwise("_reason")
        .alias("_reason")
    )


def _routed(good: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    """The kept rows in the canonical columns: a token where a party is an end user, the
    literal sender id or short code where it is a business; months past their purge date
    (late arrivals) or already purged marked `_expired` (gold only)."""
    expired = _expired_months(good, ctx)
    return good.with_columns(
        pl.col("event_time").dt.year().cast(pl.Int32).alias("year"),
        pl.col("event_time").dt.month().cast(pl.Int32).alias("month"),
        _month_index(pl.col("event_time")).is_in(expired).alias("_expired"),
        pl.when(_PERSONAL_O).then(pl.col("o_token")).otherwise(pl.col("o_value")).alias("origin"),
        pl.when(_PERSONAL_D)
        .then(pl.col("d_token"))
        .otherwise(pl.col("d_value"))
        .alias("destination"),
        pl.col("o_country").alias("origin_country"),
        pl.col("d_country").alias("destination_country"),
        pl.col("o_domain").alias("origin_domain"),
        pl.col("d_domain").alias("destination_domain"),
        pl.col("o_kind").alias("origin_kind"),
        pl.col("d_kind").alias("destination_kind"),
        pl.lit(ctx.source).alias("source"),
        pl.lit(ctx.source_file).alias("source_file"),
        pl.lit(ctx.sha256).alias("source_sha256"),
    )


def _commitments(
    gold_rows: pl.DataFrame, ctx: FileContext, leaf_offset: int
) -> tuple[pl.DataFrame, pl.Series]:
    """Each record's identity commitment and leaf index (columns kept with it) and its Merkle
    leaf: its retained fields as gold holds them, bound to its end users' identifiers."""
    index = pl.int_range(leaf_offset, leaf_offset + pl.len(), dtype=pl.Int64)
    committed = gold_rows.select(
        identity_commitment(
            index,
            pl.when(_PERSONAL_O).then(pl.col("o_kind") + pl.lit(":") + pl.col("o_value")),
            pl.when(_PERSONAL_D).then(pl.col("d_kind") + pl.lit(":") + pl.col("d_value")),
            ctx.commit_key,
        ).alias("identity_commitment"),
        index.alias("leaf_index"),
    )
    leaves = leaves_of(
        gold_rows.with_columns(committed.get_column("identity_commitment")),
        ctx.commitment_encoding,
    )
    return committed, leaves


def _vault(live: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    """Token → identifier of every end user of the live rows, once per month (none for a
    suppressed token: an erased person is never re-identified by a re-delivery)."""
    vault = pl.concat(
        [
            live.filter(personal).select(
                *_PARTS,
                pl.col(f"{p}_token").alias("token"),
                pl.col(f"{p}_kind").alias("kind"),
                pl.col(f"{p}_value").alias("identifier"),
            )
            for p, personal in (("o", _PERSONAL_O), ("d", _PERSONAL_D))
        ]
    ).unique(subset=["year", "month", "token"], keep="first")
    if ctx.suppressed:
        vault = vault.filter(~pl.col("token").is_in(list(ctx.suppressed)))
    return vault


def _expired_months(good: pl.DataFrame, ctx: FileContext) -> list[int]:
    """Month indices (year * 12 + month - 1) of the batch that keep no identifiers: past the
    policy's purge date on `as_of` (a late arrival), or already purged."""
    months = good.select(
        pl.col("event_time").dt.year().alias("y"), pl.col("event_time").dt.month().alias("m")
    ).unique()
    late = [
        y * 12 + m - 1 for y, m in months.iter_rows() if ctx.identifier_purge(y, m) <= ctx.as_of
    ]
    purged = [int(m[:4]) * 12 + int(m[5:7]) - 1 for m in ctx.purged_months]
    return sorted(set(late) | set(purged))


def _closed_vocabularies(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Enumerated columns keep only their vocabulary (`normal_course.closed`); anything else
    becomes `other`, counted `other:<column>`. An unknown channel's text is kept in
    `channel_detail` (free text: scrubbed like any other); the text of an unknown currency or
    direction stays only in the sealed original."""
    others = df.select(
        normal_course.outside(c, pl.col(c)).sum().alias(f"{OTHER}:{c}")
        for c in normal_course.VOCABULARIES
    ).row(0, named=True)
    return normal_course.closed(df), {k: int(v) for k, v in others.items() if v}


#: derived columns a record's own content decides, and the column each is recomputed in: a
#: file's value that differs is a contradiction (counted, never trusted). The file, line,
#: commitment and leaf describe the file a record was exported from, so they are only counted.
_RECOMPUTED = {
    "origin_kind": "o_kind",
    "destination_kind": "d_kind",
    "origin_country": "o_country",
    "destination_country": "d_country",
    "origin_domain": "o_domain",
    "destination_domain": "d_domain",
}


def _claims_checked(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Count a canonical file's own values of derived columns (`claimed:<column>`) on the rows
    kept so far: `derived:<column>` for each value given (recomputed, the file's ignored) and
    `contradicts:<column>` where it differs from the value recomputed. Then drop them."""
    given = [c for c in df.columns if c.startswith(claimed(""))]
    if not given:
        return df, {}
    kept = df.filter(pl.col("_reason").is_null())
    counts: list[pl.Expr] = []
    for col in given:
        name = col.removeprefix(claimed(""))
        value = pl.col(col).str.strip_chars()
        counts.append(value.is_not_null().sum().alias(f"derived:{name}"))
        if name in _RECOMPUTED:  # compared without case: `pk` claims what `PK` does
            derived = pl.col(_RECOMPUTED[name]).str.to_lowercase()
            differs = value.is_not_null() & (value.str.to_lowercase() != derived).fill_null(True)
            counts.append(differs.sum().alias(f"contradicts:{name}"))
    found = kept.select(counts).row(0, named=True)
    return df.drop(given), {k: int(v) for k, v in found.items() if v}


def _redelivered(df: pl.DataFrame, prior: Prior | None) -> pl.DataFrame:
    """Quarantine kept records whose ID an earlier file of the source kept in the same month;
    the note names that file by digest."""
    if prior is None:
        return df.with_columns(pl.lit(None, pl.String).alias("note"))
    kept = df.get_column("_reason").is_null()
    candidates = df.filter(kept)
    earlier = prior(candidates.get_column("record_id"), _month_index(candidates.get_column("event_time")))  # fmt: skip
    note = pl.Series("note", [None] * len(df), dtype=pl.String)
    rows = np.flatnonzero(kept.to_numpy())
    found = [(int(rows[i]), f"earlier file {d}") for i, d in enumerate(earlier) if d]
    if found:
        note = note.scatter([i for i, _ in found], [n for _, n in found])
    return df.with_columns(note).with_columns(
        pl.when(pl.col("note").is_not_null())
        .then(pl.lit("duplicate_record_id"))
        .otherwise("_reason")
        .alias("_reason")
    )


class AddressBook:
    """Every distinct address written in one file, classified once: normalised, its country
    resolved, its domain taken and its token computed.

    A file's end users and senders recur through its batches, so each batch looks up what the
    earlier ones already classified and classifies only what is new. The book belongs to one
    file (its region, its token key) and is bounded: past `limit` entries (about 80 bytes each,
    40 MiB at the limit) it starts afresh, so memory follows the limit, not the file. A
    smaller book costs CPU: the 1 M-row bench file writes 288,000 distinct addresses, and a
    book of 200,000 classified 533,000 (each about 6 µs).
    """

    def __init__(self, limit: int = 500_000) -> None:
        self.resolver = CountryResolver()
        self.limit = limit
        self._known: pl.DataFrame | None = None

    def entries(self, raw: pl.Series, ctx: FileContext) -> pl.DataFrame:
        """The classified entry (`raw`, `a_*`) of each value of `raw`, row for row.

        Only the batch's own distinct values are looked up in the book and joined back, so a
        batch costs what it holds, not what the book holds."""
        wanted = raw.unique().to_frame("raw")
        known = self._known
        if known is None:
            hits, new = wanted.clear(), wanted
        else:
            hits = known.join(wanted, on="raw", how="semi", nulls_equal=True)
            new = wanted.join(hits.select("raw"), on="raw", how="anti", nulls_equal=True)
        here = hits
        if len(new) or known is None:  # the first batch gives the book its columns
            fresh = _classified(new, ctx, self.resolver)
            here = pl.concat([hits, fresh]) if len(hits) else fresh
            if known is None or len(known) + len(fresh) > self.limit:
                self._known = here  # start afresh, with what this batch needs
            else:
                self._known = pl.concat([known, fresh], rechunk=False)
        return raw.to_frame("raw").join(
            here, on="raw", how="left", nulls_equal=True, maintain_order="left"
        )


#: marks the address key of a PBX's own endpoint (`PARSED`'s `*_internal`); a value a file
#: writes that starts like a mark is itself marked `PLAIN`, so no file can claim to be one
INTERNAL = "\x00internal:"
PLAIN = "\x00plain:"
#: an endpoint's name as a dial plan writes it: an extension or SIP user, no `+`, no spaces
ENDPOINT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _address_key(parsed: pl.DataFrame, side: str) -> pl.Series:
    """The party as written, or marked as a PBX's own endpoint (classified apart, cached apart)."""
    raw, internal = parsed.get_column(f"{side}_raw"), parsed.get_column(f"{side}_internal")
    if not internal.any() and not raw.str.starts_with("\x00").any():
        return raw
    value = pl.col(f"{side}_raw")
    return parsed.select(
        pl.when(pl.col(f"{side}_internal") & value.str.contains(ENDPOINT))
        .then(INTERNAL + value)
        .when(value.str.starts_with("\x00"))
        .then(PLAIN + value)
        .otherwise(value)
    ).to_series()


def _classified(raw: pl.DataFrame, ctx: FileContext, resolver: CountryResolver) -> pl.DataFrame:
    """Distinct written addresses (`raw`) → `a_value/_kind/_country/_domain/_token/_bad ...`.

    A PBX's own endpoint (an extension or SIP user, marked `INTERNAL`) is a SIP user whatever
    its digits and the deployment's region: `1001`, `0101` and `2345678` are a dial plan's names,
    never numbers of a country's plan (read as such, one was quarantined under one region and
    kept as another country's number under the next)."""
    if raw.get_column("raw").str.starts_with("\x00").any():
        norm = _endpoints_apart(raw, ctx)
    else:  # no key marked (no PBX endpoint here): the values as written
        norm = normalise_addresses(
            raw, {"raw": "a"}, ctx.default_region, ctx.international, ctx.alphanumeric
        )
    norm = resolver.country(norm, "a_value", "a_cc", "a_country").drop("a_cc")
    # The party's routing value in gold for e-mail and SIP, taken before the value is tokenised.
    norm = norm.with_columns(
        pl.when(~pl.col("a_bad"))
        .then(routing_domain(pl.col("a_kind"), pl.col("a_value")))
        .alias("a_domain")
    )
    # Tokens too depend on the value alone: one HMAC per distinct identifier; so do the forms
    # the free-text checks look for.
    return norm.with_columns(
        pl.when(pl.col("a_kind").is_in(PERSONAL_KINDS) & ~pl.col("a_bad"))
        .then(token_expr(pl.col("a_kind"), pl.col("a_value"), ctx.token_key, ctx.token_version))
        .alias("a_token"),
        *party_patterns("a"),
    )


def _endpoints_apart(raw: pl.DataFrame, ctx: FileContext) -> pl.DataFrame:
    """`normalise_addresses` of marked keys: each read without its mark, an `INTERNAL` one
    then a SIP user (unless withheld), a `PLAIN` one as the value it holds."""
    internal = pl.col("raw").str.starts_with(INTERNAL).fill_null(False)
    address = (
        pl.when(internal)
        .then(pl.col("raw").str.strip_prefix(INTERNAL))
        .otherwise(pl.col("raw").str.strip_prefix(PLAIN))
    )
    norm = normalise_addresses(
        raw.with_columns(address.alias("_address")),
        {"_address": "a"},
        ctx.default_region,
        ctx.international,
        ctx.alphanumeric,
    )
    endpoint = internal & (pl.col("a_kind") != "unknown").fill_null(True)
    return norm.with_columns(
        pl.when(endpoint).then(pl.lit("sip")).otherwise("a_kind").alias("a_kind"),
        pl.when(endpoint)
        .then(pl.col("_address").str.to_lowercase())
        .otherwise("a_value")
        .alias("a_value"),
        pl.when(endpoint).then(None).otherwise("a_cc").alias("a_cc"),
        pl.when(endpoint).then(False).otherwise("a_bad").alias("a_bad"),
        pl.when(endpoint).then(False).otherwise("a_ambiguous").alias("a_ambiguous"),
    ).drop("_address")


def _classify(parsed: pl.DataFrame, ctx: FileContext, book: AddressBook) -> pl.DataFrame:
    """Add `{o,d}_value/_kind/_country/_token/_bad/_tail/_name`, each distinct written value
    classified once per file (`AddressBook`): the origins' entries, then the destinations'."""
    entries = book.entries(
        pl.concat([_address_key(parsed, "origin"), _address_key(parsed, "destination")]), ctx
    ).drop("raw")
    n = len(parsed)
    if len(entries) != 2 * n:  # an entry held twice would shift every party after it
        raise RuntimeError("the address book holds an address twice")
    return pl.concat(
        [
            parsed,
            entries.slice(0, n).rename(lambda c: c.replace("a_", "o_", 1)),
            entries.slice(n).rename(lambda c: c.replace("a_", "d_", 1)),
        ],
        how="horizontal",
    )
