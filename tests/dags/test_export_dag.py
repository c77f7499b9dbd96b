"""`cdr_le_export` refuses a case it cannot carry out before anyone is asked to approve it: an
unknown case, or the case of a hold request. (The approved run: test_request_approval.py.)"""

from __future__ import annotations

import pytest

from pipeline.cli import main as cli
from tests.helpers import load_dag


def _xcom_text(run_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.run_id == run_id).all()
        return " ".join(str(row.value) for row in rows)


def _states(run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id).all()
        return {ti.task_id: str(ti.state) for ti in tis}


@pytest.mark.airflow
def test_an_unknown_case_or_another_kinds_case_fails_before_approval(
    airflow_db: None, local_env: dict[str, str]
) -> None:
    assert cli(["request", "create", "--type", "hold", "--case", "HOLD-3", "--reason", "order",
                "--requested-by", "a.khan", "--identifier", "+923001234567"]) == 0  # fmt: skip
    for case in ("NO-SUCH", "HOLD-3"):
        run = load_dag("cdr_le_export").test(run_conf={"case": case})
        assert run.state == "failed"
        states = _states(run.run_id)
        assert states["describe_request"] == "failed"
        assert states["approve"] == states["export_package"] == "upstream_failed"
