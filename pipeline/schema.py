"""The canonical CDR: one table every source maps to (silver), and its non-identifying gold form.

Parsers produce a *parsed* frame (`PARSED`): canonical fields with origin and destination still as
written by the source, plus `raw` (the original row, kept only to quarantine it, encrypted) and
`source_line`. `pipeline.transform` turns that into silver and gold.
"""

from __future__ import annotations

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")

CHANNELS = ("sms", "mms", "voice", "email", "whatsapp", "viber", "rcs", "telegram", "other")
DIRECTIONS = ("outbound", "inbound")

# Fields a parser fills (all optional except record_id/event_time, checked later).
PARSED: dict[str, pl.DataType] = {
    "source_line": pl.Int64(),
    "record_id": pl.String(),
    "event_time": UTC_TS,
    "end_time": UTC_TS,
    "channel": pl.String(),
    "direction": pl.String(),
    "customer_id": pl.String(),
    "origin_raw": pl.String(),
    "destination_raw": pl.String(),
    "origin_network": pl.String(),
    "destination_network": pl.String(),
    "route_id": pl.String(),
    "duration_s": pl.Float64(),
    "units": pl.Int64(),
    "status": pl.String(),
    "error_code": pl.String(),
    "price": pl.Float64(),
    "currency": pl.String(),
    "parse_error": pl.String(),  # a reason code set by the parser (e.g. bad_timestamp)
    "raw": pl.String(),
}

SILVER: dict[str, pl.DataType] = {
    "record_id": pl.String(),
    "source": pl.String(),
    "source_file": pl.String(),
    "source_sha256": pl.String(),
    "source_line": pl.Int64(),
    "event_time": UTC_TS,
    "end_time": UTC_TS,
    "channel": pl.String(),
    "direction": pl.String(),
    "customer_id": pl.String(),
    "origin": pl.String(),
    "origin_kind": pl.String(),
    "destination": pl.String(),
    "destination_kind": pl.String(),
    "origin_country": pl.String(),
    "destination_country": pl.String(),
    "origin_network": pl.String(),
    "destination_network": pl.String(),
    "route_id": pl.String(),
    "duration_s": pl.Float64(),
    "units": pl.Int64(),
    "status": pl.String(),
    "error_code": pl.String(),
    "price": pl.Float64(),
    "currency": pl.String(),
}

# Gold has the same columns; personal origin/destination values are null there.
GOLD = SILVER

# The canonical CSV/Parquet source: silver's columns as a source writes them (raw addresses).
CANONICAL_SOURCE_COLUMNS = [
    c for c in SILVER if c not in {"source", "source_file", "source_sha256", "source_line"}
]

QUARANTINE_ROWS: dict[str, pl.DataType] = {
    "source": pl.String(),
    "source_file": pl.String(),
    "source_sha256": pl.String(),
    "source_line": pl.Int64(),
    "reason": pl.String(),
    "raw_encrypted": pl.Binary(),
}

VAULT: dict[str, pl.DataType] = {
    "token": pl.String(),
    "kind": pl.String(),
    "identifier_encrypted": pl.Binary(),
}


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
