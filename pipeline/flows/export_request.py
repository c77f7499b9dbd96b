"""A law-enforcement request, checked whole before any data is read.

A request names the case, the requesting authority and the legal basis, who asked and who
approved (two different people: four eyes), the end users' identifiers in any written form, the
period (UTC dates, inclusive), optional channels, and the authority's public key. `validate`
lists every problem at once; messages name fields and identifier positions, never values.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.core import layout
from pipeline.core.dates import parse_date
from pipeline.core.errors import RefusedError
from pipeline.proof.package import RecipientKeyError, load_recipient_key
from pipeline.records.lookup import IdentifierError, default_region, normalised_identifiers
from pipeline.records.schema import CHANNELS

TEXT_FIELDS = ("case", "authority", "legal_basis", "requested_by", "approved_by")
#: Why records are disclosed. Only a law-enforcement order reaches the records of persons who
#: restricted processing of their data (`pipeline.flows.subject`); every other purpose leaves them out.
LAW_ENFORCEMENT = "law_enforcement"
PURPOSES = (LAW_ENFORCEMENT, "fraud_investigation", "billing_dispute", "legal_claim")


class RequestError(RefusedError):
    """A request refused before any data is read; `problems` lists every reason."""


@dataclass
class ExportRequest:
    case: str
    authority: str
    legal_basis: str
    requested_by: str
    approved_by: str
    identifiers: list[str]
    date_from: dt.date | None
    date_to: dt.date | None
    recipient_key: str
    channels: list[str] = field(default_factory=list)
    default_region: str | None = None  # national-format numbers; None: CDR_DEFAULT_REGION
    purpose: str = LAW_ENFORCEMENT

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ExportRequest:
        """From a request file or the DAG's form; dates as YYYY-MM-DD text or dates."""
        return cls(
            case=str(data.get("case") or "").strip(),
            authority=str(data.get("authority") or "").strip(),
            legal_basis=str(data.get("legal_basis") or "").strip(),
            requested_by=str(data.get("requested_by") or "").strip(),
            approved_by=str(data.get("approved_by") or "").strip(),
            identifiers=[str(i) for i in data.get("identifiers") or [] if str(i).strip()],
            date_from=_date(data.get("date_from")),
            date_to=_date(data.get("date_to")),
            recipient_key=str(data.get("recipient_key") or ""),
            channels=[str(c) for c in data.get("channels") or []],
            default_region=str(data.get("default_region") or "").strip() or None,
            purpose=str(data.get("purpose") or LAW_ENFORCEMENT),
        )

    def to_mapping(self) -> dict[str, Any]:
        """The whole request as stored (sealed: it holds the identifiers), dates as text."""
        out = asdict(self)
        for name in ("date_from", "date_to"):
            out[name] = out[name].isoformat() if out[name] else None
        return out

    def public(self) -> dict[str, Any]:
        """What the audit log and task output may show: the identifiers as a count."""
        return {
            "case": self.case,
            "authority": self.authority,
            "legal_basis": self.legal_basis,
            "requested_by": self.requested_by,
            "approved_by": self.approved_by,
            "identifiers": len(self.identifiers),
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
            "channels": self.channels,
            "default_region": self.default_region,
            "purpose": self.purpose,
        }


def _date(value: object) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        return parse_date(value)
    except ValueError:
        return dt.date.max  # refused below as unreadable, without echoing the value


#: Characters no person's name holds: control, format (invisible: zero-width spaces, marks),
#: line and paragraph separators, private use.
_HIDDEN = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}


def person(name: str) -> str:
    """The form two names are compared in: NFKC (a full-width `ｏ` is `o`), case-folded,
    format characters removed, surrounding spaces stripped."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf").strip()


def _hidden(name: str) -> bool:
    return any(unicodedata.category(ch) in _HIDDEN for ch in name)


def four_eyes_problems(
    first: str | None,
    second: str | None,
    names: tuple[str, str] = ("requested_by", "approved_by"),
) -> list[str]:
    """Why `second` (who approves) may not approve what `first` (who asked, or who started the
    run) asked: the same person, compared in `person`'s form; [] when they differ. Two names
    only: the CLI passes requester and approver, the DAGs the triggering and approving users."""
    if first and second and person(first) == person(second):
        return [f"{names[1]} must be a different person from {names[0]}"]
    return []


def validate(
    request: ExportRequest,
    today: dt.date,
    configured_region: str | None,
    *,
    approved: bool = True,
) -> list[tuple[str, str]]:
    """The identifiers as (kind, E.164 or address); RequestError lists every problem.

    National-format numbers are read in the request's region, else the deployment's
    (`configured_region`, from CDR_DEFAULT_REGION). `approved=False` checks a request recorded
    for approval later (by a second user in Airflow): `approved_by` is not asked for yet."""
    fields = TEXT_FIELDS if approved else tuple(f for f in TEXT_FIELDS if f != "approved_by")
    problems = [f"{name} is missing" for name in fields if not getattr(request, name)]
    try:
        region = default_region(request.default_region, configured_region)
    except IdentifierError as exc:
        problems.append(f"default_region: {exc}")
        region = None
    if request.case:
        try:
            layout.case(request.case)
        except layout.LayoutError as exc:
            problems.append(str(exc))
    for name in ("requested_by", "approved_by"):
        if _hidden(getattr(request, name)):
            problems.append(f"{name} holds control or invisible characters")
    problems += four_eyes_problems(request.requested_by, request.approved_by) if approved else []
    for name in ("date_from", "date_to"):
        value = getattr(request, name)
        if value is None:
            problems.append(f"{name} is missing")
        elif value == dt.date.max:
            problems.append(f"{name} is not a date (YYYY-MM-DD)")
    start, end = request.date_from, request.date_to
    if start and end and dt.date.max not in (start, end):
        if start > end:
            problems.append("the period is reversed: date_from is after date_to")
        if end > today:
            problems.append(f"the period ends in the future (after {today.isoformat()}, UTC)")
    if request.purpose not in PURPOSES:
        problems.append(f"unknown purpose: one of {list(PURPOSES)}")
    unknown = sorted(set(request.channels) - set(CHANNELS))
    if unknown:
        problems.append(f"unknown channels {unknown}: one of {list(CHANNELS)}")
    identifiers: list[tuple[str, str]] = []
    if not request.identifiers:
        problems.append("identifiers are missing")
    else:
        for i, raw in enumerate(request.identifiers, 1):
            try:
                identifiers += normalised_identifiers([raw], region)
            except IdentifierError as exc:
                problems.append(str(exc).replace("identifier #1", f"identifier #{i}"))
    if not request.recipient_key:
        problems.append("recipient_key is missing")
    else:
        try:
            load_recipient_key(request.recipient_key)
        except RecipientKeyError as exc:
            problems.append(str(exc))
    if problems:
        raise RequestError(problems)
    return sorted(set(identifiers))
