"""Law-enforcement export: the records of named end users over a period, as a verifiable package
encrypted for the requesting authority.

The request is checked whole first (`pipeline.flows.export_request`); a refused request reads no data
and is written to the audit log. Then, month by month over the period:
- a live month: only that month's silver partitions are read, and of each row group first the
  token and time columns; full rows are read only where a requested token occurs (origin or
  destination). Both parties of a found record are re-identified through the month's vault;
- a month whose identifiers were purged: reported with its purge date and the number of gold
  records in the period that can no longer be attributed; copies kept under a legal hold are
  searched in the hold store.

The package (`exports/<case>/package-<time>.cdrx`) holds the records as CSV (`EXPORT_COLUMNS`)
and Parquet (every retained field, for the proofs), a manifest (request, query, counts per
month, purged periods, file digests, the sources' signed seal entries and each record's Merkle
path to its original seal, software version) and a detached Ed25519 signature over the manifest,
all encrypted for the authority's key (`pipeline.proof.package`). Only the package is written, built in
memory: nothing identifying touches a disk unencrypted.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import logging
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import polars as pl

from pipeline import __version__
from pipeline.core import layout
from pipeline.core.keys import TOKEN_KEY_VERSION
from pipeline.core.resources import Resources
from pipeline.flows.export_request import LAW_ENFORCEMENT, ExportRequest, RequestError, validate
from pipeline.proof import audit
from pipeline.proof.integrity import key_id
from pipeline.proof.package import encrypt_for, fingerprint, load_recipient_key
from pipeline.records.search import (
    Proofs,
    RecordSearch,
    check_identities,
    found_records,
    months_between,
    prove,
    record_proofs,
)
from pipeline.records.search import SearchError as ExportError
from pipeline.records.tokenise import token

log = logging.getLogger("pipeline.flows.export")

FORMAT = "cdr-export/1"

#: The records' columns (CSV), after the EU retained-data categories: source, destination,
#: date/time/duration, type, and network/country of each party. ETSI TS 102 657 calls the
#: parties the originating and terminating party; `source_*` and `destination_*` are those.
EXPORT_COLUMNS: dict[str, str] = {
    "record_id": "the platform's record ID",
    "communication_type": "sms, mms, voice, email, whatsapp, viber, rcs, telegram, other",
    "direction": "outbound (from the platform's customer), inbound, or other (neither)",
    "start_time_utc": "date and time the communication started (UTC, ISO 8601)",
    "end_time_utc": "date and time it ended (UTC), where known",
    "duration_s": "duration in seconds (voice), where known",
    "source_identifier": "originating party: E.164 number, e-mail address, SIP user or sender",
    "source_kind": "msisdn, email, sip, alphanumeric (sender name) or shortcode",
    "source_country": "originating party's country (ISO 3166-1), from the number",
    "source_network": "originating party's network, where known",
    "destination_identifier": "terminating party, as for the source",
    "destination_kind": "as for the source",
    "destination_country": "terminating party's country (ISO 3166-1)",
    "destination_network": "terminating party's network, where known",
    "status": "delivery or call status",
    "route_id": "route the platform used",
    "customer_id": "the platform's business customer that sent or received it",
    "matched": "which party is a requested identifier: source, destination or both",
    "found_in": "silver (live records) or hold:<case> (kept under a legal hold)",
    "source_file": "file the record came from",
    "source_sha256": "SHA-256 of that file as sealed on arrival",
    "leaf_index": "the record's position in its file's sealed Merkle tree",
}
#: The normal-course changes between a record and its original (Pakistan's "original form").
NORMAL_COURSE = (
    "numbers normalised to E.164 and e-mail addresses to lower case; end users' identifiers "
    "tokenised in storage and re-identified for this package; identifiers deleted at the end of "
    "their retention. Every other field is as sealed, which the proofs show."
)


@dataclass
class ExportResult:
    case: str
    package: str
    package_sha256: str
    records: int
    months: dict[str, dict[str, Any]] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """What the audit log and task output show: counts and the package, never records."""
        return asdict(self)


def refuse(res: Resources, request: ExportRequest, problems: list[str]) -> NoReturn:
    """Record a refused request in the audit log (fields, never identifiers) and raise it.

    Every refusal is recorded, including one whose request or key file could not be read."""
    audit.refused(res, "export_refused", "law-enforcement request", request.public(), problems)
    raise RequestError(problems)


def run_export(
    res: Resources, request: ExportRequest, now: dt.datetime | None = None
) -> ExportResult:
    """Check the request, search, build and store the package, and audit it: the approver is
    the person acting (the export happens on their approval)."""
    with audit.acting_as(request.approved_by):
        return _run_export(res, request, now or dt.datetime.now(dt.UTC))


def _run_export(res: Resources, request: ExportRequest, now: dt.datetime) -> ExportResult:
    signer = res.keyring.signing_key()
    try:
        identifiers = validate(request, now.date(), res.settings.default_region)
    except RequestError as exc:
        refuse(res, request, exc.problems)
    assert request.date_from and request.date_to
    key = res.keyring.token_key(TOKEN_KEY_VERSION)
    wanted = {token(kind, value, key, TOKEN_KEY_VERSION) for kind, value in identifiers}
    start = dt.datetime.combine(request.date_from, dt.time(), dt.UTC)
    end = dt.datetime.combine(request.date_to + dt.timedelta(days=1), dt.time(), dt.UTC)
    restricted = frozenset(layout.listed_tokens(res.store, "restricted"))
    order = request.purpose == LAW_ENFORCEMENT
    search = RecordSearch(
        res,
        wanted,
        start,
        end,
        request.channels,
        suppressed=frozenset(layout.listed_tokens(res.store, "suppressed")),
        excluded=frozenset() if order else restricted,
    )
    frames, months = [], {}
    period = list(months_between(request.date_from, request.date_to))
    known = Proofs()  # the found records' proofs, made while the search goes on
    with ThreadPoolExecutor(1, thread_name_prefix="proofs") as early:
        proving: list[Future[Proofs]] = []

        def found(rows: pl.DataFrame) -> None:  # one thread proves, so `known` grows in turn
            proving.append(early.submit(prove, res.store, rows, known))

        for (y, m), (rows, info) in zip(period, search.months(period, found), strict=True):
            months[f"{y:04d}-{m:02d}"] = info
            if len(rows):
                frames.append(rows)
        for future in proving:
            future.result()  # raises a proving error here
    # Records of persons who restricted processing reach only a law-enforcement order.
    restricted_included = sum(_touching(f, restricted) for f in frames) if order else 0
    records = found_records(frames, wanted)
    checked = check_identities(res, records)
    manifest = _manifest(
        res, request, identifiers, records, months, checked, start, end, now, known
    )
    blob = _package(res, request, records, manifest)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    target = layout.export_key(request.case, stamp)
    digest = hashlib.sha256(blob).hexdigest()
    if not res.store.put_new(target, blob):
        raise ExportError(f"{target} exists already: not overwritten")
    recipient = fingerprint(load_recipient_key(request.recipient_key))
    info = {
        "case": request.case,
        "created_at": now.isoformat(),
        "package": target,
        "package_sha256": digest,
        "size": len(blob),
        "recipient_key": recipient,
        "records": len(records),
        "format": FORMAT,
    }
    res.store.put_new(f"{target}.json", json.dumps(info, indent=1).encode())
    result = ExportResult(request.case, target, digest, len(records), months)
    audit.append(
        res.store,
        signer,
        "export",
        what={
            **request.public(),
            **result.public(),
            "recipient_key": recipient,
            "restricted_included": restricted_included,
        },
        why=f"disclosure for {request.purpose.replace('_', ' ')} under {request.legal_basis}",
        event=f"export:{target}",
    )
    log.info("export %s: %d records in %s", request.case, len(records), target)
    return result


def _touching(frame: pl.DataFrame, tokens: frozenset[str]) -> int:
    """How many records have a party among `tokens`."""
    if not tokens:
        return 0
    hit = pl.col("origin").is_in(list(tokens)) | pl.col("destination").is_in(list(tokens))
    return int(frame.select(hit.fill_null(False).sum()).item())


def _manifest(
    res: Resources,
    request: ExportRequest,
    identifiers: list[tuple[str, str]],
    records: pl.DataFrame,
    months: dict[str, dict[str, Any]],
    identity: dict[str, int],
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    known: Proofs,
) -> dict[str, Any]:
    proofs, sources = record_proofs(res.store, records, known)
    return {
        "format": FORMAT,
        "created_at": now.isoformat(),
        "request": {
            **request.public(),
            "identifiers": [{"kind": k, "value": v} for k, v in identifiers],
        },
        "query": {
            "match": "a requested identifier is the source or the destination",
            "period_utc": [start.isoformat(), end.isoformat()],
            "end_exclusive": True,
            "channels": request.channels or "all",
            "token_key_version": TOKEN_KEY_VERSION,
            "months": list(months),
        },
        "counts": {"records": len(records), "by_month": months},
        "purged_periods": [
            {"month": name, **{k: v for k, v in info.items() if k != "identifiers"}}
            for name, info in months.items()
            if info["identifiers"] == "purged"
        ],
        "columns": EXPORT_COLUMNS,
        "normal_course_changes": NORMAL_COURSE,
        "identity_check": {
            **identity,
            "how": "each record's identity commitment recomputed from its re-identified "
            "parties under its file's key, by the operator before signing",
        },
        "seal_key_id": key_id(res.keyring.public_key()),
        "sources": sources,
        "proofs": proofs,
        "software": {"name": "cdr-pipeline", "version": __version__},
    }


def csv_frame(records: pl.DataFrame) -> pl.DataFrame:
    """The records in the documented column set (`EXPORT_COLUMNS`)."""
    iso = "%Y-%m-%dT%H:%M:%S%.6fZ"
    return records.select(
        "record_id",
        pl.col("channel").alias("communication_type"),
        "direction",
        pl.col("event_time").dt.strftime(iso).alias("start_time_utc"),
        pl.col("end_time").dt.strftime(iso).alias("end_time_utc"),
        "duration_s",
        pl.col("origin_identifier").alias("source_identifier"),
        pl.col("origin_kind").alias("source_kind"),
        pl.col("origin_country").alias("source_country"),
        pl.col("origin_network").alias("source_network"),
        "destination_identifier",
        "destination_kind",
        "destination_country",
        "destination_network",
        "status",
        "route_id",
        "customer_id",
        "matched",
        "found_in",
        "source_file",
        "source_sha256",
        "leaf_index",
    )


def _package(
    res: Resources, request: ExportRequest, records: pl.DataFrame, manifest: dict[str, Any]
) -> bytes:
    """The files, signed and encrypted for the recipient, built in memory."""
    csv = csv_frame(records).write_csv().encode()
    buf = io.BytesIO()
    records.write_parquet(buf)
    files = {"records.csv": csv, "records.parquet": buf.getvalue()}
    manifest["files"] = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()
    }
    # Compact: the manifest holds every source's signed entries, and JSON's fast encoder
    # writes no indentation (a verifier parses it; `jq` shows it indented).
    body = json.dumps(manifest, sort_keys=True, default=str, separators=(",", ":")).encode()
    files["manifest.json"] = body
    files["manifest.json.sig"] = base64.b64encode(res.keyring.signing_key().sign(body)) + b"\n"
    tar = io.BytesIO()
    mtime = int(dt.datetime.fromisoformat(manifest["created_at"]).timestamp())
    with tarfile.open(fileobj=tar, mode="w") as archive:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mtime, entry.mode = len(data), mtime, 0o600
            archive.addfile(entry, io.BytesIO(data))
    return encrypt_for(load_recipient_key(request.recipient_key), tar.getvalue())
