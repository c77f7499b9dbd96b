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
#: ISO 4217 alphabetic codes, current and recently withdrawn (records can be years old);
#: anything else a source writes in `currency` is stored as `other` (counted `other:currency`)
CURRENCIES = tuple(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BOV",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BYR",
        "BZD",
        "CAD",
        "CDF",
        "CHE",
        "CHF",
        "CHW",
        "CLF",
        "CLP",
        "CNY",
        "COP",
        "COU",
        "CRC",
        "CUC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EEK",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HRK",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LTL",
        "LVL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRO",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MXV",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SLL",
        "SOS",
        "SRD",
        "SSP",
        "STD",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "USN",
        "UYI",
        "UYU",
        "UYW",
        "UZS",
        "VED",
        "VEF",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XAG",
        "XAU",
        "XBA",
        "XBB",
        "XBC",
        "XBD",
        "XCD",
        "XCG",
        "XDR",
        "XOF",
        "XPD",
        "XPF",
        "XPT",
        "XSU",
        "XTS",
        "XUA",
        "XXX",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
        "ZWL",
    ]
)
OTHER = "other"

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
    # a PBX's own endpoint (extension or SIP user), as its call record shows: a SIP user
    # whatever its digits (`transform._classify`); null where a format cannot tell
    "origin_internal": pl.Boolean(),
    "destination_internal": pl.Boolean(),
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

# Columns of the canonical schema the pipeline derives itself. A canonical file may carry them
# (another deployment's gold, a partner writing the published schema): they are recomputed and
# the file's values ignored, counted `derived:<column>` in the parse entry.
DERIVED_COLUMNS = (
    "source", "source_file", "source_sha256", "source_line",
    "origin_kind", "destination_kind", "origin_country", "destination_country",
    *DERIVED_DOMAINS, "identity_commitment", "leaf_index",
)  # fmt: skip

# The canonical CSV/Parquet source: silver's columns as a source writes them (raw addresses).
CANONICAL_SOURCE_COLUMNS = [c for c in SILVER if c not in DERIVED_COLUMNS]


def claimed(column: str) -> str:
    """The parsed column holding a file's own value of a derived column (`DERIVED_COLUMNS`):
    compared with the recomputed value, never stored."""
    return f"claimed:{column}"


# --- what each stored column may hold (closed world) ------------------------------------------
# Every column a tier stores has a declared kind, and the writer refuses a column without one
# (`require_kinds`): nothing is kept because nobody thought to check it.
IDENTIFIER = "identifier"  # an end user's token in silver (null in gold), or a business sender
#                            ID or short code kept literally (checked by its shape)
ROUTING = "routing"  # derived from an identifier before it is tokenised: country, domain
ENUMERATED = "enumerated"  # a closed vocabulary (`VOCABULARIES`): anything else is its "other"
TYPED = "typed"  # a timestamp, duration, count, price or position: typed, never text
FREE_TEXT = "free_text"  # text a source writes: passes the identifier detector, masked on a hit
PROVENANCE = "provenance"  # set by the pipeline: source slug, file label, digests, commitments
ENCRYPTED = "encrypted"  # ciphertext under a data key (the vault, raw quarantined rows)

COLUMN_KINDS: dict[str, str] = {
    "record_id": FREE_TEXT,
    "source": PROVENANCE,
    "source_file": PROVENANCE,
    "source_sha256": PROVENANCE,
    "source_line": TYPED,
    "event_time": TYPED,
    "end_time": TYPED,
    "channel": ENUMERATED,
    "channel_detail": FREE_TEXT,
    "direction": ENUMERATED,
    "customer_id": FREE_TEXT,
    "origin": IDENTIFIER,
    "origin_kind": ENUMERATED,
    "destination": IDENTIFIER,
    "destination_kind": ENUMERATED,
    "origin_country": ROUTING,
    "destination_country": ROUTING,
    "origin_domain": ROUTING,
    "destination_domain": ROUTING,
    # the network (MCC-MNC or a name) as the source gives it: routing, but written by the
    # source, so read as free text
    "origin_network": FREE_TEXT,
    "destination_network": FREE_TEXT,
    "route_id": FREE_TEXT,
    "duration_s": TYPED,
    "units": TYPED,
    "status": FREE_TEXT,
    "error_code": FREE_TEXT,
    "price": TYPED,
    "currency": ENUMERATED,
    "identity_commitment": PROVENANCE,
    "leaf_index": TYPED,
    # quarantine, proofs and vault
    "reason": PROVENANCE,
    "note": PROVENANCE,
    "raw_encrypted": ENCRYPTED,
    "leaf": PROVENANCE,
    "token": IDENTIFIER,
    "kind": ENUMERATED,
    "identifier_encrypted": ENCRYPTED,
}

#: the columns the identifier detector scrubs at ingest and the suites check (`freetext`)
FREE_TEXT_COLUMNS = tuple(c for c, k in COLUMN_KINDS.items() if k == FREE_TEXT)


class UndeclaredColumn(ValueError):
    """A tier was about to store a column whose kind nobody declared."""


def require_kinds(columns: list[str] | dict[str, pl.DataType]) -> None:
    """Refuse to store any column without a declared kind (`COLUMN_KINDS`)."""
    undeclared = [c for c in columns if c not in COLUMN_KINDS]
    if undeclared:
        raise UndeclaredColumn(
            f"no declared kind for column(s) {', '.join(undeclared)}: declare it in "
            "pipeline.records.schema.COLUMN_KINDS before a tier stores it"
        )


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
