"""Four eyes in Airflow: the human-in-the-loop step an export or hold request waits on, and the
two tasks around it (describe the request to the approver; carry it out once approved).

The form of `cdr_le_export` and `cdr_legal_hold` takes a case reference only; the request was
recorded, sealed, with `python -m pipeline request create`. Only the users `CDR_APPROVERS`
names can answer, less whoever triggered the run or recorded the request: they are the step's
respondents in the UI's Required Actions (and the HITL REST API refuses anyone else).
`pipeline.flows.case_request` checks the answer again, and audits both names.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator

APPROVE, REJECT = "Approve", "Reject"
#: How long a request waits for its approver before the run fails (nothing done).
RESPONSE_TIMEOUT = dt.timedelta(days=7)
DESCRIBE_TASK = "describe_request"

_BODY = """{{ ti.xcom_pull(task_ids='describe_request')['text'] }}

Only an approver who neither recorded the request nor triggered this run can answer.
**Reject** records the rejection, does nothing, and ends the run as failed (rejected).
"""


#: the Airflow users (their IDs as the auth manager gives them: the user name under the simple
#: auth manager) who may answer an approval, comma-separated
APPROVERS_VARIABLE = "CDR_APPROVERS"


def configured_approvers(environ: Mapping[str, str] | None = None) -> list[str]:
    """The users `CDR_APPROVERS` names, in order, each once."""
    text = (os.environ if environ is None else environ).get(APPROVERS_VARIABLE, "")
    return list(dict.fromkeys(u.strip() for u in text.split(",") if u.strip()))


def eligible_approvers(
    approvers: list[str], triggered_by: str | None, recorded_by: str | None
) -> list[str]:
    """The approvers who may answer this run: never the user who triggered it or the person
    who recorded the request (compared as `four_eyes_problems` compares them)."""
    from pipeline.flows.export_request import four_eyes_problems

    return [
        user
        for user in approvers
        if not four_eyes_problems(triggered_by, user) and not four_eyes_problems(recorded_by, user)
    ]


class ApprovalStep(HITLOperator):
    """Approve or Reject, answerable only by an eligible approver: the step lists them as its
    respondents (`assigned_users`), so the person who triggered the run or recorded the request
    gets no working Approve button, and the API refuses their answer (403). The check after the
    answer (`pipeline.flows.case_request.approval_problems`) stays as a second line."""

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        dag_run = context["dag_run"]
        triggered_by = getattr(dag_run, "triggering_user_name", None)
        described = context["ti"].xcom_pull(task_ids=DESCRIBE_TASK) or {}
        recorded_by = (described.get("summary") or {}).get("requested_by")
        approvers = configured_approvers()
        if not approvers:
            raise AirflowFailException(
                f"no approvers configured: set {APPROVERS_VARIABLE} to the Airflow users who may "
                "approve requests (not the officers who record them)"
            )
        eligible = eligible_approvers(approvers, triggered_by, recorded_by)
        if not eligible:
            raise AirflowFailException(
                f"no eligible approver: every user in {APPROVERS_VARIABLE} triggered this run or "
                "recorded the request; another person must approve it"
            )
        self.assigned_users = [{"id": user, "name": user} for user in eligible]
        self.log.info("Approvers who may answer: %s", ", ".join(eligible))
        return super().execute(context)


def approval_step(what: str) -> HITLOperator:
    """The step the run waits on: Approve or Reject, answered by an eligible second Airflow
    user. Not `ApprovalOperator`: its Reject skips the next task silently, where a rejection is
    audited and fails the run."""
    return ApprovalStep(
        task_id="approve",
        subject=f"Approve {what} for case {{{{ params.case }}}}?",
        body=_BODY,
        options=[APPROVE, REJECT],
        response_timeout=RESPONSE_TIMEOUT,
        retries=0,
    )


def describe_request(case: str, kind: str, action: str = "place") -> dict[str, Any]:
    """The request as the approver sees it (counts, never identifiers); fails the run for an
    unknown case or another kind's case, before anyone is asked."""
    from airflow.sdk.exceptions import AirflowFailException

    from cdr_airflow.settings import task_resources
    from pipeline.flows.case_request import CaseRequestError, describe

    try:
        return describe(task_resources(), case, kind, action)
    except CaseRequestError as exc:
        raise AirflowFailException(str(exc)) from None


def carry_out_approved(
    case: str, kind: str, decision: dict[str, Any], dag_run: Any, action: str = "place"
) -> dict[str, Any]:
    """Carry out the request with the approver's answer: a rejection fails the run (audited;
    the run list then tells it from a delivered package at a glance), so does an approval by
    the user who triggered the run (audited), else the export or hold."""
    from airflow.sdk.exceptions import AirflowFailException

    from cdr_airflow.settings import task_resources
    from pipeline.core.errors import PipelineError
    from pipeline.flows.case_request import Approval, RequestRejected, carry_out

    approval = Approval(
        case=case,
        kind=kind,
        approved=APPROVE in (decision.get("chosen_options") or []),
        approved_by=(decision.get("responded_by_user") or {}).get("name"),
        triggered_by=getattr(dag_run, "triggering_user_name", None),
        action=action,
    )
    try:
        return carry_out(task_resources(), approval)
    except RequestRejected as exc:
        raise AirflowFailException(f"REJECTED: {exc}; nothing was done") from None
    except (PipelineError, ValueError) as exc:  # a refused request: retrying cannot help
        raise AirflowFailException(str(exc)) from None
