"""Data subject requests: a person's own copy of their records, and erasure or restriction
answered by the policy (POLICY.md, "Data subject rights").

1. `create_subject_request` checks the request whole (refusals audited, before any data is
   read), computes the statutory deadline from the policy's per-country table, and stores the
   request encrypted under its own key (`requests/<case>/request.enc`; identifiers never leave
   it in clear) beside a `status.json` that holds no identifier.
2. `run_subject_request` answers it, finding the person's records through their tokens as the
   law-enforcement export does (`pipeline.records.search`):
   - access: a package of the person's records, in which another end user is shown only by
     country and network or e-mail domain (`pipeline.proof.access_package`), encrypted to a
     passphrase or a public key;
   - erasure: refused with the rule, its legal basis and the automatic deletion date where the
     policy keeps identifiers until the retention obligation ends; else the person's vault
     entries are deleted in every live month (held records excepted and reported), their
     tokens suppressed against later exports and ingests, and no entry left is verified;
   - restriction: the tokens listed so that only a law-enforcement order reaches the records.
   Each answer is `requests/<case>/response.json` and `response.txt`, and one audit entry with
   the case, type, counts and outcome.
3. `deadline_alert` names open requests whose deadline is near or past.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import phonenumbers
import polars as pl
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.core import layout
from pipeline.core.alerts import Alert
from pipeline.core.errors import PipelineError, RefusedError
from pipeline.core.keys import TOKEN_KEY_VERSION
from pipeline.core.resources import Resources
from pipeline.core.rights import CountryRights
from pipeline.flows.holds import list_holds
from pipeline.proof import audit
from pipeline.proof.access_package import FORMAT, MIN_PASSPHRASE, seal_for, signed_archive
from pipeline.proof.integrity import key_id
from pipeline.proof.package import RecipientKeyError, fingerprint, load_recipient_key
from pipeline.proof.sealed_request import open_request, request_exists, seal_request
from pipeline.records.letters import README, access_rows, csv_rows, response_text
from pipeline.records.lookup import IdentifierError, normalised_identifiers
from pipeline.records.search import (
    RecordSearch,
    check_identities,
    found_records,
    months_between,
    record_proofs,
)
from pipeline.records.tiers import VAULT_GROUP, part_writer
from pipeline.records.tokenise import token

log = logging.getLogger("pipeline.flows.subject")

TYPES = ("access", "erasure", "restriction")
TEXT_FIELDS = ("case", "type", "identity_verified_by", "requested_by")
WARN_DAYS = 7


class SubjectRequestError(RefusedError):
    """A subject request refused before any data is read; `problems` lists every reason."""

    refused = "subject request refused"


class SubjectError(PipelineError):
    """A request that cannot be answered as asked (named, never with identifier values)."""


def _date(value: object) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return dt.date.max  # refused as unreadable, without echoing the value


@dataclass
class SubjectRequest:
    """A person's request, as the officer records it (identifiers in any written form)."""

    case: str
    type: str
    identifiers: list[str]
    identity_verified_by: str  # a reference to how identity was checked, never the document
    received: dt.date | None
    requested_by: str  # the officer
    default_region: str | None = None
    country: str | None = None  # whose law applies; default: the first number's country
    date_from: dt.date | None = None  # access: the period asked (default: all retained)
    date_to: dt.date | None = None
    recipient_key: str = ""  # access: deliver to this public key ...
    passphrase: str = ""  # ... or to this passphrase (generated when neither is given)
    grounds: str = ""  # the person's stated grounds (restriction, erasure)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SubjectRequest:
        return cls(
            case=str(data.get("case") or "").strip(),
            type=str(data.get("type") or "").strip(),
            identifiers=[str(i) for i in data.get("identifiers") or [] if str(i).strip()],
            identity_verified_by=str(data.get("identity_verified_by") or "").strip(),
            received=_date(data.get("received")),
            requested_by=str(data.get("requested_by") or "").strip(),
            default_region=(str(data.get("default_region") or "").upper() or None),
            country=(str(data.get("country") or "").upper() or None),
            date_from=_date(data.get("date_from")),
            date_to=_date(data.get("date_to")),
            recipient_key=str(data.get("recipient_key") or ""),
            passphrase=str(data.get("passphrase") or ""),
            grounds=str(data.get("grounds") or "").strip(),
        )

    def to_mapping(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("received", "date_from", "date_to"):
            out[name] = out[name].isoformat() if out[name] else None
        return out

    def public(self) -> dict[str, Any]:
        """What the audit log and status may show: identifiers as a count, no passphrase."""
        return {
            "case": self.case,
            "type": self.type,
            "identifiers": len(self.identifiers),
            "identity_verified": bool(self.identity_verified_by),
            "received": self.received.isoformat() if self.received else None,
            "requested_by": self.requested_by,
            "country": self.country,
        }

    def validate(self, today: dt.date, default_region: str | None) -> list[tuple[str, str]]:
        """The identifiers as (kind, E.164 or address); every problem listed at once."""
        problems = [f"{name} is missing" for name in TEXT_FIELDS if not getattr(self, name)]
        if self.case and not re.match(layout.CASE_PATTERN, self.case):
            problems.append("case must be letters, digits, '.', '_' or '-' (at most 64)")
        if self.type and self.type not in TYPES:
            problems.append(f"type must be one of {list(TYPES)}")
        problems += _date_problems(self, today)
        region = self.default_region or default_region
        identifiers: list[tuple[str, str]] = []
        if not self.identifiers:
            problems.append("identifiers are missing")
        for i, raw in enumerate(self.identifiers, 1):
            try:
                identifiers += normalised_identifiers([raw], region)
            except IdentifierError as exc:
                problems.append(str(exc).replace("identifier #1", f"identifier #{i}"))
        if self.country and not re.fullmatch(r"[A-Z]{2}", self.country):
            problems.append("country must be an ISO 3166 code such as PK")
        elif not problems and not (self.country or _country_of(identifiers) or region):
            problems.append("country is missing (no phone number or default region gives it)")
        if self.type == "access":
            problems += _delivery_problems(self)
        if problems:
            raise SubjectRequestError(problems)
        return sorted(set(identifiers))


def _date_problems(request: SubjectRequest, today: dt.date) -> list[str]:
    problems = []
    if request.received is None:
        problems.append("received is missing")
    elif request.received == dt.date.max:
        problems.append("received is not a date (YYYY-MM-DD)")
    elif request.received > today:
        problems.append(f"received is in the future (after {today.isoformat()}, UTC)")
    for name in ("date_from", "date_to"):
        if getattr(request, name) == dt.date.max:
            problems.append(f"{name} is not a date (YYYY-MM-DD)")
    start, end = request.date_from, request.date_to
    if start and end and dt.date.max not in (start, end) and start > end:
        problems.append("the period is reversed: date_from is after date_to")
    return problems


def _delivery_problems(request: SubjectRequest) -> list[str]:
    if request.recipient_key and request.passphrase:
        return ["give a recipient key or a passphrase, not both"]
    if request.recipient_key:
        try:
            load_recipient_key(request.recipient_key)
        except RecipientKeyError as exc:
            return [str(exc)]
    elif request.passphrase and len(request.passphrase) < MIN_PASSPHRASE:
        return [f"the passphrase must be at least {MIN_PASSPHRASE} characters"]
    return []


def _country_of(identifiers: list[tuple[str, str]]) -> str | None:
    for kind, value in identifiers:
        if kind == "msisdn":
            return phonenumbers.region_code_for_number(phonenumbers.parse(value)) or None
    return None


# --- the stored request ----------------------------------------------------------------------
def _save_request(res: Resources, request: SubjectRequest, ids: list[tuple[str, str]]) -> None:
    body = {"kind": "subject", "request": request.to_mapping(), "normalised": ids}
    if not seal_request(res, request.case, body):
        raise SubjectRequestError([f"case {request.case} exists already"])


def _load_request(res: Resources, case: str) -> tuple[SubjectRequest, list[tuple[str, str]]]:
    data = open_request(res, case)
    return SubjectRequest.from_mapping(data["request"]), [tuple(i) for i in data["normalised"]]  # type: ignore[misc]


def load_status(res: Resources, case: str) -> dict[str, Any]:
    key = layout.request_object_key(layout.case(case), "status.json")
    if not res.store.exists(key):
        raise SubjectError(f"no subject request {case}")
    status: dict[str, Any] = json.loads(res.store.get_bytes(key))
    return status


def _save_status(res: Resources, status: dict[str, Any]) -> None:
    res.store.put_bytes(
        layout.request_object_key(status["case"], "status.json"),
        json.dumps(status, indent=1).encode(),
    )


def _refused(res: Resources, request: SubjectRequest, problems: list[str]) -> None:
    audit.refused(
        res, "subject_request_refused", "data subject request", request.public(), problems
    )


def create_subject_request(
    res: Resources, request: SubjectRequest, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Check and store a request; its status (no identifier), with the deadline. A passphrase
    is generated for an access request that names no delivery: `status["passphrase"]` is shown
    once and stored only inside the encrypted request. Its audit entries name the officer who
    recorded it (`requested_by`) as the person acting."""
    with audit.acting_as(request.requested_by):
        return _create_subject_request(res, request, now or dt.datetime.now(dt.UTC))


def _create_subject_request(
    res: Resources, request: SubjectRequest, now: dt.datetime
) -> dict[str, Any]:
    try:
        ids = request.validate(now.date(), res.settings.default_region)
        if request_exists(res, request.case):  # a subject, export or hold request
            raise SubjectRequestError([f"case {request.case} exists already"])
    except SubjectRequestError as exc:
        _refused(res, request, exc.problems)
        raise
    assert request.received is not None
    request.country = (
        request.country
        or _country_of(ids)
        or (request.default_region or res.settings.default_region)
    )
    generated = ""
    if request.type == "access" and not (request.recipient_key or request.passphrase):
        request.passphrase = generated = secrets.token_urlsafe(18)
    rule = res.policy.rights.for_country(request.country)
    _save_request(res, request, ids)
    status = {
        **request.public(),
        "deadline": rule.deadline(request.received).isoformat(),
        "deadline_rule": f"{rule.deadline_text()} from receipt ({request.country or 'default'})",
        "state": "open",
        "created_at": now.isoformat(),
        "delivery": _delivery(request) if request.type == "access" else None,
    }
    _save_status(res, status)
    audit.append(
        res.store,
        res.keyring.signing_key(),
        "subject_request_created",
        what=status,
        why=f"data subject request ({request.type}) recorded, the person's identity checked",
        event=f"subject-request-created:{request.case}",
    )
    return {**status, "passphrase": generated} if generated else status


def _delivery(request: SubjectRequest) -> str:
    if request.recipient_key:
        return f"recipient key {fingerprint(load_recipient_key(request.recipient_key))[:16]}"
    return "passphrase (given to the person out of band)"


# --- answering -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubjectRun:
    """Answer the request of a case, as of a day (the DAG's logical date)."""

    case: str
    as_of: dt.date

    def validate(self) -> None:
        try:
            layout.case(self.case)
        except layout.LayoutError as exc:
            raise SubjectRequestError([str(exc)]) from None


@dataclass
class Answer:
    """What a request found, did or refused, and why: the response, without identifiers."""

    case: str
    type: str
    outcome: str  # delivered | erased | refused | restricted | nothing_found
    received: str
    deadline: str
    answered_on: str
    country: str | None
    found: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Job:
    """Everything a request handler needs, in one value: the three handlers (access, erasure,
    restriction) take the same inputs, so they share one signature instead of seven arguments."""

    res: Resources
    request: SubjectRequest
    person: dict[str, str]  # token -> identifier
    as_of: dt.date
    now: dt.datetime
    answer: Answer  # filled in by the handler
    rule: CountryRights


def run_subject_request(res: Resources, run: SubjectRun, now: dt.datetime | None = None) -> Answer:
    """Answer the stored request of `run.case`; writes the response and one audit entry."""
    run.validate()
    now = now or dt.datetime.now(dt.UTC)
    status = load_status(res, run.case)
    request, ids = _load_request(res, run.case)
    key = res.keyring.token_key(TOKEN_KEY_VERSION)
    person = {token(kind, value, key, TOKEN_KEY_VERSION): value for kind, value in ids}
    answer = Answer(
        run.case,
        request.type,
        "",
        status["received"],
        status["deadline"],
        run.as_of.isoformat(),
        request.country,
    )
    rule = res.policy.rights.for_country(request.country)
    job = _Job(res, request, person, run.as_of, now, answer, rule)
    {"access": _access, "erasure": _erasure, "restriction": _restriction}[request.type](job)
    _respond(res, answer, status, now)
    return answer


def _respond(res: Resources, answer: Answer, status: dict[str, Any], now: dt.datetime) -> None:
    store = res.store
    store.put_bytes(
        layout.request_object_key(answer.case, "response.json"),
        json.dumps(answer.public(), indent=1, default=str).encode(),
    )
    store.put_bytes(
        layout.request_object_key(answer.case, "response.txt"), response_text(answer).encode()
    )
    status |= {"state": "answered", "outcome": answer.outcome, "answered_at": now.isoformat()}
    _save_status(res, status)
    counts = {k: v for k, v in {**answer.found, **answer.done}.items() if isinstance(v, int)}
    audit.append(
        store,
        res.keyring.signing_key(),
        "subject_request_answered",
        what={"case": answer.case, "type": answer.type, "outcome": answer.outcome, **counts},
        why=answer.refused.get("rule") or f"data subject request ({answer.type}) answered",
        event=f"subject-request-answered:{answer.case}:{now.isoformat()}",
    )
    log.info("subject request %s (%s): %s", answer.case, answer.type, answer.outcome)


def _live_months(res: Resources) -> list[layout.Month]:
    """Months whose identifiers are still kept (silver present, no purge marker)."""
    purged = layout.purged_months(res.store)
    months = {layout.month_of(o.key) for o in res.store.list(layout.SILVER)}
    return sorted(m for m in months if m and layout.month_name(m) not in purged)


def _searcher(
    res: Resources, wanted: set[str], start: dt.datetime, end: dt.datetime
) -> RecordSearch:
    """A search for the person's tokens in [start, end) that, like every subject search,
    leaves out tokens already erased (suppressed) by an earlier request."""
    return RecordSearch(
        res,
        wanted,
        start,
        end,
        [],
        suppressed=frozenset(layout.listed_tokens(res.store, "suppressed")),
    )


def _search(
    res: Resources,
    request: SubjectRequest,
    person: dict[str, str],
    as_of: dt.date,
) -> tuple[pl.DataFrame, dict[str, dict[str, Any]], dt.datetime, dt.datetime]:
    """The person's records (with `_own` holding their token) and what each month held."""
    purged = sorted(layout.parse_month(m) for m in layout.purged_months(res.store))
    known = _live_months(res) + purged
    first = dt.date(*min(known), 1) if known else as_of
    start_day = request.date_from or first
    end_day = request.date_to or as_of
    start = dt.datetime.combine(start_day, dt.time(), dt.UTC)
    end = dt.datetime.combine(end_day + dt.timedelta(days=1), dt.time(), dt.UTC)
    wanted = set(person)
    search = _searcher(res, wanted, start, end)
    frames, months = [], {}
    period = [ym for ym in months_between(start_day, end_day) if ym in known]
    for (y, m), (found, info) in zip(period, search.months(period), strict=True):
        months[layout.month_name((y, m))] = info
        if len(found):
            own = pl.when(pl.col("origin").is_in(list(wanted))).then("origin")
            frames.append(found.with_columns(own.otherwise("destination").alias("_own")))
    return found_records(frames, wanted, keep=("_own",)), months, start, end


def _access(job: _Job) -> None:
    """Deliver the person's records as a sealed, proven package."""
    records, months, start, end = _search(job.res, job.request, job.person, job.as_of)
    identity = check_identities(job.res, records)
    rows = access_rows(records, job.person)
    purged = [
        {"month": name, "purged_on": info["purged_on"]}
        for name, info in months.items()
        if info["identifiers"] == "purged"
    ]
    proofs, sources = record_proofs(job.res.store, records)
    gold = records.drop(
        "origin_identifier", "destination_identifier", "found_in", "matched", "_own"
    )
    buf = io.BytesIO()
    gold.write_parquet(buf)
    by_month = {name: info["records"] for name, info in months.items()}
    files = {
        "records.json": json.dumps(
            {"format": FORMAT, "case": job.request.case, "records": rows}, indent=1, default=str
        ).encode(),
        "records.csv": csv_rows(rows).encode(),
        "records.parquet": buf.getvalue(),
        "README.txt": README.format(
            **_readme_facts(job.res, job.request, rows, purged, start, end)
        ).encode(),
    }
    manifest = {
        "format": FORMAT,
        "created_at": job.now.isoformat(),
        "case": job.request.case,
        "period_utc": [start.isoformat(), end.isoformat()],
        "counts": {"records": len(rows), "by_month": by_month},
        "purged_periods": purged,
        "identity_check": identity,
        "seal_key_id": key_id(job.res.keyring.public_key()),
        "sources": sources,
        "proofs": proofs,
        "software": {"name": "cdr-pipeline", "version": __version__},
    }
    archive = signed_archive(files, manifest, job.res.keyring.signing_key())
    blob = seal_for(archive, job.request.recipient_key, job.request.passphrase)
    target = layout.request_package_key(job.request.case, job.now.strftime("%Y%m%dT%H%M%S%fZ"))
    if not job.res.store.put_new(target, blob):
        raise SubjectError(f"{target} exists already: not overwritten")
    job.answer.outcome = "delivered"
    job.answer.found = {"records": len(rows), "months": len(months), "purged_months": len(purged)}
    job.answer.done = {
        "package": target,
        "package_sha256": hashlib.sha256(blob).hexdigest(),
        "delivery": _delivery(job.request),
        "purged_months": purged,
        "records_by_month": by_month,
    }


def _readme_facts(
    res: Resources,
    request: SubjectRequest,
    rows: list[dict[str, Any]],
    purged: list[dict[str, Any]],
    start: dt.datetime,
    end: dt.datetime,
) -> dict[str, Any]:
    policy = res.policy
    override = policy.overrides.get(request.country or "")
    months = override.identifier_months if override else policy.identifier_months
    listing = "\n".join(
        f"  - {p['month']}: identifiers deleted on {p['purged_on']}" for p in purged
    )
    return {
        "case": request.case,
        "count": len(rows),
        "start": start.date().isoformat(),
        "end": (end - dt.timedelta(days=1)).date().isoformat(),
        "identifier_months": months,
        "record_years": policy.record_years,
        "reason": override.reason if override else policy.reason,
        "purged": listing or "  (none: no month in this period was purged yet)",
    }


def _person_records(
    res: Resources, request: SubjectRequest, person: dict[str, str], as_of: dt.date
) -> pl.DataFrame:
    """The person's live records, tokens kept (silver), in every live month."""
    frames = []
    wanted = set(person)
    if not _live_months(res):
        return pl.DataFrame()
    start = dt.datetime.combine(dt.date(*_live_months(res)[0], 1), dt.time(), dt.UTC)
    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), dt.UTC)
    search = _searcher(res, wanted, start, end)
    for m in _live_months(res):
        frames.append(search.live_rows(*m))  # tokens only: no re-identification needed
    frames = [f for f in frames if len(f)]
    return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()


def _erasure(job: _Job) -> None:
    """Erase the person's identifiers where the law allows it, keeping held records."""
    records = _person_records(job.res, job.request, job.person, job.as_of)
    months = (
        sorted({(t.year, t.month) for t in records.get_column("event_time")})
        if len(records)
        else []
    )
    job.answer.found = {"records": len(records), "months": len(months)}
    dates = {
        layout.month_name(m): job.res.policy.identifier_purge(*m, job.request.country).isoformat()
        for m in months
    }
    if not months:
        job.answer.outcome = "nothing_found"
        job.answer.done = {"note": "no live record holds these identifiers; nothing to erase"}
        return
    if not job.rule.erasure_before_retention_ends:
        job.answer.outcome = "refused"
        last = max(dates.values())
        job.answer.refused = {
            "rule": "identifiers of traffic data are not erased before the retention obligation "
            "ends; they are deleted automatically when it does",
            "legal_basis": job.rule.legal_basis,
            "automatic_deletion": last,
            "automatic_deletion_by_month": dates,
        }
        return
    held = _held(job.res, records, job.as_of)
    suppression = {
        "case": job.request.case,
        "tokens": sorted(job.person),
        "at": job.now.isoformat(),
        "legal_basis": job.rule.legal_basis,
    }
    # Suppress first: an ingest running meanwhile cannot re-create what is deleted next.
    job.res.store.put_bytes(
        layout.token_list_key("suppressed", job.request.case), json.dumps(suppression).encode()
    )
    deleted = _delete_vault_entries(job.res, job.request.case, set(job.person), held)
    left = _vault_entries(job.res, set(job.person), held)
    if left:
        raise SubjectError(f"erasure incomplete: {left} vault entries left outside legal holds")
    job.answer.outcome = "erased"
    job.answer.done = {
        "vault_entries_deleted": deleted,
        "vault_entries_left": left,
        "verified": True,
        "held_records": int(held.height) if len(held) else 0,
        "months": sorted(dates),
        "note": "records stay in the tiers without a way to re-identify them; later exports and "
        "ingests never re-create or show these identifiers",
    }


def _held(res: Resources, records: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """(month, file) of the person's records under an active legal hold: kept, not erased."""
    active = [h for h in list_holds(res.store) if h.active(as_of)]
    if not active or not len(records):
        return pl.DataFrame(schema={"_m": pl.String, "source_sha256": pl.String})
    hit = pl.any_horizontal(h.matches() for h in active)
    month = pl.col("event_time").dt.strftime("%Y-%m").alias("_m")
    return records.filter(hit).select(month, "source_sha256")


def _vault_parts(res: Resources, held: pl.DataFrame) -> list[str]:
    """Every live vault part, except those holding a held record's entries."""
    keep = set(held.unique().iter_rows()) if len(held) else set()
    parts = []
    for obj in res.store.list(layout.VAULT):
        m = layout.month_of(obj.key)
        sha = obj.key.rsplit("part-", 1)[-1].removesuffix(".parquet")
        if m and (layout.month_name(m), sha) not in keep:
            parts.append(obj.key)
    return parts


def _vault_entries(res: Resources, tokens: set[str], held: pl.DataFrame) -> int:
    total = 0
    for key in _vault_parts(res, held):
        with res.store.open_seekable(key) as src:
            column = pq.read_table(src, columns=["token"]).column("token").to_pylist()
        total += sum(1 for t in column if t in tokens)
    return total


def _delete_vault_entries(res: Resources, case: str, tokens: set[str], held: pl.DataFrame) -> int:
    """Rewrite each live vault part without the tokens' entries, every old version purged.

    The rewritten part is staged under the request first, so a crash between purging the old
    part and writing the new one is finished by the rerun, and no other entry is lost."""
    store = res.store
    for obj in list(store.list(layout.request_staging_prefix(case))):
        _replace(store, layout.staged_tier_key(obj.key), store.get_bytes(obj.key), obj.key)
    deleted = 0
    for key in _vault_parts(res, held):
        with store.open_seekable(key) as src:
            table = pq.read_table(src)
        mask = [t in tokens for t in table.column("token").to_pylist()]
        if not any(mask):
            continue
        kept = table.filter([not hit for hit in mask])
        buf = io.BytesIO()
        with part_writer(buf, kept.schema) as writer:  # still in token order: row groups prune
            writer.write_table(kept, row_group_size=VAULT_GROUP)
        staging = layout.request_staging_key(case, key)
        store.put_bytes(staging, buf.getvalue())
        _replace(store, key, buf.getvalue(), staging)
        deleted += sum(mask)
    return deleted


def _replace(store: Any, key: str, data: bytes, staging: str) -> None:
    store.purge(key)
    if pq.read_metadata(io.BytesIO(data)).num_rows:
        store.put_bytes(key, data)
    store.delete(staging)


def _restriction(job: _Job) -> None:
    """List the person's tokens as restricted: kept, but no longer processed."""
    records = _person_records(job.res, job.request, job.person, job.as_of)
    listed = {
        "case": job.request.case,
        "tokens": sorted(job.person),
        "at": job.now.isoformat(),
        "grounds": job.request.grounds or "not stated",
    }
    job.res.store.put_bytes(
        layout.token_list_key("restricted", job.request.case), json.dumps(listed).encode()
    )
    job.answer.outcome = "restricted"
    job.answer.found = {"records": len(records)}
    job.answer.done = {
        "restricted_records": len(records),
        "note": "these records are left out of every export except one made under a "
        "law-enforcement order, which records that it reached them",
    }


# --- listing and deadlines ------------------------------------------------------------------
def list_requests(res: Resources) -> list[dict[str, Any]]:
    return sorted(
        (
            json.loads(res.store.get_bytes(o.key))
            for o in res.store.list(layout.REQUESTS)
            if layout.is_request_status(o.key)
        ),
        key=lambda s: s["case"],
    )


def deadline_alert(res: Resources, today: dt.date, warn_days: int = WARN_DAYS) -> Alert | None:
    """An alert naming the open requests due within `warn_days` (or overdue); None if none."""
    due = [
        s
        for s in list_requests(res)
        if s["state"] == "open"
        and dt.date.fromisoformat(s["deadline"]) - today <= dt.timedelta(days=warn_days)
    ]
    if not due:
        return None
    parts = [
        f"{s['case']} ({s['type']}, due {s['deadline']}"
        + (", OVERDUE)" if dt.date.fromisoformat(s["deadline"]) < today else ")")
        for s in due
    ]
    return Alert(
        "data subject requests near their statutory deadline",
        "answer with `python -m pipeline subject-request run --case ...`: " + "; ".join(parts),
        facts={"cases": [s["case"] for s in due]},
    )
