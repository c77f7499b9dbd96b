"""Airflow DAG `cdr_legal_hold`: wiring only; the work is in `pipeline.flows.case_request`."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cdr_airflow.approvals import approval_step
from cdr_airflow.dag_defaults import dag_args
from pipeline.core.layout import CASE_PATTERN

DOC = """
### cdr_legal_hold — place or release a legal hold, approved by a second person

Manual. A hold keeps records past their retention date for a case (litigation, an authority's
order, an investigation) and only as long as the obligation lasts. To place one, a compliance
officer first records it with `python -m pipeline request create --type hold ...`: the reason,
what it covers (identifiers, stored only as tokens; a customer; a period; together they must all
match) and `until` (the date it ends by itself). The request is stored encrypted in
`requests/<case>/`; the form here takes **only** the action (place or release) and the case.

1. `describe_request` shows the request, or for a release the hold (counts, never identifiers).
2. `approve` waits (up to 7 days) for an **eligible approver** to Approve or Reject under
   *Required Actions*: one of the users in `CDR_APPROVERS`, never the user who triggered the
   run or the officer who recorded the request (they get no working Approve button; the
   check after the answer refuses and audits such an approval all the same).
   The approval is not retried.
3. `apply_hold` places or releases the hold (`holds/<case>/hold.json`); a rejection fails it,
   and the run, as **REJECTED** (audited).

The next `cdr_retention` run copies covered records to `holds/<case>/` under the hold's own key
before purging a month, and purges a released or expired hold. The approval (both user names),
placing and releasing are recorded in the audit log (counts, never identifiers).
"""


@dag(
    dag_id="cdr_legal_hold",
    schedule=None,
    doc_md=DOC,
    **dag_args(one_run_at_a_time=False, tags=["retention", "legal-hold"], retries=1),
    params={
        "action": Param("place", type="string", enum=["place", "release"]),
        "case": Param("", type="string", pattern=CASE_PATTERN,
                      description="Case reference (of a recorded hold request, to place one)"),
    },
)  # fmt: skip
def cdr_legal_hold() -> None:
    @task
    def describe_request(params=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.approvals import describe_request

        return describe_request(str(params["case"]), "hold", str(params["action"]))

    @task
    def apply_hold(decision: dict, params=None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.approvals import carry_out_approved

        case, action = str(params["case"]), str(params["action"])
        return carry_out_approved(case, "hold", decision, dag_run, action)

    approve = approval_step("a legal hold ({{ params.action }})")
    describe_request() >> approve
    apply_hold(approve.output)


cdr_legal_hold()
