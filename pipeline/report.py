"""Summaries a person reads: per-file results of a run, and what the store holds per tier.

Both are built from counts only (reports and signed parse entries), never from record values, so
they are safe to print, log and return through XCom.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pipeline.store import ObjectStore

TIERS = {
    "landing": "landing/",
    "bronze": "bronze/",
    "silver": "silver/cdr/",
    "vault": "vault/",
    "gold": "gold/cdr/",
    "quarantine": "quarantine/",
    "seals": "seals/",
}


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [[f"{c:,}" if isinstance(c, int) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if n and c[:1].isdigit() else c.ljust(w)
                for c, w in zip(r, widths, strict=True)
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


COUNTS = ("records", "silver", "gold", "gold_only", "quarantined")


def totals(reports: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Sums over a run's file reports, plus files per status."""
    reports = list(reports)
    out = {k: sum(int(r[k]) for r in reports) for k in COUNTS}
    for status in ("ingested", "already_ingested", "quarantined_file"):
        out[f"files_{status}"] = sum(r["status"] == status for r in reports)
    return out


def run_summary(reports: Iterable[dict[str, Any]]) -> str:
    """A table of what happened to each file of a run, then quarantine reasons."""
    reports = list(reports)
    rows = [
        [
            r["file"],
            r.get("format") or "-",
            r["status"],
            r["records"],
            r["silver"],
            r["gold"],
            r["gold_only"],
            r["quarantined"],
        ]
        for r in reports
    ]
    sums = totals(reports)
    total = ["TOTAL", "", f"{len(reports)} files", *[sums[k] for k in COUNTS]]
    out = [
        _table(
            ["file", "format", "status", "records", "silver", "gold", "gold only", "quarantined"],
            [*rows, total],
        )
    ]
    reasons: Counter[str] = Counter()
    for r in reports:
        reasons.update(r.get("reasons") or {})
    if reasons:
        out.append("\nQuarantined rows by reason:")
        out.append(_table(["reason", "rows"], [[k, v] for k, v in sorted(reasons.items())]))
    whole = [r for r in reports if r["status"] == "quarantined_file"]
    for r in whole:
        out.append(f"\nFILE QUARANTINED WHOLE: {r['file']}: {r.get('detail')}")
    skipped = [r["file"] for r in reports if r["status"] == "already_ingested"]
    if skipped:
        out.append(f"\nSkipped as already ingested: {', '.join(skipped)}")
    return "\n".join(out)


def ingested_files(store: ObjectStore) -> list[dict[str, Any]]:
    """One report per ingested file, from the signed parse entries (the record of truth)."""
    reports = []
    for obj in store.list("seals/"):
        if obj.key.endswith(".parse.json"):
            body = json.loads(store.get_bytes(obj.key))["body"]
            reports.append({k: body.get(k) or 0 for k in COUNTS} | body)
    return sorted(reports, key=lambda r: (r.get("source", ""), r.get("file", "")))


def store_summary(store: ObjectStore) -> str:
    """Where each tier is, how many objects it holds, and what every sealed file became."""
    rows = []
    for tier, prefix in TIERS.items():
        objects = list(store.list(prefix))
        rows.append([tier, len(objects), sum(o.size for o in objects), store.uri(prefix)])
    files = ingested_files(store)
    out = [f"Files sealed and ingested ({len(files)}):", run_summary(files), ""]
    out.append(_table(["tier", "objects", "bytes", "location"], rows))
    return "\n".join(out)
