"""Airflow DAG `cdr_le_export`: wiring only; the work is in `pipeline.flows.case_request`."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cdr_airflow.approvals import approval_step
from cdr_airflow.dag_defaults import dag_args
from pipeline.core.layout import CASE_PATTERN

DOC = """
### cdr_le_export — law-enforcement disclosure package, approved by a second person

Manual. A compliance officer first records the request (identifiers, period, legal basis,
authority, the authority's public key, channels, region) with
`python -m pipeline request create --type export ...`: it is checked whole and stored encrypted
in `requests/<case>/`. The form here takes **only the case reference**: no identifier ever
reaches the run's parameters, XCom, logs or the approval.

1. `describe_request` shows the request (counts, never identifiers); an unknown case fails.
2. `approve` waits (up to 7 days) for an **eligible approver** to Approve or Reject under
   *Required Actions*: one of the users in `CDR_APPROVERS`, never the user who triggered the
   run or the officer who recorded the request (they get no working Approve button; the
   check after the answer refuses and audits such an approval all the same).
3. `export_package` builds `exports/<case>/package-<time>.cdrx` (encrypted for the authority)
   and its `.json` description. The audit log records the approval with both user names, then
   the case, requester, approver, counts and package digest. A rejection fails it, and the
   run, as **REJECTED** (audited): a rejected disclosure never looks like a delivered one.

The approval and the export are not retried (a retry would ask again, or build a second
package): rerun once the cause (for instance the store being unreachable) is fixed. The
authority checks the package with
`python -m pipeline verify-export PACKAGE --private-key … --seal-public-key …`.
"""


@dag(
    dag_id="cdr_le_export",
    schedule=None,
    doc_md=DOC,
    **dag_args(one_run_at_a_time=False, tags=["law-enforcement", "export"], retries=0),
    params={
        "case": Param("", type="string", pattern=CASE_PATTERN,
                      description="Case reference of a recorded export request"),
    },
)  # fmt: skip
def cdr_le_export() -> None:
    @task(retries=1)
    def describe_request(params=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.approvals import describe_request

        return describe_request(str(params["case"]), "export")

    @task(retries=0)
    def export_package(decision: dict, params=None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        from cdr_airflow.approvals import carry_out_approved

        return carry_out_approved(str(params["case"]), "export", decision, dag_run)

    approve = approval_step("a law-enforcement disclosure")
    describe_request() >> approve
    export_package(approve.output)


cdr_le_export()
