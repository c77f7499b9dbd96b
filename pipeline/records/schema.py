"""The canonical CDR: one table every source maps to (silver), and its non-identifying gold form.

Parsers produce a *parsed* frame (`PARSED`): canonical fields with origin and destination still as
written by the source, plus `raw` (the original row, kept only to quarantine it, encrypted) and
`source_line`. `pipeline.records.transform` turns that into silver and gold.
"""

from __future__ import annotations

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")

CHANNELS = ("sms", "mms", "voice", "email", "whatsapp", "viber", "rcs", "telegram", "other")
DIRECTIONS = ("outbound", "inbound")

# Fields a parser fills (all optional except record_id/event_time, checked later).
S, TS, I64, F64 = pl.String(), UTC_TS, pl.Int64(), pl.Float64()
_WHEN = {"event_time": TS, "end_time": TS, "channel": S, "channel_detail": S, "direction": S, "customer_id": S}  # fmt: skip
_ROUTE = {"origin_network": S, "destination_network": S, "route_id": S}
_MEASURES = {"duration_s": F64, "units": I64, "status": S, "error_code": S, "price": F64, "currency": S}  # fmt: skip

# Fields a parser fills: addresses still as written, plus the raw row (kept only to quarantine
# it, encrypted) and a reason code where the parser could not read a value.
PARSED: dict[str, pl.DataType] = {
    "source_line": I64,
    "record_id": S,
    **_WHEN,
    "origin_raw": S,
    "destination_raw": S,
    **_ROUTE,
    **_MEASURES,
    "parse_error": S,
    "raw": S,
}

# The canonical CDR: what every record keeps; gold keeps it without personal values.
CANONICAL: dict[str, pl.DataType] = {
    "record_id": S,
    "source": S,
    "source_file": S,
    "source_sha256": S,
    "source_line": I64,
    **_WHEN,
    "origin": S,
    "origin_kind": S,
    "destination": S,
    "destination_kind": S,
    "origin_country": S,
    "destination_country": S,
    # the domain of an e-mail or SIP party, derived from its address before tokenising
    "origin_domain": S,
    "destination_domain": S,
    **_ROUTE,
    **_MEASURES,
}

# Derived by the pipeline from the normalised address, never read from a source.
DERIVED_DOMAINS = ("origin_domain", "destination_domain")

# The fields a record's digest covers (pipeline.proof.commitments), in this order, as gold holds them.
RETAINED = list(CANONICAL)

# Silver and gold add what ties each record to its sealed original: the commitment to its end
# users' identifiers and its leaf's position in the file's Merkle tree.
SILVER: dict[str, pl.DataType] = {**CANONICAL, "identity_commitment": S, "leaf_index": I64}

# Gold has the same columns; personal origin/destination values are null there.
GOLD = SILVER

# The canonical CSV/Parquet source: silver's columns as a source writes them (raw addresses).
CANONICAL_SOURCE_COLUMNS = [
    c
    for c in CANONICAL
    if c not in {"source", "source_file", "source_sha256", "source_line", *DERIVED_DOMAINS}
]

QUARANTINE_ROWS: dict[str, pl.DataType] = {
    "source": pl.String(),
    "source_file": pl.String(),
    "source_sha256": pl.String(),
    "source_line": pl.Int64(),
    "reason": pl.String(),
    "raw_encrypted": pl.Binary(),
    #: what the reason refers to, never a value (e.g. the earlier file of a duplicate record ID)
    "note": pl.String(),
}

PROOFS: dict[str, pl.DataType] = {"leaf": pl.Binary()}

VAULT: dict[str, pl.DataType] = {
    "token": pl.String(),
    "kind": pl.String(),
    "identifier_encrypted": pl.Binary(),
}

#: a vault entry before its identifier is encrypted (in memory only: never written in clear)
VAULT_ENTRY = ("year", "month", "token", "kind", "identifier")


def empty_parsed() -> pl.DataFrame:
    return pl.DataFrame(schema=PARSED)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast to exactly `schema`, adding missing columns as nulls."""
    return df.select(
        [
            (pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c)
            for c, t in schema.items()
        ]
    )
