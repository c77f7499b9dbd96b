"""The Assets the CDR DAGs write, on the store's real URI (`s3://bucket/prefix/gold/cdr` or
`file:///.../gold/cdr`), emitted through the `cdr_tiers` alias only when rows were written or
removed, with the counts in the event's `extra`. Downstream DAGs schedule on them by name
(`Asset.ref(name="cdr_gold")`), so a deployment's URI is never spelled in a DAG file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias

from pipeline.core import layout
from pipeline.core.store import ObjectStore

#: What the ingest task writes; each event names the tier's Asset on the store's real URI.
TIERS = AssetAlias(name="cdr_tiers")
#: Asset name → the tier's prefix in the store.
TIER_ASSETS = {"cdr_gold": layout.GOLD, "cdr_silver": layout.SILVER, "cdr_vault": layout.VAULT}
#: The counts an asset event carries.
EVENT_COUNTS = ("records", "silver", "gold", "gold_only", "quarantined")


def asset_uri(store: ObjectStore, prefix: str) -> str:
    """The URI of a tier in the store: `s3://bucket/prefix/gold/cdr`, `file:///.../gold/cdr`."""
    where = store.uri(prefix.rstrip("/"))
    return where if "://" in where else Path(where).as_uri()


def tier_events(store: ObjectStore, ref: str, report: dict[str, Any]) -> list[tuple[Asset, dict]]:  # type: ignore[type-arg]
    """(asset, extra) for each tier the file wrote rows to; none when nothing was written."""
    if report["status"] != "ingested":
        return []
    extra = {"file": ref, "sha256": report["sha256"], "months": report["months"]}
    extra |= {k: int(report[k]) for k in EVENT_COUNTS}
    wrote = {"cdr_gold": report["gold"], "cdr_silver": report["silver"], "cdr_vault": report["silver"]}  # fmt: skip
    return [
        (Asset(name=name, uri=asset_uri(store, TIER_ASSETS[name])), extra)
        for name, rows in wrote.items()
        if rows
    ]


def retention_events(store: ObjectStore, report: dict[str, Any]) -> list[tuple[Asset, dict]]:  # type: ignore[type-arg]
    """An event on `cdr_gold` when retention removed gold years (none otherwise)."""
    if report.get("dry_run") or not report.get("gold_years"):
        return []
    extra = {"as_of": report["as_of"], "gold_years_removed": len(report["gold_years"])}
    return [(Asset(name="cdr_gold", uri=asset_uri(store, layout.GOLD)), extra)]


def gold_ref() -> Any:
    """The gold Asset by name, for schedules (its URI depends on the deployment)."""
    return Asset.ref(name="cdr_gold")
