"""The source registry (`[[source]]` in the policy file): checked whole when the policy loads;
its zone reads a source's times written without an offset (the environment's per-source zone
wins); a source silent longer than its interval is alerted on, hourly, with a gauge per source."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from pipeline.core.alerts import silent_sources
from pipeline.core.config import Settings
from pipeline.core.policy import PolicyError, load_policy, parse_policy
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.records.synth import generate
from tests.conftest import ROOT
from tests.distributed.stack import StatsD
from tests.helpers import airflow_dags_test, read_tier, statsd_on

DEFAULT = (ROOT / "pipeline" / "core" / "retention.toml").read_text()
REGISTRY = """
[[source]]
name = "pbx-karachi"
interval_hours = 1
timezone = "Asia/Karachi"

[[source]]
name = "sms-hub"
interval_hours = 24
"""


def test_the_registry_is_read_and_checked_whole() -> None:
    policy = parse_policy(DEFAULT + REGISTRY)
    assert policy.sources["pbx-karachi"].timezone == "Asia/Karachi"
    assert policy.sources["sms-hub"].interval_hours == 24
    assert load_policy().sources == {}  # the shipped policy registers none
    bad = {
        'name = "pbx-karachi"\ninterval_hours = 0': "interval_hours must be a whole number",
        'name = "pbx-karachi"\ninterval_hours = 1\ntimezone = "Mars/Olympus"': "not an IANA",
        'name = "../x"\ninterval_hours = 1': "name:",
        'name = "a"\ninterval_hours = 1\nformat = "csv"': "format 'csv' is not one of",
        'name = "a"\ninterval_hours = 1\nformats = "asterisk"': "unknown key(s) formats",
    }
    for body, problem in bad.items():
        with pytest.raises(PolicyError, match=r"line \d+: .*" + re.escape(problem)):
            parse_policy(DEFAULT + f"\n[[source]]\n{body}\n")
    twice = DEFAULT + REGISTRY + '\n[[source]]\nname = "sms-hub"\ninterval_hours = 2\n'
    with pytest.raises(PolicyError, match="a second \\[\\[source\\]\\] for sms-hub"):
        parse_policy(twice)


def test_a_declared_format_refuses_a_file_in_another(tmp_path: Path) -> None:
    """`format` in the registry: a file detected as another format is quarantined whole
    (nothing read by a guess); a file in it, or from another source, is ingested."""
    policy = parse_policy(DEFAULT + '\n[[source]]\nname = "pbx"\ninterval_hours = 1\nformat = "asterisk"\n')  # fmt: skip
    settings = Settings.from_env({"CDR_STORE": str(tmp_path / "store"), "CDR_KEYRING": str(tmp_path / "k"),
                                  "CDR_DATA_DOCS": str(tmp_path / "d"), "CDR_DEFAULT_REGION": "PK",
                                  "CDR_SOURCE_TIMEZONE": "UTC"})  # fmt: skip
    res = Resources.from_settings(settings, policy)
    canonical = generate("canonical_csv", tmp_path / "c.csv", 50, start=dt.date(2025, 3, 1), bad_share=0)  # fmt: skip
    report = ingest_file(res, canonical.path, source="pbx", as_of=dt.date(2025, 6, 15))
    assert report.status == "quarantined_file" and report.reason == "format_mismatch"
    other = generate("canonical_csv", tmp_path / "o.csv", 50, seed=2, start=dt.date(2025, 3, 1), bad_share=0)  # fmt: skip
    assert ingest_file(res, other.path, source="other", as_of=dt.date(2025, 6, 15)).status == "ingested"  # fmt: skip
    piped = tmp_path / "piped.csv"  # a known fault keeps its own reason, not the declared format's
    piped.write_text(canonical.path.read_text().replace(",", "|"))
    report = ingest_file(res, piped, source="pbx", as_of=dt.date(2025, 6, 15))
    assert report.status == "quarantined_file" and report.reason == "delimiter"
    asterisk = generate("asterisk", tmp_path / "a.csv", 50, start=dt.date(2025, 3, 1), bad_share=0)
    report = ingest_file(res, asterisk.path, source="pbx", as_of=dt.date(2025, 6, 15))
    assert report.status == "ingested" and report.format == "asterisk"


def _naive(path: Path) -> Path:
    """The generated file with its times written without an offset (`...T10:00:00`)."""
    path.write_text(path.read_text().replace("Z,", ","))
    return path


def _first_times(res: Resources) -> pl.DataFrame:
    return read_tier(res.store, "gold").select("record_id", "event_time").sort("record_id")


def test_the_registry_zone_reads_local_times_and_the_environment_wins(tmp_path: Path) -> None:
    policy = parse_policy(DEFAULT + REGISTRY)
    g = generate("canonical_csv", tmp_path / "a.csv", 50, start=dt.date(2025, 3, 1), bad_share=0)
    raw = pl.read_csv(g.path).select("record_id", "event_time").sort("record_id")
    utc = raw.with_columns(pl.col("event_time").str.to_datetime(time_zone="UTC"))
    _naive(g.path)
    results = {}
    for name, env in (("registry", ""), ("environment", "pbx-karachi=UTC")):
        settings = Settings.from_env({
            "CDR_STORE": str(tmp_path / name / "store"), "CDR_KEYRING": str(tmp_path / name / "k"),
            "CDR_DATA_DOCS": str(tmp_path / name / "d"), "CDR_SOURCE_TIMEZONES": env,
            "CDR_DEFAULT_REGION": "PK"})  # fmt: skip
        res = Resources.from_settings(settings, policy)
        report = ingest_file(res, g.path, source="pbx-karachi", as_of=dt.date(2025, 6, 1))
        assert report.gold == 50 and report.source_timezone == ("UTC" if env else "Asia/Karachi")
        results[name] = _first_times(res)
    karachi = utc.with_columns(pl.col("event_time") - pl.duration(hours=5))  # UTC+5, no DST
    assert results["registry"].to_dicts() == karachi.to_dicts()
    assert results["environment"].to_dicts() == utc.to_dicts()


def _delivered(res: Resources, tmp: Path, source: str, at: dt.datetime, seed: int) -> None:
    g = generate("canonical_csv", tmp / f"{source}-{seed}.csv", 20, seed=seed, start=dt.date(2025, 3, 1))  # fmt: skip
    ingest_file(res, g.path, source=source, arrived_at=at, as_of=dt.date(2025, 6, 1))


def test_a_source_silent_longer_than_its_interval_is_named(res: Resources, tmp_path: Path) -> None:
    rules = parse_policy(DEFAULT + REGISTRY).sources
    arrived = dt.datetime(2026, 1, 10, 8, 20, tzinfo=dt.UTC)
    _delivered(res, tmp_path, "pbx-karachi", arrived, 1)
    _delivered(res, tmp_path, "pbx-karachi", arrived - dt.timedelta(hours=5), 2)  # older: ignored
    # Within the hour after the 08:xx delivery's hour: nobody silent but the source never heard.
    alert, since = silent_sources(res.store, rules, dt.datetime(2026, 1, 10, 9, 30, tzinfo=dt.UTC))
    assert since == {"pbx-karachi": 0.5, "sms-hub": None}
    assert alert is not None and alert.facts["sources"] == ["sms-hub"]
    _delivered(res, tmp_path, "sms-hub", arrived, 3)
    alert, _ = silent_sources(res.store, rules, dt.datetime(2026, 1, 10, 9, 30, tzinfo=dt.UTC))
    assert alert is None
    later = dt.datetime(2026, 1, 10, 11, 0, tzinfo=dt.UTC)  # two hours after 09:00
    alert, since = silent_sources(res.store, rules, later)
    assert since == {"pbx-karachi": 2.0, "sms-hub": 2.0}
    assert alert is not None and alert.facts["sources"] == ["pbx-karachi"]
    assert "pbx-karachi (2.0 h since its last delivery, expected every 1 h)" in alert.detail


@pytest.mark.airflow
def test_the_watch_dag_alerts_and_reports_a_gauge_per_source(tmp_path: Path) -> None:
    """`airflow dags test cdr_source_watch` in a process of its own, its metrics to a StatsD
    listener on 127.0.0.1: the silent source fails the run, and each source has its gauge."""
    policy = tmp_path / "policy.toml"
    policy.write_text(DEFAULT + REGISTRY)
    settings = Settings.from_env({"CDR_STORE": str(tmp_path / "store"), "CDR_KEYRING": str(tmp_path / "k"), "CDR_DATA_DOCS": str(tmp_path / "d")})  # fmt: skip
    res = Resources.from_settings(settings, parse_policy(DEFAULT + REGISTRY))
    _delivered(res, tmp_path, "sms-hub", dt.datetime.now(dt.UTC), 1)  # pbx-karachi never
    statsd = StatsD()
    settings_env = {"CDR_STORE": str(tmp_path / "store"), "CDR_KEYRING": str(tmp_path / "k"),
                    "CDR_DATA_DOCS": str(tmp_path / "d"), "CDR_RETENTION_POLICY": str(policy)}  # fmt: skip
    try:
        (log,) = airflow_dags_test(tmp_path, settings_env, statsd_on(statsd.port), "cdr_source_watch")  # fmt: skip
    finally:
        statsd.close()
    assert "sources silent longer than their delivery interval" in log
    assert "pbx-karachi (no delivery in the window" in log and "sms-hub (" not in log
    metrics = statsd.text()
    # StatsD sets a negative gauge as 0, then -1 (a lone "-1" would be a decrement)
    assert "airflow.cdr.source.pbx-karachi.hours_since_delivery:-1|g" in metrics, metrics[-2000:]
    assert re.search(
        r"^airflow\.cdr\.source\.sms-hub\.hours_since_delivery:0(\.0)?\|g$", metrics, re.M
    )
    assert "airflow.cdr.sources.silent:1|g" in metrics


def test_old_delivery_markers_are_pruned_by_retention_the_window_kept(res: Resources) -> None:
    """Markers older than any silence check looks back go with the daily retention run: a
    weekly source's last fortnight and a day stay, every source's last 31 days stay."""
    from pipeline.core import layout
    from pipeline.core.alerts import prune_delivery_markers
    from pipeline.flows.retention import RetentionRequest, run_retention

    now = dt.datetime.now(dt.UTC)
    rules = parse_policy(DEFAULT + '\n[[source]]\nname = "weekly"\ninterval_hours = 720\n').sources
    ages = {"sms-hub": (1, 30, 33, 400), "weekly": (1, 33, 59, 62)}  # days ago
    for source, days in ages.items():
        for d in days:
            res.store.put_bytes(layout.delivery_key(source, now - dt.timedelta(days=d)), b"{}")
    res.store.put_bytes(f"{layout.DELIVERIES}sms-hub/not-a-marker.json", b"{}")
    assert prune_delivery_markers(res.store, rules, now) == 2 + 1  # sms-hub 33, 400; weekly 62
    left = sorted(o.key for o in res.store.list(layout.DELIVERIES))
    assert len(left) == 2 + 3 + 1  # sms-hub 1, 30; weekly 1, 33, 59; the foreign object
    # the daily retention run does it, with its policy's registry, and says how many
    res.store.put_bytes(layout.delivery_key("sms-hub", now - dt.timedelta(days=90)), b"{}")
    registered = Resources.from_settings(res.settings, parse_policy(DEFAULT + '\n[[source]]\nname = "weekly"\ninterval_hours = 720\n'))  # fmt: skip
    report = run_retention(registered, RetentionRequest(dt.date(2025, 6, 15)))
    assert report.delivery_markers_deleted == 1
    assert len(list(res.store.list(layout.DELIVERIES))) == 6
