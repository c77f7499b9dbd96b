"""The gold risk report: its measures against an independent pure-Python computation (edge
cases too), the report on a real ingested month (JSON, page, Data Docs result, no value in any
of them), the thresholds failing on a month built to be identifying and an alert naming it,
the what-if generalisation, and the policy table checked whole."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.core import layout
from pipeline.core.config import Settings
from pipeline.core.gold_risk import GoldRiskPolicy
from pipeline.core.policy import PolicyError, parse_policy
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.flows.risk import NoGold, mark_alerted, months_due, run_risk_report, run_risk_reports
from pipeline.records import risk
from pipeline.records.synth import generate
from tests.conftest import ROOT

DEFAULT = (ROOT / "pipeline" / "core" / "retention.toml").read_text()
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def reference(rows: list[dict[str, Any]], policy: GoldRiskPolicy) -> dict[str, Any]:
    """Classes counted with tuples and integer arithmetic, nothing shared with the module."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        t = r["event_time"]
        minutes = (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() // 60
        d = r["duration_s"]
        return (*(r[c] for c in risk.QUASI_IDENTIFIERS),
                minutes // policy.time_minutes,
                None if d is None else int(d // policy.duration_seconds))  # fmt: skip

    sizes = list(Counter(map(key, rows)).values())
    n = len(rows)
    if not n:
        return {"records": 0, "classes": 0, "max": 0.0, "avg": 0.0, "below": {2: 0.0, 5: 0.0, 10: 0.0}}  # fmt: skip
    below = {k: sum(s for s in sizes if s < k) / n for k in (2, 5, 10)}
    return {"records": n, "classes": len(sizes), "max": 1 / min(sizes), "avg": len(sizes) / n, "below": below}  # fmt: skip


row = st.fixed_dictionaries({
    **{c: st.sampled_from(["a", "b", None]) for c in risk.QUASI_IDENTIFIERS},
    "event_time": st.integers(0, 3 * 24 * 3600 - 1).map(lambda s: START + dt.timedelta(seconds=s)),
    "duration_s": st.one_of(st.none(), st.floats(0, 200, allow_nan=False)),
})  # fmt: skip


def _frame(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    schema = {**dict.fromkeys(risk.QUASI_IDENTIFIERS, pl.String),
              "event_time": pl.Datetime("us", "UTC"), "duration_s": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema).lazy()


def _measure(rows: list[dict[str, Any]], policy: GoldRiskPolicy) -> risk.RiskMeasures:
    keys = risk.class_keys(risk.grouped(_frame(rows), policy))
    return risk.measures(risk.class_sizes(keys)["size"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(row, max_size=120), st.sampled_from([1, 15, 60, 1440]), st.sampled_from([1, 10, 60])
)
@example([], 60, 10)  # an empty month
@example([{**dict.fromkeys(risk.QUASI_IDENTIFIERS, "a"), "event_time": START, "duration_s": 5.0}], 60, 10)  # one record  # fmt: skip
def test_the_measures_equal_an_independent_count(rows: list[dict[str, Any]], minutes: int, seconds: int) -> None:  # fmt: skip
    policy = GoldRiskPolicy(time_minutes=minutes, duration_seconds=seconds)
    found, expected = _measure(rows, policy), reference(rows, policy)
    assert (found.records, found.classes) == (expected["records"], expected["classes"])
    assert found.max_risk == pytest.approx(expected["max"])
    assert found.average_risk == pytest.approx(expected["avg"])
    for k, share in expected["below"].items():
        assert found.share_below[k] == pytest.approx(share)
    assert found.unique_share == pytest.approx(expected["below"][2])


def test_all_unique_and_one_class_are_the_two_extremes() -> None:
    base = dict.fromkeys(risk.QUASI_IDENTIFIERS, "x")
    unique = [{**base, "event_time": START + dt.timedelta(hours=h), "duration_s": 1.0} for h in range(7)]  # fmt: skip
    m = _measure(unique, GoldRiskPolicy())
    assert (m.classes, m.unique_share, m.max_risk, m.average_risk) == (7, 1.0, 1.0, 1.0)
    same = [{**base, "event_time": START + dt.timedelta(minutes=n), "duration_s": 3.0} for n in range(7)]  # fmt: skip
    m = _measure(same, GoldRiskPolicy())
    assert (m.classes, m.share_below[5], m.share_below[10], m.max_risk) == (1, 0.0, 1.0, pytest.approx(1 / 7))  # fmt: skip


def _res(tmp: Path, risk_table: str = "") -> Resources:
    settings_ = Settings.from_env({"CDR_STORE": str(tmp / "store"), "CDR_KEYRING": str(tmp / "k"),
                                   "CDR_DATA_DOCS": str(tmp / "docs"), "CDR_DEFAULT_REGION": "PK",
                                   "CDR_SOURCE_TIMEZONE": "UTC"})  # fmt: skip
    return Resources.from_settings(settings_, parse_policy(DEFAULT + risk_table))


def test_a_real_month_is_reported_without_a_value_in_any_output(tmp_path: Path) -> None:
    res = _res(tmp_path)
    g = generate("messaging_jsonl", tmp_path / "m.jsonl", 3000, months=1,
                 start=dt.date(2026, 3, 1), bad_share=0)  # fmt: skip
    ingest_file(res, g.path, source="hub", as_of=dt.date(2026, 4, 10))
    report = run_risk_report(res, (2026, 3))
    m = report["as_stored"]["measures"]
    assert m["records"] == 3000 and 0 < m["classes"] <= 3000
    gold = pl.read_parquet([res.store.uri(o.key) for o in res.store.list(layout.month_prefix("gold", (2026, 3)))])  # fmt: skip
    assert m == json.loads(json.dumps(m)) and m["records"] == len(gold)
    rare = report["as_stored"]["rare_values"]["origin_domain"] + report["as_stored"]["rare_values"]["destination_domain"]  # fmt: skip
    assert rare and all(v["label"].startswith("v-") and v["records_at_risk"] <= v["records"] for v in rare)  # fmt: skip
    outputs = [res.quality.site.get_bytes(k).decode() for k in ("risk/2026-03.json", "risk/2026-03.html")]  # fmt: skip
    values = {v for c in risk.RARE_COLUMNS for v in gold[c].drop_nulls().unique().to_list() if len(v) > 3}  # fmt: skip
    assert values and not any(v in text for v in values for text in outputs)
    assert not any(e in text for e in g.emails for text in outputs)
    result = [o.key for o in res.quality.site.list("results/gold_risk/")]
    assert len(result) == 1  # the thresholds' result, as a GX validation result
    # labels are keyed: the same value has the same label in another month's report
    again = run_risk_report(res, (2026, 3))
    assert again["as_stored"]["rare_values"] == report["as_stored"]["rare_values"]


def _write_month(res: Resources, tmp: Path, tier: str, rows: list[dict[str, Any]]) -> None:
    path = tmp / f"{tier}.parquet"
    pl.DataFrame(rows).write_parquet(path)
    res.store.put_file(layout.month_prefix(tier, (2026, 3)) + f"part-{tier}.parquet", path)


def _identifying_month(res: Resources, tmp: Path) -> None:
    """A crowd of 900 records in big classes, and ten rare e-mail domains, each one end user
    writing once a day for ten days: each of their 100 records is alone in its class."""
    base = {c: None for c in risk.QUASI_IDENTIFIERS} | {
        "origin_country": "PK", "destination_country": "PK", "customer_id": "cust-1",
        "route_id": "r1", "channel": "email", "duration_s": None,
    }  # fmt: skip
    gold, silver = [], []
    for n in range(900):
        day = START + dt.timedelta(days=n % 10, hours=n % 24)
        gold.append(base | {"origin_domain": "mail.example.pk", "event_time": day})
        silver.append({"origin_domain": "mail.example.pk", "origin": f"tok-crowd-{n % 300}"})
    for d in range(10):
        for day in range(10):
            at = START + dt.timedelta(days=day, hours=9)
            gold.append(base | {"origin_domain": f"rare-{d}.example.pk", "event_time": at})
            silver.append({"origin_domain": f"rare-{d}.example.pk", "origin": f"tok-rare-{d}"})
    for rows in (gold, silver):
        for r in rows:
            for c in risk.GENERALISED:
                r.setdefault(c, None)
            r.setdefault("destination", None)
            r.setdefault("origin", None)
    _write_month(res, tmp, "gold", gold)
    _write_month(res, tmp, "silver", silver)


IDENTIFYING_POLICY = """
[gold_risk]
time_minutes = 1440
duration_seconds = 86400
k = 5
max_share_below_k = 0.05
max_risk = 1.0
generalise_below_users = 2
"""


def test_a_month_built_to_be_identifying_fails_and_generalising_would_pass(tmp_path: Path) -> None:
    res = _res(tmp_path, IDENTIFYING_POLICY)
    _identifying_month(res, tmp_path)
    report = run_risk_report(res, (2026, 3))
    stored = report["as_stored"]["measures"]
    assert stored["records"] == 1000 and stored["share_below"]["5"] == pytest.approx(0.1)
    assert not report["verdict"]["passed"] and report["verdict"]["failed"] == ["share_below_5"]
    top = report["as_stored"]["rare_values"]["origin_domain"]
    assert len(top) == 10 and all(v["records_at_risk"] == v["records"] == 10 for v in top)
    general = report["if_generalised"]
    assert general["values_generalised"]["origin_domain"] == 10  # the crowd's domain has 300 users
    assert general["users_counted_as"].startswith("end users")
    assert general["measures"]["share_below"]["5"] == 0.0  # ten a day as other:PK
    page = res.quality.site.get_bytes("risk/2026-03.html").decode()
    assert "FAILED" in page and "rare-" not in page and "mail.example" not in page
    # gold is never changed by a report
    gold = pl.read_parquet(res.store.uri(layout.month_prefix("gold", (2026, 3)) + "part-gold.parquet"))  # fmt: skip
    assert gold["origin_domain"].str.starts_with("rare-").sum() == 100


def test_each_month_is_reported_again_only_once_its_gold_changes(tmp_path: Path) -> None:
    res = _res(tmp_path)
    assert months_due(res) == []
    g = generate("canonical_csv", tmp_path / "c.csv", 200, months=2, start=dt.date(2026, 1, 1), bad_share=0)  # fmt: skip
    ingest_file(res, g.path, source="sw", as_of=dt.date(2026, 4, 10))
    assert months_due(res) == [(2026, 1), (2026, 2)]
    reports, _, _ = run_risk_reports(res)
    mark_alerted(res, reports)
    assert [r["month"] for r in reports] == ["2026-01", "2026-02"] and months_due(res) == []
    time.sleep(0.05)  # a later delivery of February: only February is due again
    more = generate("canonical_csv", tmp_path / "d.csv", 100, seed=9, months=1,
                    start=dt.date(2026, 2, 1), bad_share=0, id_prefix="d")  # fmt: skip
    ingest_file(res, more.path, source="sw", as_of=dt.date(2026, 4, 10))
    assert months_due(res) == [(2026, 2)]
    mark_alerted(res, run_risk_reports(res)[0])
    # a part written while January's report was computed (its time before the report's):
    # January is due all the same, no clock is compared
    january = [o.key for o in res.store.list(layout.month_prefix("gold", (2026, 1)))]
    late = res.store.uri(january[0]).replace(".parquet", "-late.parquet")
    Path(late).write_bytes(Path(res.store.uri(january[0])).read_bytes())
    os.utime(late, (0, 0))
    assert months_due(res) == [(2026, 1)]
    Path(late).unlink()
    assert months_due(res) == []
    # a part rewritten under its own key (a replay adds the rows it recovered): due again
    part = Path(res.store.uri(january[0]))
    part.write_bytes(part.read_bytes())
    os.utime(part, (1, 1))
    assert months_due(res) == [(2026, 1)]


def test_a_month_that_cannot_be_measured_does_not_stop_the_others(tmp_path: Path) -> None:
    res = _res(tmp_path)
    g = generate("canonical_csv", tmp_path / "c.csv", 200, months=2, start=dt.date(2026, 1, 1), bad_share=0)  # fmt: skip
    ingest_file(res, g.path, source="sw", as_of=dt.date(2026, 4, 10))
    (january,) = [o.key for o in res.store.list(layout.month_prefix("gold", (2026, 1)))]
    Path(res.store.uri(january)).write_bytes(b"not parquet")
    reports, alert, errors = run_risk_reports(res)
    assert [r["month"] for r in reports] == ["2026-02"] and len(errors) == 1
    assert errors[0].startswith("2026-01: ") and alert is not None
    assert alert.facts["months"] == ["2026-02"]
    assert months_due(res) == [(2026, 1), (2026, 2)]  # January unmeasured; February unalerted


def test_a_month_without_gold_is_an_error_not_a_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from pipeline.cli import main

    res = _res(tmp_path)
    with pytest.raises(NoGold):
        run_risk_report(res, (2031, 7))
    for key, value in {"CDR_STORE": str(tmp_path / "store"), "CDR_KEYRING": str(tmp_path / "k"),
                       "CDR_DATA_DOCS": str(tmp_path / "docs")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    assert main(["risk-report", "--month", "2031-07"]) == 2
    assert "gold holds no records of 2031-07" in capsys.readouterr().err
    assert not list(res.quality.site.list("risk/"))


def test_a_month_over_a_threshold_is_alerted_and_passes_under_looser_ones(tmp_path: Path) -> None:
    strict = _res(tmp_path / "a")
    g = generate("canonical_csv", tmp_path / "c.csv", 500, months=1, start=dt.date(2026, 1, 1), bad_share=0)  # fmt: skip
    ingest_file(strict, g.path, source="sw", as_of=dt.date(2026, 4, 10))
    reports, alert, errors = run_risk_reports(strict)
    assert [r["month"] for r in reports] == ["2026-01"] and errors == []
    assert not reports[0]["verdict"]["passed"] and alert is not None
    assert alert.facts["months"] == ["2026-01"] and "share_below_5" in alert.detail
    # until its alert is marked sent, the month stays due (an alert lost to a failure is sent
    # by the next run); once sent, it is due again only when its gold changes
    assert months_due(strict) == [(2026, 1)]
    mark_alerted(strict, reports)
    assert months_due(strict) == []
    loose = _res(tmp_path / "b", "\n[gold_risk]\ntime_minutes = 1440\nduration_seconds = 86400\nk = 2\nmax_share_below_k = 1.0\nmax_risk = 1.0\n")  # fmt: skip
    ingest_file(loose, g.path, source="sw", as_of=dt.date(2026, 4, 10))
    reports, alert, _ = run_risk_reports(loose)
    assert reports[0]["verdict"]["passed"] and alert is None and months_due(loose) == []


def test_the_policy_table_is_checked_whole() -> None:
    assert parse_policy(DEFAULT).gold_risk == GoldRiskPolicy()
    bad = {
        "k = 1": "k must be a whole number from 2",
        "time_minutes = 7": "time_minutes must divide a day",
        "max_risk = 1.5": "max_risk must be a number from 0 to 1",
        "generalise_below_users = 1": "0 (off) or at least 2",
        "kk = 3": "unknown key(s) kk",
    }
    for body, problem in bad.items():
        with pytest.raises(PolicyError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            parse_policy(DEFAULT + f"\n[gold_risk]\n{body}\n")
