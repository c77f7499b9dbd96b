"""The gold risk report: is a month of gold really non-identifying? (docs/risk.md)

`run_risk_report` measures one gold month (`pipeline.records.risk`), judges it against the
policy's `[gold_risk]` thresholds with the `gold_risk` expectations (evaluated like every suite,
their result stored as GX's validation result and rendered into Data Docs), and writes the
report as JSON and HTML beside Data Docs (`risk/<YYYY-MM>.json`, `.html`). Gold is never
changed: a month over a threshold is reported and alerted on (`risk_alert`).

With `generalise_below_users` set, the report also shows what generalising the rare domains and
networks (those fewer than that many distinct end users held in the month) to `other` plus the
country would do to the risk. Distinct users are counted from silver's tokens while the month
still has them, from records after the identifier purge. Gold itself keeps its values: the
Pakistan original-form rule asks that origin and destination stay as sealed, and a changed
gold value could no longer be shown to match its sealed original (docs/risk.md, "Tension").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.core import layout
from pipeline.core.alerts import Alert
from pipeline.core.errors import USAGE, PipelineError
from pipeline.core.gold_risk import REPORTED_K, GoldRiskPolicy
from pipeline.core.resources import Resources
from pipeline.core.store import LocalStore, ObjectInfo, ObjectStore
from pipeline.records import quality, risk
from pipeline.records.expectations_engine import SuiteTally, compile_suite

SUITE = "gold_risk"


class NoGold(PipelineError):
    """A month without gold: nothing to measure (a mistyped month must not read as safe)."""

    exit_status = USAGE


def month_objects(store: ObjectStore, tier: str, m: layout.Month) -> list[ObjectInfo]:
    """A month partition's Parquet parts, by key."""
    found = (o for o in store.list(layout.month_prefix(tier, m)) if o.key.endswith(".parquet"))
    return sorted(found, key=lambda o: o.key)


def parts_digest(parts: list[ObjectInfo]) -> str:
    """What a report says it measured: the SHA-256 of its parts' keys, sizes and times (as the
    store lists them), compared with the partition's to tell when the month has changed since;
    a part rewritten under its key (a replay) changes it too."""
    lines = sorted(f"{o.key} {o.size} {o.modified.isoformat()}" for o in parts)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@contextmanager
def month_parts(
    store: ObjectStore, tier: str, m: layout.Month, keys: list[str] | None = None
) -> Iterator[list[Path]]:
    """Local paths of a month partition's Parquet parts (`keys`, else all of them), downloaded
    one by one from S3 into a temporary folder: disk, not memory, holds them."""
    keys = [o.key for o in month_objects(store, tier, m)] if keys is None else keys
    if isinstance(store, LocalStore):
        yield [Path(store.uri(k)) for k in keys]
        return
    with tempfile.TemporaryDirectory(prefix="cdr-risk-") as tmp:
        paths = []
        for n, key in enumerate(keys):
            path = Path(tmp) / f"{n}.parquet"
            store.download(key, path)
            paths.append(path)
        yield paths


GOLD_COLUMNS = [*risk.QUASI_IDENTIFIERS, "event_time", "duration_s"]


def _measured(gold: pl.LazyFrame, policy: GoldRiskPolicy, key: bytes) -> dict[str, Any]:
    qi = risk.grouped(gold, policy)
    sizes = risk.class_sizes(risk.class_keys(qi))
    found = risk.measures(sizes["size"], sorted({*REPORTED_K, policy.k}))
    rare = risk.rare_values(qi, sizes, policy.k, key)
    return {"measures": _plain(found), "rare_values": rare}


def _plain(found: risk.RiskMeasures) -> dict[str, Any]:
    out = asdict(found)
    out["share_below"] = {str(k): round(v, 6) for k, v in found.share_below.items()}
    for name in ("unique_share", "max_risk", "average_risk"):
        out[name] = round(out[name], 6)
    return out


def _rare(
    res: Resources, m: layout.Month, gold_paths: list[Path], below: int
) -> tuple[dict[str, list[str]], str]:
    """The domain and network values fewer than `below` end users held in the month, and how
    users were counted: silver's tokens while the month has them, else each record as a user
    of its own (after the identifier purge)."""
    cols = list(risk.GENERALISED)
    with month_parts(res.store, "silver", m) as silver:
        if silver:
            party = {c: "origin" if c.startswith("origin") else "destination" for c in cols}
            users = pl.scan_parquet(silver).select(
                *cols, *(pl.col(party[c]).alias(f"{c}__user") for c in cols)
            )
            return risk.rare_by_users(users, below), "end users (silver's tokens)"
    users = pl.scan_parquet(gold_paths).select(
        *cols, *(pl.col("record_id").alias(f"{c}__user") for c in cols)
    )
    return risk.rare_by_users(users, below), "records (the month's identifiers are purged)"


def run_risk_report(
    res: Resources, m: layout.Month, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Measure a gold month, judge it, and write its report; the report (counts, shares,
    labels: nothing that identifies)."""
    now = now or dt.datetime.now(dt.UTC)
    policy = res.policy.gold_risk
    key = res.keyring.data_key(layout.RISK_LABEL_KEY)
    parts = month_objects(res.store, "gold", m)  # the report is of these parts, and says so
    with month_parts(res.store, "gold", m, [o.key for o in parts]) as paths:
        if not paths:
            raise NoGold(f"gold holds no records of {layout.month_name(m)}")
        gold = pl.scan_parquet(paths).select(GOLD_COLUMNS)
        stored = _measured(gold, policy, key)
        report: dict[str, Any] = {
            "month": layout.month_name(m),
            "generated_at": now.isoformat(),
            "gold_parts": len(paths),
            "gold_parts_sha256": parts_digest(parts),
            "alerted": False,
            "quasi_identifiers": [
                *risk.QUASI_IDENTIFIERS,
                f"event_time per {policy.time_minutes} min",
                f"duration_s per {policy.duration_seconds} s",
            ],
            "policy": asdict(policy),
            "as_stored": stored,
        }
        if policy.generalise_below_users:
            rare, counted = _rare(res, m, paths, policy.generalise_below_users)
            general = _measured(risk.generalise(gold, rare), policy, key)
            general["values_generalised"] = {c: len(v) for c, v in rare.items()}
            general["users_counted_as"] = counted
            report["if_generalised"] = general
    report["verdict"] = judge(res, report)
    report["pages"] = [res.quality.site.uri(k) for k in report_keys(report["month"])]
    write_report(res, report)
    return report


def months_due(res: Resources) -> list[layout.Month]:
    """The gold months whose parts are not those their last report measured (every month
    without a report): each month's watermark is its report's list of parts, so a month over a
    threshold, reported and alerted on once, is measured again only when its gold changes. No
    clock is compared: a part written while a report was computed makes its month due."""
    parts: dict[layout.Month, list[ObjectInfo]] = {}
    for obj in res.store.list(layout.GOLD):
        m = layout.month_of(obj.key)
        if m is not None and obj.key.endswith(".parquet"):
            parts.setdefault(m, []).append(obj)
    due = []
    for m, found in sorted(parts.items()):
        as_json = report_keys(layout.month_name(m))[0]
        if not res.quality.site.exists(as_json):
            due.append(m)
            continue
        last = json.loads(res.quality.site.get_bytes(as_json))
        unalerted = not last["verdict"]["passed"] and not last.get("alerted")
        if unalerted or last.get("gold_parts_sha256") != parts_digest(found):
            due.append(m)
    return due


def run_risk_reports(
    res: Resources,
) -> tuple[list[dict[str, Any]], Alert | None, list[str]]:
    """A report for each gold month written since its last report, or over a threshold and not
    yet alerted on (`months_due`); one alert naming the months over a threshold (None when
    every month passes), to be sent and then `mark_alerted`; and the months that could not be
    measured this time (each one's error named, the others measured all the same)."""
    reports, errors = [], []
    for m in months_due(res):
        try:
            reports.append(run_risk_report(res, m))
        except Exception as exc:  # purged meanwhile, the store failed, a part unreadable:
            errors.append(f"{layout.month_name(m)}: {type(exc).__name__}")  # its type only
    over = [a for r in reports if (a := risk_alert(r)) is not None]
    if not over:
        return reports, None, errors
    months = [a.facts["month"] for a in over]
    alert = Alert(
        f"{len(months)} gold month(s) over the re-identification risk thresholds",
        "; ".join(a.detail for a in over),
        facts={"months": months},
    )
    return reports, alert, errors


def mark_alerted(res: Resources, reports: list[dict[str, Any]]) -> None:
    """Record in each report over a threshold that its alert was sent (until then, the month
    stays due: an alert lost to a failure is sent by the next run)."""
    for report in reports:
        if not report["verdict"]["passed"]:
            report["alerted"] = True
            write_report(res, report)


def thresholds_suite(policy: GoldRiskPolicy) -> dict[str, Any]:
    """The expectations a month's measures must meet, thresholds from the policy."""
    return {
        "name": SUITE,
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {
                    "column": f"share_below_{policy.k}",
                    "min_value": 0,
                    "max_value": policy.max_share_below_k,
                },
                "meta": {
                    "why": f"at most this share of records in classes smaller than k={policy.k}"
                },
            },
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "max_risk", "min_value": 0, "max_value": policy.max_risk},
                "meta": {
                    "why": "the highest prosecutor re-identification risk (1 / smallest class)"
                },
            },
        ],
    }


def judge(res: Resources, report: dict[str, Any]) -> dict[str, Any]:
    """Gold as stored against the thresholds, evaluated by the expectations engine and stored
    as a GX validation result (rendered into Data Docs with the other suites)."""
    policy = res.policy.gold_risk
    found = report["as_stored"]["measures"]
    row = {f"share_below_{policy.k}": _share_below(found, policy.k), "max_risk": found["max_risk"]}
    tally = SuiteTally(compile_suite(thresholds_suite(policy)), index_column=None)
    tally.add(pl.DataFrame([row]))
    document = quality.result_document(tally)
    res.quality.write_result(document, f"{SUITE}-{report['month']}")
    failed = [
        r["expectation_config"]["kwargs"]["column"] for r in document["results"] if not r["success"]
    ]
    return {"passed": not failed, "failed": failed, **row}


def _share_below(found: dict[str, Any], k: int) -> float:
    """The share of records in classes smaller than k (always measured for the policy's k)."""
    return float(found["share_below"][str(k)])


def report_keys(month: str) -> tuple[str, str]:
    """Where a month's report is, on the Data Docs site: its JSON and its page."""
    base = f"{layout.RISK_REPORTS}{month}"
    return f"{base}.json", f"{base}.html"


def write_report(res: Resources, report: dict[str, Any]) -> None:
    """The report as JSON and as a page, beside Data Docs."""
    as_json, as_page = report_keys(report["month"])
    res.quality.site.put_bytes(as_json, json.dumps(report, indent=1, sort_keys=True).encode())
    res.quality.site.put_bytes(as_page, page(report).encode())


def risk_summary(report: dict[str, Any]) -> str:
    """What a person reads on the command line: the month's measures, verdict and pages."""
    m = report["as_stored"]["measures"]
    verdict = report["verdict"]
    shares = ", ".join(f"<{k}: {float(v):.1%}" for k, v in m["share_below"].items())
    lines = [
        f"gold {report['month']}: {m['records']:,} records in {m['classes']:,} classes",
        f"  records in classes smaller than k: {shares}; unique: {m['unique_share']:.1%}",
        f"  prosecutor risk: highest {m['max_risk']:.3f}, average {m['average_risk']:.3f}",
    ]
    if general := report.get("if_generalised"):
        g = general["measures"]
        lines.append(
            f"  if rare domains and networks were generalised ({sum(general['values_generalised'].values())} values):"
            f" <{report['policy']['k']}: {float(g['share_below'][str(report['policy']['k'])]):.1%}, highest risk {g['max_risk']:.3f} (gold unchanged)"
        )
    status = "PASSED" if verdict["passed"] else f"FAILED ({', '.join(verdict['failed'])})"
    lines.append(f"thresholds: {status}")
    lines.append(f"report: {report['pages'][1]}")
    return "\n".join(lines)


def risk_alert(report: dict[str, Any]) -> Alert | None:
    """An alert for a month over a threshold (counts and shares only), else None."""
    verdict = report["verdict"]
    if verdict["passed"]:
        return None
    return Alert(
        f"gold {report['month']} is over its re-identification risk thresholds",
        f"failed: {', '.join(verdict['failed'])}; gold is unchanged. See the risk report "
        f"(risk/{report['month']}.html beside Data Docs) and docs/risk.md.",
        facts={k: v for k, v in verdict.items() if k != "failed"} | {"month": report["month"]},
    )


def page(report: dict[str, Any]) -> str:
    """The report as a small standalone HTML page."""
    e = html.escape

    def section(title: str, part: dict[str, Any]) -> str:
        m = part["measures"]
        rows = "".join(
            f"<tr><td>records in classes smaller than {k}</td><td>{float(v):.2%}</td></tr>"
            for k, v in m["share_below"].items()
        )
        rare = "".join(
            f"<tr><td>{e(col)}</td><td>{e(v['label'])}</td><td>{v['records_at_risk']}</td><td>{v['records']}</td></tr>"
            for col, values in part["rare_values"].items()
            for v in values
        )
        return (
            f"<h2>{e(title)}</h2><table><tr><td>records</td><td>{m['records']}</td></tr>"
            f"<tr><td>equivalence classes</td><td>{m['classes']}</td></tr>{rows}"
            f"<tr><td>unique records</td><td>{m['unique_share']:.2%}</td></tr>"
            f"<tr><td>highest prosecutor risk</td><td>{m['max_risk']:.3f}</td></tr>"
            f"<tr><td>average prosecutor risk</td><td>{m['average_risk']:.3f}</td></tr></table>"
            "<h3>Values that make records rare (keyed labels)</h3><table>"
            "<tr><th>column</th><th>label</th><th>records at risk</th><th>records</th></tr>"
            f"{rare}</table>"
        )

    verdict = report["verdict"]
    status = "PASSED" if verdict["passed"] else "FAILED: " + ", ".join(verdict["failed"])
    body = section("Gold as stored", report["as_stored"])
    if "if_generalised" in report:
        body += section(
            "If rare domains and networks were generalised (gold is not changed)",
            report["if_generalised"],
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Gold risk {e(report['month'])}</title></head><body>"
        f"<h1>Gold re-identification risk, {e(report['month'])}</h1>"
        f"<p>Thresholds: {e(status)}. Quasi-identifiers: {e(', '.join(report['quasi_identifiers']))}.</p>"
        f"{body}</body></html>"
    )
