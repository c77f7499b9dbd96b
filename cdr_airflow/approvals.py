"""Four eyes in Airflow: the human-in-the-loop step an export or hold request waits on, and the
two tasks around it (describe the request to the approver; carry it out once approved).

The form of `cdr_le_export` and `cdr_legal_hold` takes a case reference only; the request was
recorded, sealed, with `python -m pipeline request create`. The approver answers in the UI's
Required Actions (or the HITL REST API) as an Airflow user; `pipeline.flows.case_request`
refuses an approver who triggered the run or recorded the request, and audits both names.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator

APPROVE, REJECT = "Approve", "Reject"
#: How long a request waits for its approver before the run fails (nothing done).
RESPONSE_TIMEOUT = dt.timedelta(days=7)
DESCRIBE_TASK = "describe_request"

_BODY = """{{ ti.xcom_pull(task_ids='describe_request')['text'] }}

Approve only if you are not the person who recorded the request or triggered this run: such an
approval is refused and recorded in the audit log. **Reject** records the rejection and does
nothing.
"""


def approval_step(what: str) -> HITLOperator:
    """The step the run waits on: Approve or Reject, answered by a second Airflow user. Not
    `ApprovalOperator`: its Reject skips the next task silently, where a rejection is audited."""
    return HITLOperator(
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
    """Carry out the request with the approver's answer: a rejection skips (audited), an
    approval by the user who triggered the run fails (audited), else the export or hold."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

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
        raise AirflowSkipException(str(exc)) from None
    except (PipelineError, ValueError) as exc:  # a refused request: retrying cannot help
        raise AirflowFailException(str(exc)) from None
