"""Summaries a person reads: per-file results of a run, and what the store holds per tier.

Both are built from counts only (reports and signed parse entries), never from record values, so
they are safe to print, log and return through XCom.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pipeline.core import layout
from pipeline.core.lease import held_leases
from pipeline.core.store import ObjectStore
from pipeline.records.reasons import meaning


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

#: what a sealed file can become: the label a summary gives it, and what an operator does
#: (docs/formats.md, "What becomes of a file")
STATES = {
    "ingested": ("ingested", "nothing"),
    "quarantined_file": ("FILE QUARANTINED WHOLE", "ask the source for a readable file"),
    "refused": ("FILE REFUSED", "read the failed expectations in Data Docs; fix and resend"),
    "failed": ("FILE FAILED", "fix the cause in the log, then ingest the file again"),
    "sealed": ("SEALED, NOT PARSED", "an ingest was interrupted: rerun ingest"),
    "empty": ("EMPTY FILE", "nothing, unless the source should have sent records"),
}


def totals(reports: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Sums over a run's file reports, plus files per status."""
    reports = list(reports)
    out = {k: sum(int(r[k]) for r in reports) for k in COUNTS}
    for status in (*STATES, "already_ingested", "in_progress", "not_settled"):
        out[f"files_{status}"] = sum(r["status"] == status for r in reports)
    return out


#: the outcomes that fail a run: the file was not ingested (an operator acts on it)
FAILED = ("quarantined_file", "refused", "failed", "not_ingested")


def failed_files(reports: Iterable[dict[str, Any]]) -> list[str]:
    """The files of a run that were not ingested, as their reports name them."""
    return [r["file"] for r in reports if r["status"] in FAILED]


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
    if reports and all(r["status"] == "already_ingested" for r in reports):
        out.insert(
            0, f"Nothing new was ingested: all {len(reports)} files had been ingested before.\n"
        )
    reasons: Counter[str] = Counter()
    for r in reports:
        reasons.update(r.get("reasons") or {})
    if reasons:
        out.append("\nQuarantined rows by reason:")
        rows = [[k, v, meaning(k)] for k, v in sorted(reasons.items())]
        out.append(_table(["reason", "rows", "what it means"], rows))
    scrubbed: Counter[str] = Counter()
    for r in reports:
        scrubbed.update(r.get("scrubbed") or {})
    if scrubbed:
        out.append("\nValues changed in kept rows (masked: held an identifier; control: hidden")
        out.append("characters removed; other: outside the column's vocabulary; derived: a")
        out.append("canonical file's own value of a derived column, recomputed; contradicts: one")
        out.append("that differed from the value recomputed):")
        out.append(_table(["change", "values"], [[k, v] for k, v in sorted(scrubbed.items())]))
    for r in reports:
        if r["status"] in STATES and r["status"] != "ingested":
            label, action = STATES[r["status"]]
            why = r.get("detail") or r.get("reason") or "-"
            out.append(f"\n{label}: {r['file']}: {why}. To do: {action}")
    skipped = [r["file"] for r in reports if r["status"] == "already_ingested"]
    if skipped:
        out.append(f"\nSkipped as already ingested: {', '.join(skipped)}")
    busy = [r["file"] for r in reports if r["status"] == "in_progress"]
    if busy:
        out.append(f"\nSkipped, another run is ingesting them: {', '.join(busy)}")
    writing = [r["file"] for r in reports if r["status"] == "not_settled"]
    if writing:
        out.append(f"\nLeft in landing, still being written: {', '.join(writing)}")
    for r in reports:
        out += [f"\nWARNING {r['file']}: {w}" for w in r.get("warnings") or []]
    return "\n".join(out)


def ingested_files(store: ObjectStore) -> list[dict[str, Any]]:
    """One report per sealed file, from the signed parse entries (the record of truth); a file
    sealed without a parse entry is listed as `sealed`."""
    reports = [{k: body.get(k) or 0 for k in COUNTS} | body for body in layout.sealed_files(store)]
    return sorted(reports, key=lambda r: (r.get("source") or "", r.get("file") or ""))


#: what a machine-readable file entry carries: counts, states and reasons, never a value
FILE_FIELDS = (
    "file", "sha256", "source", "format", "status", "arrived_at", *COUNTS, "reasons",
    "scrubbed", "months", "reason", "replays",
)  # fmt: skip


def store_data(store: ObjectStore, docs: Any = None) -> dict[str, Any]:
    """`store_summary` as data (`summary --json`): tiers, totals and one entry per file."""
    files = [{k: r[k] for k in FILE_FIELDS if k in r} for r in ingested_files(store)]
    tiers = {}
    for tier, prefix in layout.TIERS.items():
        objects = list(store.list(prefix))
        tiers[tier] = {
            "objects": len(objects),
            "bytes": sum(o.size for o in objects),
            "location": store.uri(prefix),
        }
    return {
        "files": files,
        "totals": totals(files),
        "tiers": tiers,
        "data_docs": None if docs is None else str(docs),
    }


def holds_data(holds: Iterable[Any], as_of: Any) -> list[dict[str, Any]]:
    """`holds_table` as data (`hold list --json`): identifiers as a count, never tokens."""
    return [
        {
            "case": h.case,
            "state": "active" if h.active(as_of) else ("released" if h.released_at else "expired"),
            "identifiers": h.identifiers(),
            "customer": h.customer,
            "period_from": h.period_from,
            "period_to": h.period_to,
            "until": h.until,
            "statutory": h.statutory,
            "placed_at": h.placed_at,
            "released_at": h.released_at,
            "reason": h.reason,
        }
        for h in holds
    ]


def store_summary(store: ObjectStore, docs: Any = None) -> str:
    """Where each tier is, how many objects it holds, and what every sealed file became."""
    rows = []
    for tier, prefix in layout.TIERS.items():
        objects = list(store.list(prefix))
        rows.append([tier, len(objects), sum(o.size for o in objects), store.uri(prefix)])
    files = ingested_files(store)
    out = [f"Files sealed ({len(files)}):", run_summary(files), ""]
    leases = held_leases(store)
    if leases:
        out.append(f"Ingests under way ({len(leases)}):")
        out += [f"  {h.sha256[:12]}…  {h.describe()}" for h in leases]
        out.append("")
    out.append(_table(["tier", "objects", "bytes", "location"], rows))
    if docs is not None:
        out.append(f"\nData Docs (Great Expectations results): {docs}")
    return "\n".join(out)


def retention_summary(report: dict[str, Any]) -> str:
    """What a retention run purged (or would purge), per month, file, year and hold."""
    head = "WOULD PURGE (dry run)" if report["dry_run"] else "PURGED"
    out = [f"Retention as of {report['as_of']}: {head}"]
    months = [
        [m["month"], m["identifier_purge_date"], m["silver_objects"], m["vault_objects"],
         ", ".join(f"{c}: {n:,}" for c, n in m["held"].items()) or "-"]
        for m in report["months"]
    ]  # fmt: skip
    out.append("\nIdentifiers (silver, vault, month key), per month of communication:")
    out.append(
        _table(["month", "purge date", "silver objects", "vault objects", "held records"], months)
        if months
        else "  nothing due"
    )
    if report["files"]:
        out.append(
            f"\nOriginals (bronze, quarantined rows, file key): {len(report['files'])} files"
        )
    years = [[str(y["year"]), y["gold_objects"]] for y in report["gold_years"]]  # 2025, not 2,025
    out.append("\nNon-identifying records (gold), per year:")
    out.append(_table(["year", "gold objects"], years) if years else "  nothing due")
    if report["holds"]:
        out.append(
            "\nReleased or expired holds purged: " + ", ".join(h["case"] for h in report["holds"])
        )
    for left in report["left_locked"]:
        out.append(f"\nSTILL LOCKED (not forced, deleted by the first run after): {left}")
    if report.get("landing_versions_deleted"):
        out.append(f"\nEarlier versions deleted in landing/: {report['landing_versions_deleted']}")
    if report.get("uploads_aborted"):
        out.append(f"\nUnfinished multipart uploads aborted: {report['uploads_aborted']}")
    swept = report.get("swept") or {}
    if any(swept.values()):
        out.append(
            f"\nRemoved what interrupted runs left: {swept.get('temporary_objects', 0)} temporary "
            f"objects, {swept.get('staging', 0)} staging folders/files"
        )
    if not report["dry_run"]:
        out.append("\nVerified: nothing identifying is left for the purged months.")
    return "\n".join(out)


def holds_table(holds: Iterable[Any], as_of: Any) -> str:
    """Holds with their state on `as_of`; identifiers shown as a count only."""
    rows = [
        [h.case, "active" if h.active(as_of) else ("released" if h.released_at else "expired"),
         h.identifiers(), h.customer or "-", f"{h.period_from or ''}..{h.period_to or ''}",
         h.until or "-", h.reason[:40]]
        for h in holds
    ]  # fmt: skip
    if not rows:
        return "no holds"
    return _table(["case", "state", "identifiers", "customer", "period", "until", "reason"], rows)
