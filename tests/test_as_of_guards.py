"""The day a run acts for is guarded: `retention` and `ingest` refuse an `--as-of` after today
unless told (and audited), a DAG run refuses a future logical date, and retention destroys
more than one month at once only when confirmed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.dates import FutureAsOf, refuse_future, today_utc
from pipeline.core.resources import Resources
from pipeline.proof.audit import read_log
from pipeline.records.synth import generate
from tests.helpers import load_dag

TODAY = today_utc()
NEXT_YEAR = TODAY.replace(year=TODAY.year + 1, day=1)


@pytest.fixture
def res(local_env: dict[str, str]) -> Resources:
    return Resources.from_settings(Settings.from_env(local_env))


def _two_months(res: Resources, tmp_path: Path) -> None:
    """March and April 2025 ingested: they lose their identifiers on 2026-04-01 and 2026-05-01."""
    g = generate("canonical_csv", tmp_path / "c.csv", 400, start=dt.date(2025, 3, 1), months=2)
    assert cli(["ingest", "--as-of", "2025-06-15", str(g.path)]) == 0


def _month_keys(res: Resources) -> list[str]:
    return sorted(res.keyring.data_key_names("month-"))


def test_refuse_future_is_exact_to_the_day() -> None:
    today = dt.date(2026, 12, 7)
    assert refuse_future(today, today) == today
    assert refuse_future(dt.date(2020, 2, 29), today) == dt.date(2020, 2, 29)
    with pytest.raises(FutureAsOf, match="2026-12-08"):
        refuse_future(dt.date(2026, 12, 8), today)


def test_a_future_as_of_destroys_nothing_and_ingests_nothing(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_months(res, tmp_path)
    keys = _month_keys(res)
    assert keys == ["month-2025-03", "month-2025-04"]
    capsys.readouterr()
    # the typo: everything (keys, originals, gold) would go
    assert cli(["retention", "--as-of", "2099-01-01"]) == 2
    assert "after today" in capsys.readouterr().err
    assert _month_keys(res) == keys and list(res.store.list("gold/"))

    later = tmp_path / "later.csv"
    later.write_text(
        "record_id,event_time,channel,direction,origin,destination\n"
        "l1,2025-05-02T10:00:00Z,sms,outbound,InfoSMS,+923001234567\n"
    )
    seals = len(list(res.store.list("seals/")))
    assert cli(["ingest", "--as-of", NEXT_YEAR.isoformat(), str(later)]) == 2
    assert len(list(res.store.list("seals/"))) == seals  # not even sealed
    # a replay would re-file every month as past its purge date, a demo would drop files
    assert cli(["replay", "--reason", "invalid_number", "--as-of", "2099-01-01"]) == 2
    assert cli(["demo", "--records", "50", "--as-of", "2099-01-01"]) == 2
    assert len(list(res.store.list("seals/"))) == seals and not list(res.store.list("landing/"))
    assert not [e for e in read_log(res.store) if e["action"] == "future_as_of"]


def test_more_than_one_month_at_once_is_a_dry_run_until_confirmed(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_months(res, tmp_path)
    capsys.readouterr()
    assert cli(["retention", "--as-of", "2026-05-01"]) == 1
    out = capsys.readouterr()
    assert "NOTHING WAS DESTROYED" in out.err and "--confirm" in out.err
    assert "2025-03" in out.out and "2025-04" in out.out  # what would go, shown
    assert _month_keys(res) == ["month-2025-03", "month-2025-04"]
    # one month at a time is the normal course: no confirmation asked
    assert cli(["retention", "--as-of", "2026-04-01"]) == 0
    assert _month_keys(res) == ["month-2025-04"]
    assert cli(["retention", "--as-of", "2026-06-01"]) == 0
    assert _month_keys(res) == []


def test_a_confirmed_future_as_of_is_audited(
    res: Resources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_months(res, tmp_path)
    future = ["retention", "--as-of", "2099-01-01", "--allow-future-as-of"]
    assert cli(future) == 1  # still more than a month at once: shown, not done
    assert len(_month_keys(res)) == 2
    assert cli([*future, "--confirm"]) == 0
    assert _month_keys(res) == [] and not list(res.store.list("gold/"))
    entries = [e for e in read_log(res.store) if e["action"] == "future_as_of"]
    assert len(entries) == 2
    assert entries[0]["what"] == {"command": "retention", "as_of": "2099-01-01", "today": TODAY.isoformat()}  # fmt: skip


@pytest.mark.airflow
def test_a_dag_run_for_a_future_logical_date_fails_and_destroys_nothing(
    airflow_db: None, res: Resources, tmp_path: Path
) -> None:
    _two_months(res, tmp_path)
    future = dt.datetime.combine(NEXT_YEAR, dt.time(), tzinfo=dt.UTC)
    run = load_dag("cdr_retention").test(logical_date=future)
    assert run.state == "failed"
    assert _month_keys(res) == ["month-2025-03", "month-2025-04"]
    assert not [e for e in read_log(res.store) if e["action"].startswith("purge")]
    # the same DAG on a day that has come runs: it was the date that was refused
    past = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    assert load_dag("cdr_retention").test(logical_date=past).state == "success"
    assert _month_keys(res) == ["month-2025-04"]
