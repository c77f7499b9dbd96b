"""Running a DAG that waits on a human-in-the-loop approval under `dag.test()`, and reading
back what Airflow's metadata database keeps of a run.

Under Airflow 3.3, `HITLOperator` parks its task in `awaiting_input` and `dag.test()` keeps the
run alive until a response arrives from outside (the Required Actions UI, or the HITL REST API
of an api-server sharing the metadata database). A thread plays that second user: it waits for
the task to park, then calls the very function behind `PATCH .../hitlDetails`
(`update_hitl_detail`) with an Airflow user of the given name, which records the response and
resumes the task as the API server would. The run's triggering user is `dag_test` (what
`dag.test()` records), so an approval by `dag_test` is the same person approving.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

TRIGGERED_BY = "dag_test"  # `dag.test()` records this as the run's triggering user


#: the users the tests name as approvers (`CDR_APPROVERS`): the triggering user among them, so
#: that the step's own exclusion of it is what is tested
APPROVERS = "b.ali,c.shah,dag_test"


def _answer(
    dag_id: str,
    answers: list[tuple[str, str]],
    done: threading.Event,
    errors: list,  # type: ignore[type-arg]
    refused: list[str],
) -> None:
    """Answer the parked approval step as each (user, option) in turn: a user the API refuses
    (403: not one of the step's respondents) is recorded in `refused`, and the next one tries."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from fastapi import HTTPException

    deadline = time.monotonic() + 90
    pending = list(answers)
    while pending and not done.is_set() and time.monotonic() < deadline:
        user, option = pending[0]
        try:
            with create_session() as session:
                ti = (
                    session.query(TaskInstance)
                    .filter_by(dag_id=dag_id, task_id="approve")
                    .filter(TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
                    .first()
                )
                asked = ti is not None and session.get(HITLDetail, ti.id) is not None
                if asked:
                    update_hitl_detail(
                        dag_id=dag_id,
                        dag_run_id=ti.run_id,
                        task_id="approve",
                        update_hitl_detail_payload=UpdateHITLDetailPayload(
                            chosen_options=[option], params_input={}
                        ),
                        user=SimpleAuthManagerUser(username=user, role="admin"),
                        session=session,
                        map_index=-1,
                    )
                    return
        except HTTPException as exc:
            if exc.status_code != 403:
                raise
            refused.append(user)
            pending.pop(0)
            continue
        except Exception as exc:  # a locked database: try again
            errors.append(exc)
        time.sleep(0.3)
    if not done.is_set():  # never answered: fail the step, or dag.test() would wait forever
        with create_session() as session:
            session.query(TaskInstance).filter_by(dag_id=dag_id, task_id="approve").filter(
                TaskInstance.state == TaskInstanceState.AWAITING_INPUT
            ).update({"state": TaskInstanceState.FAILED}, synchronize_session=False)
        errors.append(TimeoutError("the approval step was never answered"))


def run_answered(
    dag_id: str,
    conf: dict[str, Any],
    user: str,
    option: str = "Approve",
    refused_first: tuple[str, ...] = (),
) -> Any:
    """`dag.test(run_conf=conf)` while `user` answers the approval step with `option`, after
    each of `refused_first` tried to and was refused by the API (asserted)."""
    from tests.helpers import load_dag

    done, errors, refused = threading.Event(), [], []  # type: ignore[var-annotated]
    answers = [*((u, "Approve") for u in refused_first), (user, option)]
    thread = threading.Thread(target=_answer, args=(dag_id, answers, done, errors, refused))
    given = os.environ.get("CDR_APPROVERS")  # a test's own list, else the usual one
    os.environ["CDR_APPROVERS"] = given or APPROVERS
    thread.start()
    try:
        run = load_dag(dag_id).test(run_conf=conf)
    finally:
        done.set()
        thread.join()
        if given is None:
            del os.environ["CDR_APPROVERS"]
    assert not any(isinstance(e, TimeoutError) for e in errors), errors
    assert refused == list(refused_first), refused
    return run


def run_rows(run_id: str) -> list[tuple[str, str]]:
    """(table, row as JSON) for every row of the metadata database that belongs to the run:
    every table with a `run_id` column (dag_run, XCom, task instances, rendered template fields,
    Airflow's own log...), and the human-in-the-loop details of its task instances."""
    from airflow import settings
    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(settings.engine)
    rows: list[tuple[str, str]] = []
    with settings.engine.connect() as conn:
        ti_ids = [r.id for r in conn.execute(select(meta.tables["task_instance"]).where(
            meta.tables["task_instance"].c.run_id == run_id))]  # fmt: skip
        for name, table in meta.tables.items():
            if "run_id" in table.c:
                query = select(table).where(table.c.run_id == run_id)
            elif name.startswith("hitl_detail") and "ti_id" in table.c:
                query = select(table).where(table.c.ti_id.in_(ti_ids))
            else:
                continue
            for row in conn.execute(query):
                rows.append((name, json.dumps(dict(row._mapping), default=_text)))
    return rows


def _text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def task_logs(dag_id: str, run_id: str) -> list[tuple[str, str]]:
    """The run's task log files, as the UI would show them."""
    import os
    from pathlib import Path

    root = Path(os.environ["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return [(str(p), p.read_text(errors="replace")) for p in root.rglob("*") if p.is_file()]
