"""Health metrics: per-source counts, lag and throughput of each ingested file; months awaiting
purge and days overdue, holds, subject requests by days to deadline; sent through Airflow's
StatsD client to a listener on 127.0.0.1 by the real DAGs, and never carrying an identifier."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows import holds
from pipeline.flows.ingest import IngestRequest, copy_into_landing, run_ingest
from pipeline.flows.retention import RetentionRequest, run_retention
from pipeline.flows.subject import SubjectRequest, create_subject_request
from pipeline.health import health_gauges, ingest_metrics
from pipeline.records.synth import generate
from tests.distributed.stack import StatsD
from tests.helpers import airflow_dags_test, local_settings, statsd_on

INGEST_DAY = dt.date(2024, 6, 20)


def _ingest(res: Resources, tmp: Path, source: str, seed: int, bad: float = 0.0) -> dict:  # type: ignore[type-arg]
    """Records of March to May 2024, delivered by `source`, ingested as of INGEST_DAY."""
    g = generate("canonical_csv", tmp / f"{source}-{seed}.csv", 300, seed=seed, months=3,
                 start=dt.date(2024, 3, 1), bad_share=bad, id_prefix=f"s{seed}-")  # fmt: skip
    key = copy_into_landing(res.store, g.path, source)
    return run_ingest(res, IngestRequest(INGEST_DAY), key).to_dict()


def test_a_files_metrics_count_it_per_source_with_its_lag_and_speed(
    res: Resources, tmp_path: Path
) -> None:
    report = _ingest(res, tmp_path, "pbx-karachi", 1, bad=0.05)
    m = ingest_metrics(report)
    assert report["quarantined"] > 0 and report["records"] == 300
    for key in ("records", "silver", "gold", "quarantined"):
        assert m.counters[f"cdr.ingest.{key}"] == m.counters[f"cdr.source.pbx-karachi.{key}"] == report[key]  # fmt: skip
    reasons = {k: v for k, v in m.counters.items() if k.startswith("cdr.source.pbx-karachi.quarantined.")}  # fmt: skip
    assert sum(reasons.values()) == report["quarantined"]
    assert m.counters["cdr.ingest.files.ingested"] == 1
    arrived = dt.datetime.fromisoformat(report["delivery"]["arrived_at"])
    published = dt.datetime.fromisoformat(report["delivery"]["published_at"])
    assert m.timings_ms["cdr.source.pbx-karachi.lag"] == pytest.approx(
        (published - arrived).total_seconds() * 1000
    )
    assert m.timings_ms["cdr.ingest.lag"] >= 0
    assert m.gauges["cdr.ingest.rows_per_second"] > 0 and m.gauges["cdr.ingest.bytes_per_second"] > 0  # fmt: skip
    # a source folder that could hold a number is named by its label, also when it reads as
    # one only once cleaned for a metric name (letters between the digits)
    for folder in ("+923001234567", "03é0é1é2é3é4é5é6é7"):
        other = ingest_metrics({**report, "source": folder})
        names = [*other.counters, *other.gauges, *other.timings_ms]
        assert all(k.startswith(("cdr.ingest.", "cdr.source.file-")) for k in names)
        assert not any(re.search(r"\d[\d_]{5,}", k) for k in names)


def test_gauges_count_months_awaiting_purge_and_days_overdue_to_the_day(
    res: Resources, tmp_path: Path
) -> None:
    _ingest(res, tmp_path, "sw", 2)  # March, April, May 2024: purged on 1 April, May, June 2025
    at = dt.datetime(2025, 5, 10, 12, tzinfo=dt.UTC)
    g = health_gauges(res, at)
    assert g["cdr.retention.months_with_identifiers"] == 3
    assert g["cdr.retention.months_awaiting_purge"] == 2  # March and April
    assert g["cdr.retention.days_overdue"] == (dt.date(2025, 5, 10) - dt.date(2025, 4, 1)).days
    assert g["cdr.retention.hours_since_success"] == g["cdr.retention.last_success_at"] == -1  # never ran  # fmt: skip
    assert g["cdr.watch.retention.reported_at"] == at.timestamp()
    on_the_day = health_gauges(res, dt.datetime(2025, 4, 1, tzinfo=dt.UTC))
    assert on_the_day["cdr.retention.months_awaiting_purge"] == 1
    assert on_the_day["cdr.retention.days_overdue"] == 0
    the_day_before = health_gauges(res, dt.datetime(2025, 3, 31, 23, 59, tzinfo=dt.UTC))
    assert the_day_before["cdr.retention.months_awaiting_purge"] == 0

    run_retention(res, RetentionRequest(dt.date(2025, 5, 10)))
    after = health_gauges(res, at)
    assert after["cdr.retention.months_with_identifiers"] == 1  # May 2024 is not due yet
    assert after["cdr.retention.months_awaiting_purge"] == 0 and after["cdr.retention.days_overdue"] == 0  # fmt: skip
    # the run's own clock wrote its success: hours from then to the gauge's moment
    assert after["cdr.retention.hours_since_success"] != -1


def test_gauges_count_holds_in_force_and_requests_by_days_to_deadline(
    res: Resources, tmp_path: Path
) -> None:
    for case, until in (("CASE-1", "2026-06-01"), ("CASE-2", "2026-01-01")):  # the 2nd ended
        holds.place(res.store, holds.Hold(case, "order", "2025-11-01T00:00:00+00:00", "clerk",
                                          tokens=["t.1"], until=until))  # fmt: skip
    received = {"DSR-A": "2026-04-01", "DSR-B": "2026-04-20", "DSR-C": "2026-05-05"}
    for case, day in received.items():
        create_subject_request(
            res,
            SubjectRequest.from_mapping(
                {
                    "case": case,
                    "type": "erasure",
                    "identifiers": ["+923001234567"],
                    "identity_verified_by": "counter check",
                    "received": day,
                    "requested_by": "dpo.officer",
                    "grounds": "no longer needed",
                }
            ),
            dt.datetime.fromisoformat(day + "T09:00:00+00:00"),
        )
    # deadlines one month on: 1 May (overdue on 10 May), 20 May (10 days), 5 June (26 days)
    g = health_gauges(res, dt.datetime(2026, 5, 10, tzinfo=dt.UTC))
    assert g["cdr.holds.open"] == 1 and g["cdr.holds.open_statutory"] == 0
    assert g["cdr.requests.open"] == 3
    assert (g["cdr.requests.overdue"], g["cdr.requests.due_0_7_days"]) == (1, 0)
    assert (g["cdr.requests.due_8_30_days"], g["cdr.requests.due_later"]) == (2, 0)
    later = health_gauges(res, dt.datetime(2026, 5, 14, tzinfo=dt.UTC))
    assert (later["cdr.requests.due_0_7_days"], later["cdr.requests.due_8_30_days"]) == (1, 1)


@pytest.mark.airflow
def test_the_dags_send_their_metrics_to_statsd_without_an_identifier(tmp_path: Path) -> None:
    """`airflow dags test` of cdr_ingest and cdr_retention_watch in processes of their own,
    metrics on: the listener receives per-source counters, lag and throughput, and the health
    gauges; nothing it received holds a number of the files."""
    env_cdr = local_settings(tmp_path)
    res = Resources.from_settings(Settings.from_env(env_cdr))
    g = generate("canonical_csv", tmp_path / "a.csv", 400, seed=5, months=2,
                 start=dt.date(2026, 9, 1), bad_share=0.05)  # fmt: skip
    copy_into_landing(res.store, g.path, "sms-hub")
    statsd = StatsD()
    try:
        dags = ("cdr_ingest", "cdr_retention_watch")
        airflow_dags_test(tmp_path, env_cdr, statsd_on(statsd.port), *dags)
    finally:
        statsd.close()
    metrics = statsd.text()
    assert re.search(r"^airflow\.cdr\.source\.sms-hub\.records:400\|c$", metrics, re.M), metrics[-3000:]  # fmt: skip
    assert re.search(r"^airflow\.cdr\.source\.sms-hub\.quarantined\.[a-z_.]+:\d+\|c$", metrics, re.M)  # fmt: skip
    assert re.search(r"^airflow\.cdr\.source\.sms-hub\.lag:[\d.]+\|ms$", metrics, re.M)
    assert re.search(r"^airflow\.cdr\.ingest\.rows_per_second:[\d.]+\|g$", metrics, re.M)
    assert re.search(r"^airflow\.cdr\.retention\.months_with_identifiers:2\|g$", metrics, re.M)
    assert re.search(r"^airflow\.cdr\.retention\.months_awaiting_purge:0\|g$", metrics, re.M)
    assert re.search(r"^airflow\.cdr\.requests\.open:0\|g$", metrics, re.M)
    reported = re.search(r"^airflow\.cdr\.watch\.retention\.reported_at:(\d+)\|g$", metrics, re.M)
    assert reported and abs(int(reported.group(1)) - dt.datetime.now(dt.UTC).timestamp()) < 900
    assert g.numbers and not any(n[-9:] in metrics for n in g.numbers)
    assert not any(e in metrics for e in g.emails)
