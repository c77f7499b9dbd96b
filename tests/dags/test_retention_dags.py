"""`cdr_legal_hold` and `cdr_retention` really run: a hold placed from the form is honoured by
the retention run of a later logical date, and the audit log records both."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows import holds
from pipeline.flows.ingest import ingest_file
from pipeline.proof.audit import read_log, verify_log
from pipeline.records.synth import generate
from tests.dags.hitl import run_answered
from tests.helpers import assert_no_identifiers, load_dag, needles_for, read_tier


@pytest.mark.airflow
def test_hold_form_then_daily_retention(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    env = local_env
    res = Resources.from_settings(Settings.from_env(env))
    g = generate("messaging_jsonl", tmp_path / "m.jsonl", 600, start=dt.date(2025, 3, 1), months=2)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    number = sorted(g.numbers)[0]

    assert cli(["request", "create", "--type", "hold", "--case", "LEA-2026-001",
                "--reason", "production order 12/2026", "--identifier", number,
                "--default-region", "PK", "--requested-by", "a.khan"]) == 0  # fmt: skip
    run = run_answered("cdr_legal_hold", {"action": "place", "case": "LEA-2026-001"}, "b.ali")
    assert run.state == "success"
    hold = holds.load(res.store, "LEA-2026-001")
    assert hold is not None and len(hold.tokens) == 1

    run = load_dag("cdr_retention").test(logical_date=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    assert run.state == "success"
    assert not list(res.store.list("silver/cdr/year=2025/month=03/"))
    assert list(res.store.list("silver/cdr/year=2025/month=04/"))  # purged on 2026-05-01
    held = holds.read_held(res.store, res.keyring, "LEA-2026-001", "records")
    assert len(held) > 0 and set(held.get_column("destination")) | set(
        held.get_column("origin")
    ) >= set(hold.tokens)
    assert len(read_tier(res.store, "gold/")) > len(held)

    # A rerun of the same day changes nothing and still verifies.
    assert (
        load_dag("cdr_retention").test(logical_date=dt.datetime(2026, 4, 1, tzinfo=dt.UTC)).state
        == "success"
    )
    assert verify_log(res.store, res.keyring.public_key()).ok
    actions = [e["action"] for e in read_log(res.store)]
    assert "hold_placed" in actions and "purge_month" in actions
    out = capfd.readouterr()
    assert_no_identifiers(
        [("stdout", out.out), ("stderr", out.err)], needles_for(g.numbers, g.emails)
    )


@pytest.mark.airflow
def test_a_bad_hold_request_fails_the_run_without_storing_anything(
    airflow_db: None, tmp_path: Path, local_env: dict[str, str]
) -> None:
    env = local_env
    # No request recorded for the case: the run fails before anyone is asked to approve.
    run = load_dag("cdr_legal_hold").test(run_conf={"action": "place", "case": "X-1"})
    assert run.state == "failed"
    assert holds.list_holds(Resources.from_settings(Settings.from_env(env)).store) == []


@pytest.mark.airflow
def test_weekly_integrity_audit_passes_then_fails_on_tampering(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = local_env
    res = Resources.from_settings(Settings.from_env(env))
    g = generate("asterisk", tmp_path / "Master.csv", 400, start=dt.date(2025, 3, 1), months=1)
    sha = ingest_file(res, g.path, as_of=dt.date(2025, 6, 1)).sha256
    run = load_dag("cdr_integrity_audit").test()
    assert run.state == "success"  # a month over its risk thresholds is alerted, not failed
    out = capfd.readouterr()
    assert "VERIFIED" in out.out and "original (deep)  ok (400 records re-read)" in out.out
    assert "1 gold month(s) over the re-identification risk thresholds" in caplog.text
    assert res.quality.site.exists("risk/2025-03.json")
    risk = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances() if ti.task_id == "risk_reports"}  # fmt: skip
    assert risk["risk_reports"] == {"months": ["2025-03"], "over_thresholds": ["2025-03"]}
    key = f"bronze/default/{sha}.enc"
    data = bytearray(res.bronze.get_bytes(key))
    data[-5] ^= 1
    res.bronze.put_bytes(key, bytes(data))
    assert load_dag("cdr_integrity_audit").test().state == "failed"  # risk_reports beside it
    out = capfd.readouterr().out
    assert "MISMATCHES" in out and key in out
