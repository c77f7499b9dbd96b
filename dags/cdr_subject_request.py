"""Airflow DAG `cdr_subject_request`: wiring only; the work is in `pipeline.flows.subject`."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cdr_airflow.dag_defaults import dag_args
from pipeline.core.layout import CASE_PATTERN

DOC = """
### cdr_subject_request — answer a data subject request

Manual, run by the data protection officer once a request has been recorded with
`python -m pipeline subject-request create ...`. The form takes **only the case reference**: the
person's identifiers stay inside the encrypted request (`requests/<case>/request.enc`), never in
the run's parameters, XCom or logs.

- **access**: the person's records over the retained period, found through their tokens, as an
  encrypted package `requests/<case>/package-<time>.cdrs` (to the passphrase given to the person,
  or their public key); another end user is shown only by country, network or domain.
- **erasure**: refused with the rule, its legal basis and the automatic deletion date where the
  retention policy keeps identifiers (`[subject_rights]`); otherwise the person's vault entries
  are deleted in every live month, their tokens suppressed against later exports and ingests,
  and no entry left is verified. Records under a legal hold are kept and reported.
- **restriction**: the person's records leave every export but a law-enforcement order.

**Writes** `requests/<case>/response.json` and `response.txt`, and one audit entry (case,
type, counts, outcome; never an identifier). The task is not retried (a retry would build a
second package): rerun it once the cause is fixed.
"""


@dag(
    dag_id="cdr_subject_request",
    schedule=None,
    doc_md=DOC,
    **dag_args(one_run_at_a_time=False, tags=["privacy", "subject-request"], retries=0),
    params={
        "case": Param("", type="string", pattern=CASE_PATTERN,
                      description="Case reference of a recorded subject request"),
    },
)  # fmt: skip
def cdr_subject_request() -> None:
    @task(retries=0)
    def answer_request(params=None, logical_date=None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from airflow.sdk.exceptions import AirflowFailException

        from cdr_airflow.dag_defaults import run_day
        from cdr_airflow.settings import task_resources
        from pipeline.flows.subject import (
            SubjectError,
            SubjectRequestError,
            SubjectRun,
            run_subject_request,
        )

        as_of = run_day(logical_date, dag_run)
        try:
            answer = run_subject_request(task_resources(), SubjectRun(str(params["case"]), as_of))
        except (SubjectError, SubjectRequestError) as exc:  # retrying cannot help
            raise AirflowFailException(str(exc)) from None
        return {"case": answer.case, "type": answer.type, "outcome": answer.outcome}

    answer_request()


cdr_subject_request()
