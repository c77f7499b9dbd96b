"""`cdr_subject_request` answers a recorded request from its case reference alone (no
identifier in the run's parameters, XCom or output), and `cdr_subject_deadlines` alerts while a
request is open near or past its deadline."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from pipeline.flows.ingest import ingest_file
from pipeline.flows.subject import load_status
from pipeline.records.synth import generate
from tests.dags.test_export_dag import _xcom_text
from tests.helpers import assert_no_identifiers, load_dag, needles_for


def _conf_text(run_id: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.run_id == run_id).one()
        return json.dumps(run.conf)


@pytest.mark.airflow
def test_subject_request_dag_answers_from_the_case_alone(
    airflow_db: None,
    tmp_path: Path,
    local_env: dict[str, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    res = Resources.from_settings(Settings.from_env(local_env))
    g = generate("messaging_jsonl", tmp_path / "m.jsonl", 600, start=dt.date(2025, 3, 1), months=2)
    ingest_file(res, g.path, as_of=dt.date(2025, 6, 1))
    number = sorted(g.numbers)[0]
    old = dt.date.today() - dt.timedelta(days=40)
    code = cli(["subject-request", "create", "--case", "DSR-DAG", "--type", "restriction",
                "--identifier", number, "--identity-verified-by", "desk check 77",
                "--received", old.isoformat(), "--requested-by", "dpo"])  # fmt: skip
    assert code == 0
    assert load_dag("cdr_subject_deadlines").test().state == "failed"  # overdue: alert

    run = load_dag("cdr_subject_request").test(run_conf={"case": "DSR-DAG"})
    assert run.state == "success"
    assert load_status(res, "DSR-DAG")["outcome"] == "restricted"
    assert load_dag("cdr_subject_deadlines").test().state == "success"  # answered: quiet

    out = capfd.readouterr()
    texts = [("xcom", _xcom_text(run.run_id)), ("conf", _conf_text(run.run_id)),
             ("stdout", out.out), ("stderr", out.err)]  # fmt: skip
    assert "DSR-DAG" in texts[0][1]
    assert_no_identifiers(texts, needles_for({number}, set()))
    assert load_dag("cdr_subject_request").test(run_conf={"case": "NO-SUCH"}).state == "failed"
