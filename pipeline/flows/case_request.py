"""Export and hold requests by reference: recorded once, sealed, carried out after approval.

A compliance officer records a law-enforcement export request or a legal-hold request with
`python -m pipeline request create`. The request is checked whole (a refusal is audited), sealed
(`pipeline.proof.sealed_request`: identifiers, customer and key encrypted under the request's
own key in `requests/<case>/request.enc`) and described without identifiers in `summary.json`.
Airflow's forms then take the case alone.

Nothing is disclosed or held before a second person approves: `carry_out` takes the approver's
answer and refuses an approving user who is the user who started the run or the officer who
recorded the request (four eyes, compared as `export_request.person` compares names). The
approval is audited with both user names; a refusal or a rejection too, and nothing is done.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.core import layout
from pipeline.core.errors import PipelineError, RefusedError
from pipeline.core.resources import Resources
from pipeline.flows.export_request import (
    ExportRequest,
    RequestError,
    four_eyes_problems,
    validate,
)
from pipeline.flows.holds import HoldError, HoldRequest, check, load, run_hold
from pipeline.proof import audit
from pipeline.proof.package import fingerprint, load_recipient_key
from pipeline.proof.sealed_request import open_request, request_exists, seal_request
from pipeline.records.lookup import IdentifierError

KINDS = ("export", "hold")
TRIGGERED, APPROVING = "the user who triggered the run", "the approving user"
RECORDED = "the officer who recorded the request"


class CaseRequestError(RefusedError):
    """A request refused (when recorded, or at approval); `problems` lists every reason."""


class RequestRejected(PipelineError):
    """The approver rejected the request: nothing was disclosed or held."""


@dataclass(frozen=True)
class Approval:
    """A second person's answer on a request, as Airflow's human-in-the-loop step gives it."""

    case: str
    kind: str  # export | hold
    approved: bool
    approved_by: str | None  # the user who answered
    triggered_by: str | None  # the user who started the run
    action: str = "place"  # holds: place | release

    def public(self) -> dict[str, Any]:
        """The answer as audited: a hold's action only where there is one (a hold's)."""
        shown = asdict(self)
        if self.kind != "hold":
            del shown["action"]
        return shown


# --- recording -------------------------------------------------------------------------------
def _export(res: Resources, fields: dict[str, Any], now: dt.datetime) -> tuple[dict, dict]:
    request = ExportRequest.from_mapping({**fields, "approved_by": ""})
    try:
        validate(request, now.date(), res.settings.default_region, approved=False)
    except RequestError as exc:
        raise CaseRequestError(exc.problems) from None
    public = {k: v for k, v in request.public().items() if k != "approved_by"}
    public["recipient_key"] = fingerprint(load_recipient_key(request.recipient_key))[:16]
    return request.to_mapping(), public


def _hold(res: Resources, fields: dict[str, Any], now: dt.datetime) -> tuple[dict, dict]:
    requested_by = str(fields.get("requested_by") or "").strip()
    problems = [] if requested_by else ["requested_by is missing"]
    try:
        request = HoldRequest.from_mapping({**fields, "action": "place"})
        request.validate(now.date())
        check(request.hold(res, now, requested_by))
    except (HoldError, IdentifierError) as exc:
        raise CaseRequestError([*problems, str(exc)]) from None
    if problems:
        raise CaseRequestError(problems)
    public = {
        "case": request.case,
        "reason": request.reason,
        "requested_by": requested_by,
        "identifiers": len(request.identifiers),
        "customer": request.customer is not None,
        "date_from": request.date_from,
        "date_to": request.date_to,
        "until": request.until,
        "default_region": request.default_region,
    }
    return {**request.to_mapping(), "requested_by": requested_by}, public


def _shown(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """What a refusal may record of fields as given: never an identifier or customer."""
    return {
        "kind": kind,
        "case": str(fields.get("case") or ""),
        "requested_by": str(fields.get("requested_by") or ""),
        "identifiers": len(fields.get("identifiers") or []),
    }


def create_request(
    res: Resources, kind: str, fields: dict[str, Any], now: dt.datetime | None = None
) -> dict[str, Any]:
    """Check, seal and describe an export or hold request; its summary (no identifier). Its
    audit entries name the officer who recorded it (`requested_by`) as the person acting."""
    with audit.acting_as(str(fields.get("requested_by") or "")):
        return _create_request(res, kind, fields, now or dt.datetime.now(dt.UTC))


def _create_request(
    res: Resources, kind: str, fields: dict[str, Any], now: dt.datetime
) -> dict[str, Any]:
    try:
        if kind not in KINDS:
            raise CaseRequestError([f"unknown request type {kind!r}: one of {list(KINDS)}"])
        body, summary = (_export if kind == "export" else _hold)(res, fields, now)
        if request_exists(res, summary["case"]):
            raise CaseRequestError([f"case {summary['case']} exists already"])
    except CaseRequestError as exc:
        audit.refused(res, "request_refused", f"{kind} request", _shown(kind, fields), exc.problems)
        raise
    case = summary["case"]
    if not seal_request(res, case, {"kind": kind, "request": body}):
        raise CaseRequestError([f"case {case} exists already"])
    summary = {"kind": kind, **summary, "created_at": now.isoformat()}
    res.store.put_new(layout.request_object_key(case, "summary.json"), json.dumps(summary).encode())
    audit.append(
        res.store,
        res.keyring.signing_key(),
        "request_created",
        what=summary,
        why=f"{kind} request recorded, to be carried out once a second person approves",
        event=f"request-created:{case}",
    )
    return summary


def load_summary(res: Resources, case: str) -> dict[str, Any]:
    key = layout.request_object_key(layout.case(case), "summary.json")
    if not res.store.exists(key):
        raise CaseRequestError([f"no export or hold request recorded for case {case}"])
    summary: dict[str, Any] = json.loads(res.store.get_bytes(key))
    return summary


def list_requests(res: Resources) -> list[dict[str, Any]]:
    """Every export and hold request's summary, by case."""
    found = (
        json.loads(res.store.get_bytes(o.key))
        for o in res.store.list(layout.REQUESTS)
        if layout.is_request_summary(o.key)
    )
    return sorted(found, key=lambda s: s["case"])


# --- approving and carrying out --------------------------------------------------------------
def describe(res: Resources, case: str, kind: str, action: str = "place") -> dict[str, Any]:
    """What the approver is shown: the request's summary (a hold's, for a release), and the
    same as Markdown; never an identifier. Refuses an unknown case or another kind's case."""
    try:
        layout.case(case)
    except layout.LayoutError as exc:
        raise CaseRequestError([str(exc)]) from None
    if kind == "hold" and action == "release":
        hold = load(res.store, case)
        if hold is None:
            raise CaseRequestError([f"no hold for case {case}"])
        shown = {k: v for k, v in hold.public().items() if k != "tokens"}
        summary = {"kind": "hold", "action": "release", **shown, "identifiers": hold.identifiers()}
    else:
        summary = load_summary(res, case)
        if summary["kind"] != kind:
            raise CaseRequestError([f"case {case} is a {summary['kind']} request, not {kind}"])
    lines = [f"- **{name}**: {value}" for name, value in summary.items() if value not in (None, [])]
    return {"summary": summary, "text": "\n".join(lines)}


def approval_problems(approval: Approval, recorded_by: str | None) -> list[str]:
    """Why this approval does not count: an unknown user, or the approver being the person who
    started the run or who recorded the request. [] when four eyes saw it."""
    problems = []
    if not approval.approved_by:
        problems.append("no approving user answered")
    if not approval.triggered_by:
        problems.append(f"{TRIGGERED} is unknown")
    problems += four_eyes_problems(
        approval.triggered_by, approval.approved_by, (TRIGGERED, APPROVING)
    )
    problems += four_eyes_problems(recorded_by, approval.approved_by, (RECORDED, APPROVING))
    return problems


def carry_out(res: Resources, approval: Approval, now: dt.datetime | None = None) -> dict[str, Any]:
    """Export or place/release a hold for `approval.case` once approved by a second person;
    the result as may be shown (counts, never identifiers). Audits the approval, refusal or
    rejection with both user names."""
    with audit.acting_as(approval.approved_by):  # the approver acts: the entries name them
        return _carry_out(res, approval, now or dt.datetime.now(dt.UTC))


def _carry_out(res: Resources, approval: Approval, now: dt.datetime) -> dict[str, Any]:
    summary = describe(res, approval.case, approval.kind, approval.action)["summary"]
    signer = res.keyring.signing_key()
    what = {**approval.public(), "requested_by": summary.get("requested_by")}
    if not approval.approved:
        audit.append(
            res.store, signer, "request_rejected", what=what, why="the approver rejected it"
        )
        raise RequestRejected(f"{approval.kind} request {approval.case} rejected by the approver")
    problems = approval_problems(approval, summary.get("requested_by"))
    if problems:
        audit.refused(res, "approval_refused", f"{approval.kind} approval", what, problems)
        raise CaseRequestError(problems)
    audit.append(res.store, signer, "request_approved", what=what, why="four eyes: approved")
    if approval.kind == "export":
        from pipeline.flows.export import run_export

        stored = open_request(res, approval.case)["request"]
        request = ExportRequest.from_mapping({**stored, "approved_by": approval.approved_by})
        return run_export(res, request, now).public()
    if approval.action == "release":
        reason = f"released, approved by {approval.approved_by}"
        return run_hold(res, HoldRequest("release", approval.case, reason), now)
    stored = open_request(res, approval.case)["request"]
    return run_hold(res, HoldRequest.from_mapping({**stored, "action": "place"}), now)
