"""Re-identification risk of a gold month, measured as ARX measures a table (docs/risk.md).

Gold keeps, per communication, what an attacker may already know of one call: roughly when it
happened, how long it lasted, the channel, the business customer, the route, and each party's
country, network or e-mail/SIP domain. Records equal on all of those (the quasi-identifiers,
time and duration grouped to the policy's granularity) form an equivalence class; a record in a
class of size s is re-identified by someone who knows those facts with probability 1/s (the
prosecutor model). The report gives:

- the share of records in classes smaller than k, for k = 2 (unique), 5 and 10;
- the highest prosecutor risk (1 / the smallest class) and the average (classes / records);
- the values that make records rare: for each domain, network and route column, the values
  most often held by records in classes smaller than the policy's k, as counts and keyed
  labels (HMAC-SHA256 under a key of the keyring), never as values.

A class is keyed by two 64-bit hashes of its quasi-identifiers, so the class table holds two
integers and a count per class whatever the columns hold, and the scan runs on polars'
streaming engine: memory follows the number of classes, not the month's rows or bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipeline.core.gold_risk import REPORTED_K, GoldRiskPolicy

#: gold's quasi-identifiers besides time and duration
QUASI_IDENTIFIERS = (
    "origin_country",
    "destination_country",
    "origin_network",
    "destination_network",
    "origin_domain",
    "destination_domain",
    "customer_id",
    "route_id",
    "channel",
)
#: the columns whose rare values a report names (by label)
RARE_COLUMNS = (
    "origin_domain",
    "destination_domain",
    "origin_network",
    "destination_network",
    "route_id",
)
#: each domain or network column and the country column generalisation keeps with it
GENERALISED = {
    "origin_domain": "origin_country",
    "destination_domain": "destination_country",
    "origin_network": "origin_country",
    "destination_network": "destination_country",
}
OTHER = "other"
TOP_RARE = 10
_SEEDS = (0x5EED_0001, 0x5EED_0002)


@dataclass
class RiskMeasures:
    """What a month's class sizes say."""

    records: int = 0
    classes: int = 0
    share_below: dict[int, float] = field(default_factory=dict)
    unique_share: float = 0.0
    max_risk: float = 0.0
    average_risk: float = 0.0
    smallest_class: int = 0


def grouped(frame: pl.LazyFrame, policy: GoldRiskPolicy) -> pl.LazyFrame:
    """The quasi-identifiers of every record, time and duration at the policy's granularity."""
    return frame.select(
        *QUASI_IDENTIFIERS,
        pl.col("event_time").dt.truncate(f"{policy.time_minutes}m").alias("time_group"),
        (pl.col("duration_s").cast(pl.Float64) // policy.duration_seconds)
        .cast(pl.Int64)
        .alias("duration_group"),
    )


def generalise(frame: pl.LazyFrame, rare: dict[str, Sequence[str]]) -> pl.LazyFrame:
    """Each listed value of a domain or network column as `other` plus its party's country
    (`other:PK`; `other` when the country is unknown)."""
    changes = []
    for column, values in rare.items():
        if not values:
            continue
        country = pl.col(GENERALISED[column])
        other = pl.concat_str(pl.lit(f"{OTHER}:"), country).fill_null(pl.lit(OTHER))
        changes.append(
            pl.when(pl.col(column).is_in(list(values)))
            .then(other)
            .otherwise(pl.col(column))
            .alias(column)
        )
    return frame.with_columns(changes) if changes else frame


def class_keys(qi: pl.LazyFrame) -> pl.LazyFrame:
    """Each record's class as two 64-bit hashes of its quasi-identifiers (nulls included)."""
    return qi.select(_keys())


def _keys() -> list[pl.Expr]:
    row = pl.struct(*QUASI_IDENTIFIERS, "time_group", "duration_group")
    return [row.hash(_SEEDS[0]).alias("k1"), row.hash(_SEEDS[1]).alias("k2")]


def class_sizes(keys: pl.LazyFrame) -> pl.DataFrame:
    """One row per class: its keys and size."""
    return keys.group_by("k1", "k2").agg(pl.len().alias("size")).collect(engine="streaming")


def measures(sizes: pl.Series, ks: Sequence[int] = REPORTED_K) -> RiskMeasures:
    """The class-size distribution's shares and the prosecutor risks (empty: all zero)."""
    records = int(sizes.sum()) if len(sizes) else 0
    if not records:
        return RiskMeasures(share_below=dict.fromkeys(ks, 0.0))
    share = {k: float(sizes.filter(sizes < k).sum()) / records for k in ks}
    smallest = int(sizes.min())  # type: ignore[arg-type]
    return RiskMeasures(
        records=records,
        classes=len(sizes),
        share_below=share,
        unique_share=float(sizes.filter(sizes == 1).sum()) / records,
        max_risk=1.0 / smallest,
        average_risk=len(sizes) / records,
        smallest_class=smallest,
    )


def rare_values(
    qi: pl.LazyFrame, sizes: pl.DataFrame, k: int, key: bytes
) -> dict[str, list[dict[str, Any]]]:
    """Per rare-value column, the values most held by records in classes smaller than `k`:
    their label, those records and all the month's records with the value. One pass keeps
    the at-risk records' rare-value columns; one more per column counts each value's records."""
    small = sizes.filter(pl.col("size") < k).select("k1", "k2")
    # a filter on the first key streams (a join would buffer the strings); the second key then
    # settles the rare row whose first key alone matched a small class
    at_risk = (
        qi.select(*RARE_COLUMNS, *_keys())
        .filter(pl.col("k1").is_in(small["k1"].implode()))
        .collect(engine="streaming")
        .join(small, on=["k1", "k2"], how="semi")
        .select(RARE_COLUMNS)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for column in RARE_COLUMNS:
        top = (
            at_risk.filter(pl.col(column).is_not_null())
            .group_by(column)
            .agg(pl.len().alias("records_at_risk"))
            .sort(["records_at_risk", column], descending=[True, False])
            .head(TOP_RARE)
        )
        totals = dict(
            qi.select(column)
            .filter(pl.col(column).is_in(top[column].implode()))
            .group_by(column)
            .agg(pl.len())
            .collect(engine="streaming")
            .iter_rows()
        )
        out[column] = [
            {"label": label(key, column, value), "records_at_risk": n, "records": totals[value]}
            for value, n in top.iter_rows()
        ]
    return out


def label(key: bytes, column: str, value: str) -> str:
    """A value's keyed label: stable across reports, not reversible without the key."""
    digest = hmac.new(key, f"{column}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"v-{digest[:12]}"


def rare_by_users(users: pl.LazyFrame, below: int) -> dict[str, list[str]]:
    """Per domain or network column, the values fewer than `below` distinct end users held in
    the month (`users`: the column's value and an end user's token per row)."""
    out: dict[str, list[str]] = {}
    for column in GENERALISED:
        counted = (
            users.filter(pl.col(column).is_not_null())
            .group_by(column)
            .agg(pl.col(f"{column}__user").n_unique().alias("users"))
            .filter(pl.col("users") < below)
            .collect(engine="streaming")
        )
        out[column] = sorted(counted[column].to_list())
    return out
